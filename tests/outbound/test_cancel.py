"""Cancelling a message, on real Redis: which records may be cancelled, what a cancel writes,
that the line moves on, and that the cancel and the worker's claim to post are one
compare-and-set, whichever commits first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from redis.client import Pipeline
from rq import Queue

from bridge.outbound.intake import SEND_QUEUE, Intake
from bridge.outbound.messages import (
    MessageNotFound,
    MessageRecord,
    MessageStatus,
    MessageStore,
    NotCancellable,
    record_key,
)
from bridge.outbound.outcomes import Outbound
from bridge.outbound.sender import Sender
from bridge.outbound.status_events import status_event
from bridge.session.client import UcwaClient
from bridge.ucwa.auth import Credentials

ACCOUNT = "sip:bot@contoso.com"
ALICE = "sip:alice@contoso.com"


def accept(client: redis.Redis, to: str = ALICE) -> MessageRecord:
    record = MessageRecord.new(to=to, text="x", validity_s=300)
    return Intake(client, MessageStore(client)).submit(record)


def put(client: redis.Redis, record: MessageRecord) -> None:
    client.set(record_key(record.id), record.to_json())


class Finals:
    """An ``on_final`` hook that writes, in the caller's transaction as a webhook is staged, the
    ids of the records it saw: a transaction that did not commit leaves none."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def __call__(self, pipe: Pipeline, record: MessageRecord) -> None:
        pipe.rpush("test:finals", record.to_json())

    @property
    def records(self) -> list[MessageRecord]:
        return [MessageRecord.from_json(raw) for raw in self.client.lrange("test:finals", 0, -1)]


def sender_for(client: redis.Redis, outbound: Outbound) -> Sender:
    ucwa = UcwaClient(Credentials(ACCOUNT, "pw"))
    return Sender(client, ucwa, ACCOUNT, outbound=outbound)


def send_jobs(client: redis.Redis) -> list[str]:
    return [job.args[0] for job in Queue(SEND_QUEUE, connection=client).get_jobs()]


def test_a_queued_message_ends_cancelled_with_the_reason_and_one_event(
    redis_client: redis.Redis,
) -> None:
    finals = Finals(redis_client)
    outbound = Outbound(redis_client, on_final=finals)
    record = accept(redis_client)

    cancelled = outbound.cancel(record.id, "wrong channel")

    assert cancelled.status is MessageStatus.CANCELLED
    assert cancelled.error is not None
    assert (cancelled.error.code, cancelled.error.message) == (
        "cancelled_by_caller",
        "wrong channel",
    )
    assert list(cancelled.history) == ["queued", "cancelled"]
    assert MessageStore(redis_client).get(record.id) == cancelled
    assert finals.records == [cancelled]
    event = status_event(cancelled, datetime.now(UTC))
    assert event is not None and event["type"] == "message.cancelled"
    assert event["data"]["error"]["message"] == "wrong channel"


def test_cancelling_again_returns_the_record_without_a_second_event(
    redis_client: redis.Redis,
) -> None:
    finals = Finals(redis_client)
    outbound = Outbound(redis_client, on_final=finals)
    record = accept(redis_client)
    first = outbound.cancel(record.id, "first")

    again = outbound.cancel(record.id, "second")

    assert again == first
    assert len(finals.records) == 1


def test_the_next_message_to_that_person_starts_as_after_a_failure(
    redis_client: redis.Redis,
) -> None:
    outbound = Outbound(redis_client)
    head, behind = accept(redis_client), accept(redis_client)
    Queue(SEND_QUEUE, connection=redis_client).empty()

    outbound.cancel(head.id, "stop")

    assert redis_client.lrange(f"rcpt:{ALICE}:fifo", 0, -1) == [behind.id.encode()]
    assert send_jobs(redis_client) == [behind.id]


def test_a_message_behind_another_leaves_the_line_when_it_reaches_the_head(
    redis_client: redis.Redis,
) -> None:
    outbound = Outbound(redis_client)
    head, cancelled, last = accept(redis_client), accept(redis_client), accept(redis_client)
    Queue(SEND_QUEUE, connection=redis_client).empty()

    outbound.cancel(cancelled.id, "stop")
    assert send_jobs(redis_client) == []  # the head is still on its way
    outbound.finalize(head.id, MessageStatus.DELIVERED)

    assert redis_client.lrange(f"rcpt:{ALICE}:fifo", 0, -1) == [last.id.encode()]
    assert send_jobs(redis_client) == [last.id]


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"status": MessageStatus.SENDING, "step": "posting_cold"}, "sending"),
        ({"status": MessageStatus.SENDING, "step": "invited"}, "sending"),
        ({"status": MessageStatus.SENDING, "step": "posted"}, "sending"),
        ({"status": MessageStatus.SENDING, "step": "queued", "maybe_sent": True}, "sending"),
        ({"status": MessageStatus.DELIVERED, "step": "posted"}, "delivered"),
        ({"status": MessageStatus.FAILED}, "failed"),
        ({"status": MessageStatus.EXPIRED}, "expired"),
    ],
)
def test_a_message_with_ucwa_or_final_is_not_cancellable(
    redis_client: redis.Redis, change: dict[str, Any], status: str
) -> None:
    finals = Finals(redis_client)
    record = replace(accept(redis_client), **change)
    put(redis_client, record)

    with pytest.raises(NotCancellable) as refused:
        Outbound(redis_client, on_final=finals).cancel(record.id, "stop")

    assert refused.value.record.status.value == status
    assert MessageStore(redis_client).get(record.id) == record
    assert finals.records == []


