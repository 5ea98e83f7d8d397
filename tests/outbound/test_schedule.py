"""Scheduled messages (``send_at``) on real Redis, without workers: intake stores them outside
their line with a release job in RQ's scheduled registry; release puts them in line by
accepted order among the waiting messages; a cancelled one is never released."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rq import Queue
from rq.registry import ScheduledJobRegistry

from bridge.outbound.intake import RELEASE_FUNC, SEND_QUEUE, Intake, release_job_id
from bridge.outbound.messages import (
    MessageRecord,
    MessageStatus,
    MessageStore,
    NotCancellable,
    RecipientQueue,
    format_time,
    parse_time,
)
from bridge.outbound.outcomes import Outbound

ALICE = "sip:alice@contoso.com"
TTL = 3600


def scheduled(conn: redis.Redis, delay_s: float, text: str = "later") -> MessageRecord:
    store = MessageStore(conn, record_ttl_s=TTL)
    now = time.time()
    record = MessageRecord.new(to=ALICE, text=text, validity_s=300, now=now, send_at=now + delay_s)
    return Intake(conn, store).submit(record)


def immediate(conn: redis.Redis, text: str = "now") -> MessageRecord:
    store = MessageStore(conn, record_ttl_s=TTL)
    record = MessageRecord.new(to=ALICE, text=text, validity_s=300)
    return Intake(conn, store).submit(record)


def test_a_scheduled_message_waits_outside_its_line_with_a_release_job(
    redis_client: redis.Redis,
) -> None:
    record = scheduled(redis_client, 600)

    assert record.status is MessageStatus.SCHEDULED and record.step == "scheduled"
    assert record.cancellable
    # validity runs from send_at, and the record outlives send_at by the record TTL
    assert parse_time(record.expires_at) == pytest.approx(parse_time(record.send_at or "") + 300)
    assert TTL + 590 < redis_client.ttl(f"msg:{record.id}") <= TTL + 601
    assert RecipientQueue(redis_client).pending(ALICE) == []
    registry = ScheduledJobRegistry(queue=Queue(SEND_QUEUE, connection=redis_client))
    assert registry.get_job_ids() == [release_job_id(record.id)]
    due = registry.get_scheduled_time(release_job_id(record.id))
    assert due.replace(tzinfo=UTC).timestamp() == pytest.approx(
        parse_time(record.send_at or ""), abs=1
    )
    job = Queue(SEND_QUEUE, connection=redis_client).fetch_job(release_job_id(record.id))
    assert job is not None and (job.func_name, job.args) == (RELEASE_FUNC, (record.id,))
    assert Queue(SEND_QUEUE, connection=redis_client).count == 0  # nothing runs before then


def test_released_it_joins_its_line_and_starts_when_first(redis_client: redis.Redis) -> None:
    record = scheduled(redis_client, 600)
    outbound = Outbound(redis_client, MessageStore(redis_client, record_ttl_s=TTL))

    assert outbound.release(record.id) == "released"

    stored = outbound.store.get(record.id)
    assert stored.status is MessageStatus.QUEUED and stored.step == "queued"
    assert list(stored.history) == ["scheduled", "queued"]
    assert RecipientQueue(redis_client).pending(ALICE) == [record.id]
    (job,) = Queue(SEND_QUEUE, connection=redis_client).get_jobs()
    assert job.args == (record.id,) and job.func_name == "workers.send.send_message"
    # A second run of the release job (RQ may run one twice) adds nothing to the line.
    assert outbound.release(record.id) == "released"
    assert RecipientQueue(redis_client).pending(ALICE) == [record.id]


def test_a_cancelled_scheduled_message_is_never_released(redis_client: redis.Redis) -> None:
    record = scheduled(redis_client, 600)
    outbound = Outbound(redis_client, MessageStore(redis_client, record_ttl_s=TTL))

    cancelled = outbound.cancel(record.id, "not needed")

    assert cancelled.status is MessageStatus.CANCELLED
    registry = ScheduledJobRegistry(queue=Queue(SEND_QUEUE, connection=redis_client))
    assert registry.get_job_ids() == []  # the release job went with it
    assert outbound.release(record.id) == "cancelled"  # had it run anyway
    assert RecipientQueue(redis_client).pending(ALICE) == []
    assert Queue(SEND_QUEUE, connection=redis_client).count == 0


def test_once_released_and_being_sent_it_can_no_longer_be_cancelled(
    redis_client: redis.Redis,
) -> None:
    record = scheduled(redis_client, 600)
    outbound = Outbound(redis_client, MessageStore(redis_client, record_ttl_s=TTL))
    outbound.release(record.id)
    outbound.store.update(record.id, lambda r: replace(r, step="posting"))
    with pytest.raises(NotCancellable):
        outbound.cancel(record.id, "too late")


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    plan=st.lists(st.sampled_from(["now", "later", "release", "finish"]), min_size=1, max_size=25),
    picks=st.randoms(use_true_random=False),
)
def test_released_messages_wait_in_accepted_order_whatever_the_interleaving(
    redis_client: redis.Redis, plan: list[str], picks: object
) -> None:
    """After the head (being sent), a line always holds its messages in accepted order: an
    immediate message joins at the end, a released one by its sequence among the waiting."""
    redis_client.flushdb()
    outbound = Outbound(redis_client, MessageStore(redis_client, record_ttl_s=TTL))
    fifo = RecipientQueue(redis_client)
    waiting: list[str] = []
    released: list[str] = []
    rng = picks  # a random.Random from Hypothesis
    for step in plan:
        if step == "now":
            immediate(redis_client)
        elif step == "later":
            waiting.append(scheduled(redis_client, 600).id)
        elif step == "release" and waiting:
            chosen = waiting.pop(rng.randrange(len(waiting)))  # type: ignore[attr-defined]
            outbound.release(chosen)
            released.append(chosen)
        elif step == "finish":
            head = fifo.head(ALICE)
            if head is not None:
                fifo.pop_if_head(ALICE, head)
        line = fifo.pending(ALICE)
        sequences = [outbound.store.get(m).sequence for m in line[1:]]
        assert sequences == sorted(sequences), (plan, line)
        assert len(set(line)) == len(line)
    for message_id in released:  # every released message is in line or was finished
        assert outbound.store.get(message_id).status is MessageStatus.QUEUED
    assert not set(waiting) & set(fifo.pending(ALICE))


def test_a_release_cannot_jump_the_message_being_sent(redis_client: redis.Redis) -> None:
    early = scheduled(redis_client, 600, "accepted first")
    head = immediate(redis_client, "being sent")
    behind = immediate(redis_client, "waiting")
    outbound = Outbound(redis_client, MessageStore(redis_client, record_ttl_s=TTL))

    outbound.release(early.id)

    assert RecipientQueue(redis_client).pending(ALICE) == [head.id, early.id, behind.id]
    assert early.sequence < head.sequence


def test_a_scheduled_message_is_listed_by_its_status(redis_client: redis.Redis) -> None:
    from bridge.outbound.message_search import MessageQuery, MessageSearch

    record = scheduled(redis_client, 60)
    search = MessageSearch(redis_client)
    only = MessageQuery(statuses=frozenset({MessageStatus.SCHEDULED}))
    assert [r.id for r in search.page(only, 10).records] == [record.id]
    Outbound(redis_client, MessageStore(redis_client, record_ttl_s=TTL)).release(record.id)
    assert search.page(only, 10).records == []
    queued = MessageQuery(statuses=frozenset({MessageStatus.QUEUED}))
    assert [r.id for r in search.page(queued, 10).records] == [record.id]


def test_send_at_now_or_just_past_sends_at_once() -> None:
    now = time.time()
    record = MessageRecord.new(to=ALICE, text="x", validity_s=60, now=now, send_at=now - 5)
    assert record.status is MessageStatus.QUEUED and record.step == "queued"
    assert record.send_at == format_time(now - 5)
    assert record.expires_at == format_time(now + 60)  # validity from intake, as ever


def test_the_first_release_job_of_messages_due_together_releases_them_in_order(
    redis_client: redis.Redis,
) -> None:
    """RQ runs release jobs of one moment in any order, even side by side: whichever runs
    first puts all due messages of the line in, lowest sequence first."""
    due = [scheduled(redis_client, 0.2, f"due {n}") for n in range(4)]
    not_yet = scheduled(redis_client, 600, "not yet")
    time.sleep(0.3)
    outbound = Outbound(redis_client, MessageStore(redis_client, record_ttl_s=TTL))

    assert outbound.release(due[-1].id) == "released"

    assert RecipientQueue(redis_client).pending(ALICE) == [r.id for r in due]
    assert outbound.store.get(not_yet.id).status is MessageStatus.SCHEDULED
    (job,) = Queue(SEND_QUEUE, connection=redis_client).get_jobs()
    assert job.args == (due[0].id,)  # the line's head starts
    for record in due[:-1]:  # their own jobs, run later, change nothing
        assert outbound.release(record.id) == "released"
    assert RecipientQueue(redis_client).pending(ALICE) == [r.id for r in due]
