"""Intake: record, FIFO entry and job land together; per-recipient order is kept."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest
import redis
from flask.testing import FlaskClient
from redis.client import Pipeline
from rq import Queue

from bridge.api.rate_limit import RateLimiter
from bridge.config.settings import RateLimit
from bridge.outbound.intake import SEND_FUNC, SEND_QUEUE, Intake
from bridge.outbound.messages import MessageRecord, MessageStore, RecipientQueue
from tests.api.conftest import bearer


class ExplodingGuard:
    """Fails after the record and the job were queued in the MULTI, before EXEC."""

    watched_keys: Sequence[str] = ()

    def check(self, pipe: Pipeline) -> None:
        pass

    def write(self, pipe: Pipeline, record: MessageRecord) -> None:
        raise RuntimeError("crash before EXEC")


def test_nothing_lands_when_the_transaction_is_abandoned(redis_client: redis.Redis) -> None:
    intake = Intake(redis_client, MessageStore(redis_client))
    record = MessageRecord.new(to="sip:a@b.com", text="x", validity_s=60)

    with pytest.raises(RuntimeError):
        intake.submit(record, ExplodingGuard())

    assert redis_client.keys("*") == []


def test_job_contract(redis_client: redis.Redis) -> None:
    record = Intake(redis_client, MessageStore(redis_client)).submit(
        MessageRecord.new(to="sip:a@b.com", text="x", validity_s=60)
    )

    (job,) = Queue(SEND_QUEUE, connection=redis_client).get_jobs()
    assert (SEND_QUEUE, SEND_FUNC) == ("send", "workers.send.send_message")
    assert (job.id, job.func_name, job.args) == (f"send-{record.id}", SEND_FUNC, (record.id,))


def test_fifo_keeps_accepted_order_per_recipient(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    ids = []
    for n, to in enumerate(
        ["sip:Alice@Contoso.com", "sip:bob@contoso.com", "sip:alice@contoso.com"]
    ):
        response = client.post("/messages", json={"to": to, "text": f"m{n}"}, headers=bearer())
        ids.append(response.get_json()["id"])
    fifo = RecipientQueue(redis_client)
    store = MessageStore(redis_client)

    assert fifo.pending("sip:alice@contoso.com") == [ids[0], ids[2]]
    assert fifo.pending("sip:bob@contoso.com") == [ids[1]]
    assert [store.get(i).sequence for i in ids] == [1, 1, 2]

    assert fifo.head("sip:alice@contoso.com") == ids[0]
    assert fifo.pop_if_head("sip:alice@contoso.com", ids[2]) is False
    assert fifo.pop_if_head("sip:alice@contoso.com", ids[0]) is True
    assert fifo.pop_if_head("sip:alice@contoso.com", ids[0]) is False
    assert fifo.head("sip:alice@contoso.com") == ids[2]
    assert fifo.head("sip:nobody@contoso.com") is None


@pytest.mark.parametrize("gated", [False, True], ids=["transaction", "gated-script"])
def test_concurrent_intake_keeps_sequence_equal_to_fifo_order(
    redis_url: str, redis_client: redis.Redis, gated: bool
) -> None:
    per_thread = 25  # redis_client: an empty database, so the line holds only these

    def accept() -> None:
        client = redis.Redis.from_url(redis_url)
        intake = Intake(client, MessageStore(client))
        gate = RateLimiter(client, RateLimit(1000, 1, 1000)).gate("k1")
        assert gate is not None
        for _ in range(per_thread):
            record = MessageRecord.new(to="sip:a@b.com", text="x", validity_s=60)
            if gated:
                intake.submit_gated(record, gate)
            else:
                intake.submit(record)

    threads = [threading.Thread(target=accept) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    client = redis.Redis.from_url(redis_url)
    order = RecipientQueue(client).pending("sip:a@b.com")
    store = MessageStore(client)
    assert [store.get(i).sequence for i in order] == list(range(1, 3 * per_thread + 1))
    assert Queue(SEND_QUEUE, connection=client).count == 3 * per_thread


def _stored(client: redis.Redis) -> dict[bytes, object]:
    """Every key but the rate limiter's, by kind and contents (less what names the message)."""
    state: dict[bytes, object] = {}
    for key in client.keys("*"):
        if key.startswith(b"ratelimit:"):
            continue
        kind = client.type(key)
        if kind == b"hash":
            fields = client.hgetall(key)
            for name in (b"created_at", b"enqueued_at", b"data", b"description"):
                fields.pop(name)
            state[key.split(b"-", 1)[0]] = fields
        elif kind == b"list":
            state[key] = client.llen(key)
        elif kind == b"set":
            state[key] = client.smembers(key)
        elif kind == b"zset":  # the listing indexes: members name the message
            state[key] = (client.zcard(key), client.ttl(key) > 0)
        elif key.startswith(b"msg:"):
            state[b"msg:"] = client.ttl(key) > 0
        else:
            state[key] = client.get(key)
    return state