def test_a_message_between_attempts_is_cancellable(redis_client: redis.Redis) -> None:
    record = replace(accept(redis_client), status=MessageStatus.SENDING, attempts=1)
    put(redis_client, record)

    cancelled = Outbound(redis_client).cancel(record.id, "stop")

    assert cancelled.status is MessageStatus.CANCELLED


def test_an_unknown_message_is_not_found(redis_client: redis.Redis) -> None:
    with pytest.raises(MessageNotFound):
        Outbound(redis_client).cancel("msg_" + "0" * 32, "stop")


def test_a_final_message_never_becomes_anything_else(redis_client: redis.Redis) -> None:
    outbound = Outbound(redis_client)
    record = accept(redis_client)
    outbound.cancel(record.id, "stop")

    for status in (MessageStatus.DELIVERED, MessageStatus.FAILED, MessageStatus.EXPIRED):
        outbound.finalize(record.id, status)

    assert MessageStore(redis_client).get(record.id).status is MessageStatus.CANCELLED


# -- the race: the worker's claim to post against a cancel -------------------------------------


def interleaved(
    store: MessageStore, between: Callable[[], Any], method: str = "update"
) -> Callable[..., Any]:
    """``store.update`` (or ``method``, ``update_then_watch`` for a worker's claim) that runs
    ``between`` once, after its WATCH and read, before its EXEC."""
    original = getattr(store, method)
    fired: list[bool] = []

    def update(message_id: str, mutate: Any, *args: Any, **kwargs: Any) -> Any:
        def racing(current: MessageRecord) -> MessageRecord:
            if not fired:
                fired.append(True)
                between()
            return mutate(current)

        return original(message_id, racing, *args, **kwargs)

    return update


def claim_and_let_go(sender: Sender, record: MessageRecord) -> None:
    """A worker's claim, its record then let go of (the claim leaves it watched)."""
    claimed = sender._claim(record, "cold")
    if claimed is not None and claimed[1] is not None:
        claimed[1][0].reset()


def test_a_cancel_committed_during_the_claim_wins_and_nothing_is_posted(
    redis_client: redis.Redis,
) -> None:
    outbound = Outbound(redis_client)
    sender = sender_for(redis_client, outbound)
    record, behind = accept(redis_client), accept(redis_client)
    Queue(SEND_QUEUE, connection=redis_client).empty()
    sender.store.update_then_watch = interleaved(  # type: ignore[method-assign]
        sender.store, lambda: Outbound(redis_client).cancel(record.id, "now"), "update_then_watch"
    )

    assert sender._claim(record, "cold") is None
    assert sender._stand_down(record.id) == "cancelled"

    stored = MessageStore(redis_client).get(record.id)
    assert stored.status is MessageStatus.CANCELLED and stored.step == "queued"
    assert stored.attempts == 0
    assert redis_client.lrange(f"rcpt:{ALICE}:fifo", 0, -1) == [behind.id.encode()]
    assert behind.id in send_jobs(redis_client)


def test_a_claim_committed_during_the_cancel_wins_and_the_cancel_is_refused(
    redis_client: redis.Redis,
) -> None:
    finals = Finals(redis_client)
    outbound = Outbound(redis_client, on_final=finals)
    sender = sender_for(redis_client, Outbound(redis_client))
    record = accept(redis_client)
    outbound.store.update = interleaved(  # type: ignore[method-assign]
        outbound.store, lambda: claim_and_let_go(sender, record)
    )

    with pytest.raises(NotCancellable) as refused:
        outbound.cancel(record.id, "too late")

    assert refused.value.record.step == "posting_cold"
    stored = MessageStore(redis_client).get(record.id)
    assert stored.status is MessageStatus.SENDING and stored.attempts == 1
    assert finals.records == []


def test_a_run_of_a_cancelled_message_posts_nothing_and_hands_on(
    redis_client: redis.Redis,
) -> None:
    outbound = Outbound(redis_client)
    sender = sender_for(redis_client, outbound)
    record, behind = accept(redis_client), accept(redis_client)
    outbound.cancel(record.id, "stop")
    Queue(SEND_QUEUE, connection=redis_client).empty()

    assert sender.run(record.id) == "final"  # no session exists: a POST would have failed
    assert send_jobs(redis_client) == [behind.id]


def test_a_repeated_cancel_finishes_one_cut_off_before_the_line_moved(
    redis_client: redis.Redis,
) -> None:
    record, behind = accept(redis_client), accept(redis_client)
    cancelled = replace(record, status=MessageStatus.CANCELLED)  # as if its process died then
    put(redis_client, cancelled)
    Queue(SEND_QUEUE, connection=redis_client).empty()

    assert Outbound(redis_client).cancel(record.id, "again") == cancelled

    assert redis_client.lrange(f"rcpt:{ALICE}:fifo", 0, -1) == [behind.id.encode()]
    assert send_jobs(redis_client) == [behind.id]
