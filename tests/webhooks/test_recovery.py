"""Webhook tries lost with their worker, on real Redis, real RQ workers and a real receiver.

A worker killed between a try's claim and its conclusion leaves the try taken: a second run of
the job steps aside. Such a try, once its lease has run out, is counted as failed and tried
again by the workers' maintenance, or dead-lettered past the retry schedule. A try still under
its lease, a queued one and a concluded one are left alone.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace

import pytest
import redis
from rq import Queue

from bridge.webhooks.jobs import QUEUE_NAME, job_id_for
from bridge.webhooks.log import LOST_REASON, Claimed, DeliveryLog, DeliveryStatus, Keys
from bridge.webhooks.recovery import SWEEP_LOCK, recover_lost_tries
from bridge.webhooks.settings import WebhookSettings
from tests.webhooks.harness import (
    attempts,
    configure,
    new_secret,
    publish,
    record,
    run_deliveries,
)
from tests.webhooks.receiver import WebhookReceiver
from workers.rq_worker import BridgeWorker


def settings() -> WebhookSettings:
    return WebhookSettings.from_env(os.environ)


def lost_try(client: redis.Redis, receiver: WebhookReceiver, mp: pytest.MonkeyPatch) -> str:
    """A delivery whose try was claimed by a run that then died: its lease (1 ms) is over."""
    endpoints = configure(
        mp, {"id": "ops", "url": receiver.url(), "secrets": [new_secret()], "allow_private": True}
    )
    _, [delivery_id] = publish(client, endpoints)
    client.delete(f"rq:queue:{QUEUE_NAME}")  # the job of that run is gone with it
    claim = DeliveryLog(client, 3600).claim(delivery_id, int(time.time() * 1000), lease_ms=1)
    assert isinstance(claim, Claimed)
    time.sleep(0.01)
    return delivery_id


def test_a_lost_try_is_tried_again_and_delivered(
    redis_client: redis.Redis, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    delivery_id = lost_try(redis_client, receiver, monkeypatch)
    run_deliveries(redis_client)  # a second run of the first try steps aside: nothing is sent
    assert receiver.received == []

    assert recover_lost_tries(redis_client, settings(), every_s=0) == [delivery_id]

    again = record(redis_client, delivery_id)
    assert (again.status, again.reason, again.try_no) == ("failed", LOST_REASON, 2)
    assert Queue(QUEUE_NAME, connection=redis_client).job_ids == [job_id_for(delivery_id, 2)]
    run_deliveries(redis_client)
    assert len(receiver.received) == 1
    done = record(redis_client, delivery_id)
    assert done.status == "succeeded" and done.attempt_count == 2
    [lost, sent] = attempts(redis_client, delivery_id)
    assert lost["try"] == 1 and lost["error"].startswith("worker_lost")
    assert sent["try"] == 2 and sent["status_code"] == 200


def test_the_workers_maintenance_runs_the_sweep(
    redis_client: redis.Redis, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    delivery_id = lost_try(redis_client, receiver, monkeypatch)
    worker = BridgeWorker([QUEUE_NAME, "send"], connection=redis_client)

    worker.run_maintenance_tasks()

    assert record(redis_client, delivery_id).reason == LOST_REASON
    assert redis_client.exists(SWEEP_LOCK)  # the other workers' maintenance leaves it be
    run_deliveries(redis_client)
    assert len(receiver.received) == 1


def test_tries_in_flight_queued_or_concluded_are_left_alone(
    redis_client: redis.Redis, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoints = configure(
        monkeypatch,
        {"id": "ops", "url": receiver.url(), "secrets": [new_secret()], "allow_private": True},
    )
    log = DeliveryLog(redis_client, 3600)
    now = int(time.time() * 1000)
    _, [in_flight] = publish(redis_client, endpoints)
    assert isinstance(log.claim(in_flight, now, lease_ms=60_000), Claimed)
    _, [queued] = publish(redis_client, endpoints)
    _, [done] = publish(redis_client, endpoints)
    redis_client.delete(f"rq:queue:{QUEUE_NAME}")
    claim = log.claim(done, now, lease_ms=1)
    assert isinstance(claim, Claimed)
    assert log.conclude(claim.record, replace(claim.record, status=DeliveryStatus.SUCCEEDED), None)
    before = {d: redis_client.hgetall(Keys.delivery(d)) for d in (in_flight, queued, done)}

    assert recover_lost_tries(redis_client, settings(), now_ms=now + 1000, every_s=0) == []
    assert {d: redis_client.hgetall(Keys.delivery(d)) for d in before} == before


def test_a_try_lost_past_the_schedule_is_dead(
    redis_client: redis.Redis, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_WEBHOOK_SCHEDULE_S", "1")  # one retry, then dead
    delivery_id = lost_try(redis_client, receiver, monkeypatch)
    redis_client.hset(Keys.delivery(delivery_id), "round_failures", 1)

    assert recover_lost_tries(redis_client, settings(), every_s=0) == [delivery_id]

    dead = record(redis_client, delivery_id)
    assert (dead.status, dead.reason) == ("dead", LOST_REASON)
    assert redis_client.zscore(Keys.dead, delivery_id) is not None
    assert Queue(QUEUE_NAME, connection=redis_client).count == 0


def test_one_sweep_per_interval_across_workers(redis_client: redis.Redis) -> None:
    assert recover_lost_tries(redis_client, settings(), every_s=30) == []
    assert 0 < redis_client.ttl(SWEEP_LOCK) <= 30
    assert not redis_client.set(SWEEP_LOCK, b"1", nx=True)  # a second worker finds it taken