def test_gated_intake_stores_what_the_transaction_stores(redis_client: redis.Redis) -> None:
    """One script call lands the same record, line entry and RQ job as the MULTI/EXEC."""
    store = MessageStore(redis_client)
    intake = Intake(redis_client, store)
    gate = RateLimiter(redis_client, RateLimit(10, 1, 5)).gate("k1")
    assert gate is not None

    plain = intake.submit(MessageRecord.new(to="sip:a@b.com", text="x", validity_s=60))
    via_multi = _stored(redis_client)
    redis_client.flushall()
    reply, gated = intake.submit_gated(
        MessageRecord.new(to="sip:a@b.com", text="x", validity_s=60), gate
    )

    assert gated is not None and reply[:2] == [1, 4]
    assert _stored(redis_client) == via_multi
    assert gated.sequence == plain.sequence == 1
    assert store.get(gated.id) == gated
    (job,) = Queue(SEND_QUEUE, connection=redis_client).get_jobs()
    assert (job.id, job.func_name, job.args) == (f"send-{gated.id}", SEND_FUNC, (gated.id,))
    assert RecipientQueue(redis_client).pending("sip:a@b.com") == [gated.id]


def test_a_refusing_gate_stores_nothing(redis_client: redis.Redis) -> None:
    intake = Intake(redis_client, MessageStore(redis_client))
    gate = RateLimiter(redis_client, RateLimit(1, 3600, 1)).gate("k1")
    assert gate is not None

    first = intake.submit_gated(MessageRecord.new(to="sip:a@b.com", text="x", validity_s=60), gate)
    refused = intake.submit_gated(
        MessageRecord.new(to="sip:a@b.com", text="y", validity_s=60), gate
    )

    assert first[1] is not None and refused[1] is None and refused[0][0] == 0
    assert Queue(SEND_QUEUE, connection=redis_client).count == 1
    assert RecipientQueue(redis_client).pending("sip:a@b.com") == [first[1].id]
    assert len(redis_client.keys("msg:*")) == 1


def test_gated_intake_survives_a_script_cache_flush(redis_client: redis.Redis) -> None:
    """After a Redis restart the script is gone: EVALSHA fails whole, EVAL then stores once."""
    intake = Intake(redis_client, MessageStore(redis_client))
    gate = RateLimiter(redis_client, RateLimit(10, 1, 5)).gate("k1")
    assert gate is not None
    intake.submit_gated(MessageRecord.new(to="sip:a@b.com", text="x", validity_s=60), gate)

    redis_client.script_flush()
    _, stored = intake.submit_gated(
        MessageRecord.new(to="sip:a@b.com", text="y", validity_s=60), gate
    )

    assert stored is not None and stored.sequence == 2
    assert Queue(SEND_QUEUE, connection=redis_client).count == 2


def test_without_replayable_job_commands_the_gate_runs_alone_first(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should RQ ever queue a command the script cannot replay: two round trips, same result."""
    monkeypatch.setattr("bridge.outbound.intake._REPLAYABLE", frozenset())
    intake = Intake(redis_client, MessageStore(redis_client))
    gate = RateLimiter(redis_client, RateLimit(1, 3600, 1)).gate("k1")
    assert gate is not None

    reply, stored = intake.submit_gated(
        MessageRecord.new(to="sip:a@b.com", text="x", validity_s=60), gate
    )
    refused = intake.submit_gated(
        MessageRecord.new(to="sip:a@b.com", text="y", validity_s=60), gate
    )

    assert reply[0] == 1 and stored is not None and stored.sequence == 1
    assert refused[0][0] == 0 and refused[1] is None
    assert Queue(SEND_QUEUE, connection=redis_client).count == 1
