"""Deliveries staged together share RQ jobs: one job per batch of first tries to an endpoint.

On real Redis, real RQ workers (in-process and a killed worker process) and real receivers:
every staged delivery ends delivered once, in staging order per endpoint, whatever the batch
size; a batch out of time or on a stopping worker hands the rest back, each as a job of its
own; a worker killed half-way leaves every try either queued or claimed under a lease the
recovery sweep takes back. The claim of a batch follows the same rules as a claim of one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rq import Queue

from bridge.webhooks.delivery import Deliverer
from bridge.webhooks.endpoints import WebhookEndpoint
from bridge.webhooks.jobs import BATCH_FUNC, JOB_FUNC, QUEUE_NAME, job_id_for
from bridge.webhooks.log import (
    Claimed,
    DeliveryLog,
    DeliveryStatus,
    Keys,
    NotDue,
    Skipped,
)
from bridge.webhooks.outbox import Outbox, new_event
from bridge.webhooks.recovery import recover_lost_tries
from bridge.webhooks.settings import WebhookSettings
from tests.fault.conftest import kill9
from tests.webhooks.harness import attempts, configure, new_secret, record, run_deliveries
from tests.webhooks.receiver import Reply, WebhookReceiver


def stage(
    client: redis.Redis, endpoints: list[WebhookEndpoint], count: int, tag: str = "m"
) -> tuple[list[str], list[str]]:
    """``count`` events staged in one transaction; (delivery ids, job ids)."""
    env = WebhookSettings.from_env(os.environ)
    now = datetime.now(UTC)
    with client.pipeline() as pipe:
        pipe.multi()
        with Outbox(pipe, endpoints, env) as outbox:
            ids = []
            for n in range(count):
                ids += outbox.stage(new_event("message.received", {"text": f"{tag}{n}"}, now))
            jobs = outbox.flush()
        pipe.execute()
    return ids, jobs


def texts(receiver: WebhookReceiver) -> list[str]:
    return [json.loads(r.body)["data"]["text"] for r in receiver.received]


def endpoint(receiver: WebhookReceiver, name: str) -> dict[str, Any]:
    return {"id": name, "url": receiver.url(), "secrets": [new_secret()], "allow_private": True}


@pytest.mark.parametrize(("count", "size"), [(1, 10), (7, 3), (25, 10), (12, 1)])
def test_a_staging_makes_a_job_per_batch_and_every_delivery_arrives_once_in_order(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch, count: int, size: int
) -> None:
    monkeypatch.setenv("BRIDGE_WEBHOOK_BATCH_SIZE", str(size))
    with WebhookReceiver(keep_alive=True) as ops, WebhookReceiver(keep_alive=True) as chat:
        endpoints = configure(monkeypatch, endpoint(ops, "ops"), endpoint(chat, "chat"))
        ids, jobs = stage(redis_client, endpoints, count)

        per_endpoint = -(-count // size)
        assert len(jobs) == len(set(jobs)) == 2 * per_endpoint
        queue = Queue(QUEUE_NAME, connection=redis_client)
        chunks = [min(size, count - start) for start in range(0, count, size)]
        funcs = [job.func_name for job in queue.get_jobs()]
        assert funcs.count(BATCH_FUNC) == 2 * sum(1 for c in chunks if c > 1)
        assert funcs.count(JOB_FUNC) == 2 * chunks.count(1)
        run_deliveries(redis_client)

        wanted = [f"m{n}" for n in range(count)]
        assert texts(ops) == wanted and texts(chat) == wanted
        for delivery_id in ids:
            done = record(redis_client, delivery_id)
            assert (done.status, done.attempt_count, done.try_no) == ("succeeded", 1, 1)
        assert queue.count == 0 and queue.failed_job_registry.count == 0


def test_a_stopping_worker_hands_the_rest_of_its_batch_back(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    with WebhookReceiver() as ops:
        endpoints = configure(monkeypatch, endpoint(ops, "ops"))
        ids, [_] = stage(redis_client, endpoints, 5)
        redis_client.delete(f"rq:queue:{QUEUE_NAME}")  # this test runs the batch itself
        stop = threading.Event()
        ops.script(Reply(delay_s=0.3))  # the first POST is held while the worker is told to stop

        def sigterm_during_the_first_post() -> None:
            ops.wait_for(1)
            stop.set()  # as SIGTERM would

        signal = threading.Thread(target=sigterm_during_the_first_post)
        signal.start()
        deliverer = Deliverer(
            redis_client, WebhookSettings.from_env(os.environ), endpoints, stop=stop
        )
        reports = deliverer.deliver_many(ids)
        signal.join()

        assert [r.action for r in reports] == ["succeeded"] + ["handed_back"] * 4
        assert texts(ops) == ["m0"]
        for delivery_id in ids[1:]:
            back = record(redis_client, delivery_id)
            assert (back.status, back.started, back.try_no, back.lease_until_ms) == (
                "pending",
                0,
                1,
                0,
            )
        queue = Queue(QUEUE_NAME, connection=redis_client)
        assert queue.job_ids == [job_id_for(i, 1) for i in ids[1:]]
        assert [job.func_name for job in queue.get_jobs()] == [JOB_FUNC] * 4

        run_deliveries(redis_client)
        assert texts(ops) == [f"m{n}" for n in range(5)]
        assert all(record(redis_client, i).attempt_count == 1 for i in ids)


def test_a_batch_out_of_time_hands_back_what_it_has_not_started(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 0.5 s timeout gives a batch 0.5 s to start deliveries; each takes 0.2 s here.
    monkeypatch.setenv("BRIDGE_WEBHOOK_TIMEOUT_S", "0.5")
    with WebhookReceiver(default=Reply(200, delay_s=0.2)) as ops:
        endpoints = configure(monkeypatch, endpoint(ops, "ops"))
        ids, _ = stage(redis_client, endpoints, 8)
        redis_client.delete(f"rq:queue:{QUEUE_NAME}")
        env = WebhookSettings.from_env(os.environ)
        assert env.batch_budget_s == 0.5

        reports = Deliverer(redis_client, env, endpoints).deliver_many(ids)

        actions = [r.action for r in reports]
        done = actions.count("succeeded")
        assert 1 <= done <= 4 and actions == ["succeeded"] * done + ["handed_back"] * (8 - done)
        assert Queue(QUEUE_NAME, connection=redis_client).count == 8 - done
        run_deliveries(redis_client)
        assert texts(ops) == [f"m{n}" for n in range(8)]


def test_a_worker_killed_mid_batch_loses_nothing(
    redis_url: str,
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    with WebhookReceiver(default=Reply(200, delay_s=60)) as ops:
        endpoints = configure(monkeypatch, endpoint(ops, "ops"))
        ids, [_] = stage(redis_client, endpoints, 5)
        env = {
            **os.environ,
            "BRIDGE_REDIS_URL": redis_url,
            "BRIDGE_UCWA_DISCOVERY_URL": "https://lyncdiscover.contoso.example",
            "BRIDGE_UCWA_USERNAME": "sip:bot@contoso.example",
            "BRIDGE_UCWA_PASSWORD": "not-used-by-this-test",
        }
        with open(tmp_path / "worker.log", "wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "bridge.cli", "worker"], env=env, stdout=log, stderr=log
            )
        try:
            ops.wait_for(1, timeout_s=30)  # the first POST is out and held
        finally:
            kill9(worker)
        ops.default = Reply(200)
        settings_ = WebhookSettings.from_env(os.environ)
        for delivery_id in ids:  # every try of the batch was claimed at its start
            claimed = record(redis_client, delivery_id)
            assert (claimed.status, claimed.started) == ("pending", 1)

            assert claimed.lease_until_ms > time.time() * 1000 + 30_000
            # The lease runs out (the job's time limit, 45 s here): as if that time had passed.
            redis_client.hset(Keys.delivery(delivery_id), "lease_until_ms", 1)
        moved = recover_lost_tries(redis_client, settings_, every_s=0)
        assert sorted(moved) == sorted(ids)
        run_deliveries(redis_client)

        # The held one reached the receiver and comes again (delivery is at least once); the
        # others come once. The sweep queues its tries in no particular order.
        got = texts(ops)
        assert got[0] == "m0" and sorted(got[1:]) == [f"m{n}" for n in range(5)]
        for delivery_id in ids:
            done = record(redis_client, delivery_id)
            assert (done.status, done.try_no, done.attempt_count) == ("succeeded", 2, 2)
            lost, sent = attempts(redis_client, delivery_id)
            assert lost["error"].startswith("worker_lost") and sent["status_code"] == 200


# -- the claim of a batch --------------------------------------------------------------------

STATES = ("missing", "due", "not_due", "taken", "failed_due", "succeeded", "dead")


def _put(client: redis.Redis, delivery_id: str, state: str, now_ms: int) -> None:
    if state == "missing":
        return
    status = {"failed_due": "failed", "succeeded": "succeeded", "dead": "dead"}.get(
        state, "pending"
    )
    fields = {
        "id": delivery_id,
        "event_id": "evt_" + delivery_id,
        "event_type": "message.received",
        "endpoint_id": "ops",
        "status": status,
        "created_ms": now_ms - 5000,
        "updated_ms": now_ms - 5000,
        "try_no": 2 if state == "failed_due" else 1,
        "started": 1 if state in ("taken", "failed_due") else 0,
        "next_attempt_ms": now_ms + 60_000 if state == "not_due" else now_ms - 1000,
        "lease_until_ms": 0,
        "round_failures": 0,
        "attempt_count": 0,
        "reason": "",
    }
    client.hset(Keys.delivery(delivery_id), mapping=fields)  # type: ignore[arg-type]
    client.zadd(Keys.by_status(DeliveryStatus(status)), {delivery_id: now_ms - 5000})


def expected(states: list[str], picks: list[int]) -> list[str]:
    """The rules of a claim, applied one by one: the first of a repeated due id takes it."""
    taken: set[int] = set()
    verdicts = []
    for pick in picks:
        state = states[pick]
        if state == "missing":
            verdicts.append("missing")
        elif state in ("succeeded", "dead"):
            verdicts.append(f"already {state}")
        elif state == "taken" or pick in taken:
            verdicts.append("try already taken")
        elif state == "not_due":
            verdicts.append("not_due")
        else:
            taken.add(pick)
            verdicts.append("claimed")
    return verdicts


def verdict(claim: Claimed | NotDue | Skipped) -> str:
    if isinstance(claim, Claimed):
        return "claimed"
    return "not_due" if isinstance(claim, NotDue) else claim.reason


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    states=st.lists(st.sampled_from(STATES), min_size=1, max_size=6),
    data=st.data(),
)
def test_a_batch_claim_follows_the_rules_of_a_single_claim(
    redis_client: redis.Redis, states: list[str], data: st.DataObject
) -> None:
    redis_client.flushdb()
    picks = data.draw(st.lists(st.integers(0, len(states) - 1), min_size=1, max_size=8))
    now_ms = int(time.time() * 1000)
    ids = [f"dlv_{n}" for n in range(len(states))]
    for delivery_id, state in zip(ids, states, strict=True):
        _put(redis_client, delivery_id, state, now_ms)
    log = DeliveryLog(redis_client, 3600)

    claims = log.claim_many([ids[p] for p in picks], now_ms, lease_ms=30_000)

    assert [verdict(c) for c in claims] == expected(states, picks)
    for pick in set(picks):
        after = log.get(ids[pick])
        if expected(states, [pick]) == ["claimed"]:
            assert after is not None and after.status is DeliveryStatus.PENDING
            assert after.started == after.try_no and after.lease_until_ms == now_ms + 30_000
            assert redis_client.zscore(Keys.by_status(DeliveryStatus.PENDING), ids[pick])
            assert redis_client.zscore(Keys.by_status(DeliveryStatus.FAILED), ids[pick]) is None


def test_a_hand_back_leaves_tries_another_run_has_taken(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoints = [WebhookEndpoint("ops", "https://ops.example/hook", [new_secret()])]
    ids, _ = stage(redis_client, endpoints, 3)
    redis_client.delete(f"rq:queue:{QUEUE_NAME}")
    log = DeliveryLog(redis_client, 3600)
    now = int(time.time() * 1000)
    claims = log.claim_many(ids, now, lease_ms=60_000)
    records = [c.record for c in claims if isinstance(c, Claimed)]
    # Meanwhile the second one's try was concluded (by a second run of the job, say).
    done = replace(records[1], status=DeliveryStatus.SUCCEEDED, next_attempt_ms=None)
    assert log.conclude(records[1], done, None)

    def enqueue(pipe: redis.client.Pipeline, delivery_id: str, try_no: int) -> None:
        pipe.rpush("handed", f"{delivery_id}:{try_no}")

    given_back = log.hand_back(records, now + 5, enqueue)

    assert given_back == [ids[0], ids[2]]
    assert redis_client.lrange("handed", 0, -1) == [f"{ids[0]}:1".encode(), f"{ids[2]}:1".encode()]
    assert [record(redis_client, i).started for i in ids] == [0, 1, 0]
    assert record(redis_client, ids[1]).status == "succeeded"


# -- tries whose job ended without taking them ---------------------------------------------------


@pytest.mark.parametrize("count", [1, 5])
def test_tries_whose_job_failed_before_taking_them_are_queued_again_by_the_sweep(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    with WebhookReceiver() as ops:
        endpoints = configure(monkeypatch, endpoint(ops, "ops"))
        ids, [job] = stage(redis_client, endpoints, count)
        # The worker cannot read its settings: the job fails before it takes any try.
        monkeypatch.setenv("BRIDGE_WEBHOOK_TIMEOUT_S", "-1")
        run_deliveries(redis_client)
        queue = Queue(QUEUE_NAME, connection=redis_client)
        assert queue.failed_job_registry.get_job_ids() == [job]
        assert all(record(redis_client, i).queued() for i in ids)
        monkeypatch.setenv("BRIDGE_WEBHOOK_TIMEOUT_S", "5")
        settings_ = WebhookSettings.from_env(os.environ)
        now = int(time.time() * 1000)

        # Within a job's time of being due, a try is left to its job.
        assert recover_lost_tries(redis_client, settings_, now_ms=now, every_s=0) == []
        later = now + settings_.job_timeout_s * 1000 + 1000
        moved = recover_lost_tries(redis_client, settings_, now_ms=later, every_s=0)

        assert sorted(moved) == sorted(ids)  # in the order of the pending index
        assert queue.job_ids == [job_id_for(i, 1) for i in moved]
        # A job of one try is queued again under its id; a batch stays failed for an operator.
        assert queue.failed_job_registry.get_job_ids() == ([] if count == 1 else [job])
        run_deliveries(redis_client)
        assert sorted(texts(ops)) == [f"m{n}" for n in range(count)]
        for delivery_id in ids:
            done = record(redis_client, delivery_id)
            assert (done.status, done.try_no, done.attempt_count) == ("succeeded", 1, 1)


def test_overdue_tries_whose_job_still_waits_or_runs_are_left_to_it(
    redis_client: redis.Redis,
) -> None:
    endpoints = [WebhookEndpoint("ops", "https://ops.example/hook", [new_secret()])]
    waiting, _ = stage(redis_client, endpoints, 3, tag="w")
    running, [job] = stage(redis_client, endpoints, 1, tag="r")
    redis_client.hset(f"rq:job:{job}", "status", "started")  # a worker has it, not yet claimed
    settings_ = WebhookSettings.from_env(os.environ)
    far = int(time.time() * 1000) + 10 * settings_.job_timeout_s * 1000
    before = {i: redis_client.hgetall(Keys.delivery(i)) for i in waiting + running}

    assert recover_lost_tries(redis_client, settings_, now_ms=far, every_s=0) == []
    assert {i: redis_client.hgetall(Keys.delivery(i)) for i in before} == before
