"""A delivery try that meets Redis read-only, at its claim or after its POST, waits for Redis and
records its outcome once; it is neither lost nor marked failed. Real Redis, a real receiver."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
import redis

from bridge.config.embedded_redis import EmbeddedRedis, free_port
from bridge.webhooks.delivery import Deliverer
from bridge.webhooks.log import DeliveryStatus
from bridge.webhooks.outbox import Outbox, new_event
from bridge.webhooks.settings import WebhookSettings
from tests.webhooks.harness import attempts, configure, publish, record
from tests.webhooks.receiver import Reply, WebhookReceiver
from tests.webhooks.test_delivery import endpoint


@pytest.fixture()
def own_redis() -> Iterator[redis.Redis]:
    with EmbeddedRedis(appendonly=False) as server:
        client = redis.Redis(port=server.port)
        yield client
        client.close()


def read_only(client: redis.Redis) -> None:
    client.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))


def writable(client: redis.Redis) -> None:
    client.execute_command("REPLICAOF", "NO", "ONE")


@contextmanager
def read_only_while_posts_are_out(
    client: redis.Redis, receiver: WebhookReceiver, posts: int, seconds: float
) -> Iterator[None]:
    """Once the receiver holds ``posts`` POSTs, Redis refuses writes for ``seconds``; the
    ``with`` block ends after Redis takes writes again."""

    def fault() -> None:
        receiver.wait_for(posts, timeout_s=5)
        read_only(client)
        time.sleep(seconds)
        writable(client)

    breaker = threading.Thread(target=fault)
    breaker.start()
    try:
        yield
    finally:
        breaker.join()


def test_an_outcome_is_recorded_once_redis_takes_writes_again(
    own_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    with WebhookReceiver(Reply(delay_s=0.5)) as receiver:
        endpoints = configure(monkeypatch, endpoint(receiver))
        _, (delivery_id,) = publish(own_redis, endpoints)

        settings = WebhookSettings.from_env(os.environ)
        started = time.monotonic()
        # while the POST is out: its outcome cannot be written
        with read_only_while_posts_are_out(own_redis, receiver, posts=1, seconds=2.0):
            report = Deliverer(own_redis, settings, endpoints).deliver(delivery_id)
    assert report.action == "succeeded", report
    assert time.monotonic() - started >= 2.0
    assert record(own_redis, delivery_id).status is DeliveryStatus.SUCCEEDED
    assert len(attempts(own_redis, delivery_id)) == 1
    assert len(receiver.received) == 1


def test_a_claim_waits_for_redis(own_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    with WebhookReceiver() as receiver:
        endpoints = configure(monkeypatch, endpoint(receiver))
        _, (delivery_id,) = publish(own_redis, endpoints)
        read_only(own_redis)
        threading.Timer(1.0, writable, args=(own_redis,)).start()
        settings = WebhookSettings.from_env(os.environ)
        report = Deliverer(own_redis, settings, endpoints).deliver(delivery_id)
    assert report.action == "succeeded", report
    assert len(receiver.received) == 1


def test_a_stopping_worker_does_not_wait(
    own_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    with WebhookReceiver() as receiver:
        endpoints = configure(monkeypatch, endpoint(receiver))
        _, (delivery_id,) = publish(own_redis, endpoints)
        read_only(own_redis)
        stop = threading.Event()
        stop.set()
        settings = WebhookSettings.from_env(os.environ)
        started = time.monotonic()
        with pytest.raises(redis.ReadOnlyError):
            Deliverer(own_redis, settings, endpoints, stop=stop).deliver(delivery_id)
        assert time.monotonic() - started < 1
        writable(own_redis)
    assert record(own_redis, delivery_id).status is DeliveryStatus.PENDING  # still to do
    assert receiver.received == []


def test_a_batch_meeting_a_read_only_redis_midway_delivers_each_once(
    own_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis stops taking writes while a batch's second POST is out: that outcome, and every
    later one, is recorded once Redis is back; nothing is sent twice or marked failed."""
    with WebhookReceiver(Reply(delay_s=0.3)) as receiver:
        endpoints = configure(monkeypatch, endpoint(receiver))
        settings = WebhookSettings.from_env(os.environ)
        with own_redis.pipeline() as pipe:
            pipe.multi()
            with Outbox(pipe, endpoints, settings) as outbox:
                ids = [i for n in range(5) for i in outbox.stage(event(n))]
            pipe.execute()

        started = time.monotonic()
        with read_only_while_posts_are_out(own_redis, receiver, posts=2, seconds=1.5):
            reports = Deliverer(own_redis, settings, endpoints).deliver_many(ids)
    assert time.monotonic() - started >= 2.0  # it waited for Redis (5 POSTs alone: 1.5 s)
    assert [r.action for r in reports] == ["succeeded"] * 5
    assert len(receiver.received) == 5
    for delivery_id in ids:
        assert record(own_redis, delivery_id).status is DeliveryStatus.SUCCEEDED
        assert len(attempts(own_redis, delivery_id)) == 1


def event(n: int) -> dict[str, object]:
    return new_event("message.received", {"text": f"m{n}"}, datetime.now(UTC))
