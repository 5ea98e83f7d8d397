"""Intake: record, FIFO entry and job land together; per-recipient order is kept."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest
import redis
from flask.testing import FlaskClient
from redis.client import Pipeline
from rq import Queue

from bridge.intake import SEND_FUNC, SEND_QUEUE, Intake
from bridge.messages import MessageRecord, MessageStore, RecipientQueue
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


def test_concurrent_intake_keeps_sequence_equal_to_fifo_order(redis_url: str) -> None:
    per_thread = 25

    def accept() -> None:
        client = redis.Redis.from_url(redis_url)
        intake = Intake(client, MessageStore(client))
        for _ in range(per_thread):
            intake.submit(MessageRecord.new(to="sip:a@b.com", text="x", validity_s=60))

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
