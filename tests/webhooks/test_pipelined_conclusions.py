"""A delivery's conclusion is written before the next delivery's POST goes out, and its answer
read after: Redis runs it while the POST is out. Neither a held nor a lost answer loses or
double-counts an outcome. Real Redis behind real TCP proxies, a real receiver."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from bench._tcp_relay import Relay
from bridge.webhooks.delivery import AttemptOutcome, Deliverer
from bridge.webhooks.log import DeliveryLog
from bridge.webhooks.settings import WebhookSettings
from tests.redis_cutting_proxy import CuttingProxy
from tests.webhooks.harness import attempts, configure, record
from tests.webhooks.receiver import Reply, WebhookReceiver
from tests.webhooks.test_batches import endpoint, stage, texts

HOLD_S = 3.0
ANSWER_DELAY_S = 0.2


class AnswerHolder(Relay):
    """Relays everything, but holds Redis's answers to a conclusion script until ``release``
    (or ``HOLD_S``): a client that waits for such an answer before going on waits that long."""

    def __init__(self, upstream_port: int, sha: str) -> None:
        self.sha = sha.encode()
        self.released = threading.Event()
        self.conclusions: list[float] = []  # when each conclusion script reached the proxy
        super().__init__("127.0.0.1", upstream_port)

    def _opened(self, client: socket.socket, upstream: socket.socket) -> dict[str, int]:
        return {"held": 0}

    def _requests(self, client: socket.socket, upstream: socket.socket, state: Any) -> None:
        while data := client.recv(65536):
            if self.sha in data:
                with self._lock:
                    self.conclusions.append(time.time())
                    state["held"] += 1
            upstream.sendall(data)

    def _replies(self, upstream: socket.socket, client: socket.socket, state: Any) -> None:
        while data := upstream.recv(65536):
            if state["held"]:
                self.released.wait(HOLD_S)
                state["held"] = 0
            client.sendall(data)


@pytest.fixture()
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(keep_alive=True) as server:
        yield server


def db_of(client: redis.Redis) -> int:
    return int(client.connection_pool.connection_kwargs.get("db", 0))


def through(proxy: Relay, client: redis.Redis) -> redis.Redis:
    return redis.Redis.from_url(proxy.url(db_of(client)))


def upstream_port(client: redis.Redis) -> int:
    return int(client.connection_pool.connection_kwargs["port"])


def conclusion_sha(client: redis.Redis) -> str:
    """The conclusion script's SHA, the script loaded (as after the first conclusion)."""
    script = DeliveryLog(client, 60)._conclude_script
    client.script_load(script.script)
    return str(script.sha)


