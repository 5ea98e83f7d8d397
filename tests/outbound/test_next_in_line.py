"""A message's final transition starts the next one to the same person: its transaction drops
the message from the line and reads the new head's record and run number, so starting the head
takes no read of its own. Real Redis (behind a counting proxy where round trips are counted).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import redis
from rq import Queue

from bench._redis_trips import CountingProxy
from bridge.outbound.intake import SEND_QUEUE, Intake
from bridge.outbound.messages import MessageRecord, MessageStatus, MessageStore, record_key
from bridge.outbound.outcomes import Outbound

ALICE = "sip:alice@contoso.com"


def accept(client: redis.Redis, to: str = ALICE) -> MessageRecord:
    return Intake(client, MessageStore(client)).submit(
        MessageRecord.new(to=to, text="x", validity_s=300)
    )


def posted(client: redis.Redis, record: MessageRecord) -> MessageRecord:
    return MessageStore(client).update(
        record.id, lambda r: replace(r, status=MessageStatus.SENDING, step="posted", attempts=1)
    )


def send_jobs(client: redis.Redis) -> list[str]:
    return Queue(SEND_QUEUE, connection=client).get_job_ids()


def line(client: redis.Redis, to: str = ALICE) -> list[str]:
    return [raw.decode() for raw in client.lrange(f"rcpt:{to}:fifo", 0, -1)]


@pytest.mark.parametrize("status", [MessageStatus.DELIVERED, MessageStatus.FAILED])
def test_the_next_in_line_is_started_with_its_next_run_number(
    redis_client: redis.Redis, status: MessageStatus
) -> None:
    first, second = accept(redis_client), accept(redis_client)
    Queue(SEND_QUEUE, connection=redis_client).empty()
    posted(redis_client, first)
    redis_client.set(f"msg:{second.id}:runs", 3)  # three earlier runs of the second

    ended = Outbound(redis_client).finalize(first.id, status)

    assert ended is not None and ended.status is status
    assert line(redis_client) == [second.id]
    assert send_jobs(redis_client) == [f"send-{second.id}-4"]
    assert 0 < redis_client.ttl(f"msg:{second.id}:runs") <= MessageStore(redis_client).record_ttl_s


def test_the_last_in_line_leaves_an_empty_line_and_starts_nothing(
    redis_client: redis.Redis,
) -> None:
    only = posted(redis_client, accept(redis_client))
    Queue(SEND_QUEUE, connection=redis_client).empty()

    Outbound(redis_client).finalize(only.id, MessageStatus.DELIVERED)

    assert line(redis_client) == []
    assert not redis_client.sismember("rcpt:lines", ALICE)
    assert send_jobs(redis_client) == []


@pytest.mark.parametrize("ended_how", ["record gone", "cancelled"])
def test_a_head_that_ended_meanwhile_is_dropped_and_the_one_after_it_started(
    redis_client: redis.Redis, ended_how: str
) -> None:
    outbound = Outbound(redis_client)
    first, gone, third = accept(redis_client), accept(redis_client), accept(redis_client)
    Queue(SEND_QUEUE, connection=redis_client).empty()
    posted(redis_client, first)
    if ended_how == "record gone":
        redis_client.delete(record_key(gone.id))
    else:
        outbound.cancel(gone.id, "stop")

    outbound.finalize(first.id, MessageStatus.DELIVERED)

    assert line(redis_client) == [third.id]
    [job] = send_jobs(redis_client)
    assert job.startswith(f"send-{third.id}-")


def test_a_repeated_outcome_changes_nothing_and_only_nudges_the_head(
    redis_client: redis.Redis,
) -> None:
    first, second = accept(redis_client), accept(redis_client)
    posted(redis_client, first)
    outbound = Outbound(redis_client)
    outbound.finalize(first.id, MessageStatus.DELIVERED)
    Queue(SEND_QUEUE, connection=redis_client).empty()

    again = outbound.finalize(first.id, MessageStatus.DELIVERED)

    assert again is not None and again.status is MessageStatus.DELIVERED
    assert again.history == MessageStore(redis_client).get(first.id).history
    assert line(redis_client) == [second.id]
    # the head is nudged again (a second job, which its lock and record make step aside, as a
    # repeated run of any send does), never skipped
    assert [job.split("-")[1] for job in send_jobs(redis_client)] == [second.id]


def test_a_settlement_that_starts_the_next_takes_five_round_trips(
    redis_client: redis.Redis, redis_proxy: CountingProxy
) -> None:
    """The final transition (WATCH with GET, then MULTI … EXEC with the drop from the line and
    the new head's record and run) and RQ's enqueue of the head: five. It was ten: WATCH and
    GET apart, then a drop from the line, a read of the head's record and a count of its run,
    each on its own."""
    first, second = accept(redis_client), accept(redis_client)
    first = posted(redis_client, first)
    through = redis.Redis.from_url(redis_proxy.url())
    outbound = Outbound(through, MessageStore(through))
    through.ping()
    redis_proxy.reset()

    outbound.finalize(first.id, MessageStatus.DELIVERED, record=first)

    trips = redis_proxy.reset().round_trips
    assert send_jobs(redis_client)[-1].startswith(f"send-{second.id}-")
    assert trips <= 5, trips