def test_the_next_post_goes_out_with_the_conclusion_applied_and_its_answer_on_its_way(
    redis_client: redis.Redis, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoints = configure(monkeypatch, endpoint(receiver, "ops"))
    ids, _ = stage(redis_client, endpoints, 3)
    receiver.script(Reply(), Reply(delay_s=ANSWER_DELAY_S))
    proxy = AnswerHolder(upstream_port(redis_client), conclusion_sha(redis_client))
    applied_while_held: list[bool] = []

    def at_the_second_post() -> None:
        receiver.wait_for(2, timeout_s=HOLD_S * 2)
        # Redis (read past the proxy) runs the first conclusion while its answer is held.
        until = time.monotonic() + 1.0
        while record(redis_client, ids[0]).status != "succeeded" and time.monotonic() < until:
            time.sleep(0.01)
        applied_while_held.append(record(redis_client, ids[0]).status == "succeeded")
        proxy.released.set()

    watcher = threading.Thread(target=at_the_second_post)
    watcher.start()
    client = through(proxy, redis_client)
    try:
        started = time.monotonic()
        settings = WebhookSettings.from_env(os.environ)
        reports = Deliverer(client, settings, endpoints).deliver_many(ids)
        took = time.monotonic() - started
    finally:
        watcher.join()
        client.close()
        proxy.close()

    # Written before the next POST went out: had it waited for that POST's answer, it would
    # reach the proxy at least ANSWER_DELAY_S after the POST arrived (threads wake with some
    # jitter either side, hence the slack).
    assert proxy.conclusions[0] < receiver.received[1].at + ANSWER_DELAY_S / 2
    assert took < HOLD_S  # which did not wait for its answer,
    assert applied_while_held == [True]  # and run by Redis meanwhile
    assert len(proxy.conclusions) == 3
    assert [r.action for r in reports] == ["succeeded"] * 3
    assert texts(receiver) == ["m0", "m1", "m2"]
    assert all(record(redis_client, i).attempt_count == 1 for i in ids)


@pytest.mark.parametrize(
    ("lost", "every"),
    [(0, False), (1, False), (2, False), (1, True)],
    ids=["first", "middle", "last", "redis-down-for-a-second"],
)
def test_a_lost_answer_to_a_conclusion_neither_loses_nor_double_counts_it(
    redis_client: redis.Redis,
    receiver: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
    lost: int,
    every: bool,
) -> None:
    """The connection drops with the answer (``every``: Redis itself goes away for a second,
    every connection dropped and new ones refused, so the conclusion waits for it)."""
    endpoints = configure(monkeypatch, endpoint(receiver, "ops"))
    ids, _ = stage(redis_client, endpoints, 3)
    proxy = CuttingProxy(upstream_port(redis_client), every=every)
    sha = conclusion_sha(redis_client).encode()
    seen: list[bytes] = []

    def the_chosen_conclusion(data: bytes) -> bool:
        if sha not in data:
            return False
        seen.append(data)
        return len(seen) == lost + 1

    proxy.cut_when(the_chosen_conclusion)
    outcomes: list[AttemptOutcome] = []
    client = through(proxy, redis_client)
    try:
        settings = WebhookSettings.from_env(os.environ)
        deliverer = Deliverer(client, settings, endpoints, on_outcome=outcomes.append)
        reports = deliverer.deliver_many(ids)
    finally:
        client.close()
        proxy.close()

    assert proxy.cuts == 1
    assert [r.action for r in reports] == ["succeeded"] * 3
    assert [o.delivery_id for o in outcomes] == ids  # each outcome told once, in order
    assert texts(receiver) == ["m0", "m1", "m2"]  # and each POST made once
    for delivery_id in ids:
        done = record(redis_client, delivery_id)
        assert (done.status, done.attempt_count, done.lease_until_ms) == ("succeeded", 1, 0)
        assert len(attempts(redis_client, delivery_id)) == 1


def test_a_redis_without_the_script_still_gets_every_conclusion_once(
    redis_client: redis.Redis, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoints = configure(monkeypatch, endpoint(receiver, "ops"))
    ids, _ = stage(redis_client, endpoints, 3)
    redis_client.script_flush()  # as a restarted Redis: every EVALSHA answers NOSCRIPT
    outcomes: list[AttemptOutcome] = []
    settings = WebhookSettings.from_env(os.environ)
    deliverer = Deliverer(redis_client, settings, endpoints, on_outcome=outcomes.append)

    reports = deliverer.deliver_many(ids)

    assert [r.action for r in reports] == ["succeeded"] * 3
    assert [o.delivery_id for o in outcomes] == ids
    assert all(record(redis_client, i).attempt_count == 1 for i in ids)


def test_a_try_of_its_own_costs_two_round_trips(
    redis_client: redis.Redis,
    redis_proxy: Any,
    receiver: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its claim, which brings the event's body and the endpoint's state with it, and its
    conclusion; nothing else goes to Redis."""
    endpoints = configure(monkeypatch, endpoint(receiver, "ops"))
    ids, _ = stage(redis_client, endpoints, 2)
    settings = WebhookSettings.from_env(os.environ)
    client = redis.Redis.from_url(redis_proxy.url(db_of(redis_client)))
    try:
        deliverer = Deliverer(client, settings, endpoints)
        deliverer.deliver(ids[0])  # the scripts are loaded by now
        redis_proxy.reset()
        [report] = deliverer.deliver_many([ids[1]])
        counted = redis_proxy.reset()
    finally:
        client.close()
    assert report.action == "succeeded"
    assert counted.round_trips == 2
    assert texts(receiver) == ["m0", "m1"]
    assert record(redis_client, ids[1]).attempt_count == 1
