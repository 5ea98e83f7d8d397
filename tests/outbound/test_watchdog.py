"""The outcome watchdog of an attempt, on real Redis and real RQ registries: scheduled with the
record update that records the POST, taken off the schedule by the message's final transition,
never scheduled for a message the outcome already ended, and never pulled from under a run.

Every delivered message used to leave its watchdog to run 20 to 45 s later and find nothing to
do: an RQ job per message the worker paid for after the fact.
"""

from __future__ import annotations

from dataclasses import replace

import redis
from rq import Queue
from rq.job import Job
from rq.registry import ScheduledJobRegistry

from bridge.outbound.intake import SEND_QUEUE, Intake
from bridge.outbound.messages import MessageRecord, MessageStatus, MessageStore
from bridge.outbound.outcomes import CHECK_FUNC, Outbound, check_job_id

ALICE = "sip:alice@contoso.com"


def posted(client: redis.Redis, outbound: Outbound, delay_s: float = 60) -> MessageRecord:
    """A message whose first attempt was posted, its watchdog scheduled as the worker does."""
    record = Intake(client, outbound.store).submit(
        MessageRecord.new(to=ALICE, text="x", validity_s=300)
    )

    def post(current: MessageRecord) -> MessageRecord:
        return replace(current, status=MessageStatus.SENDING, step="invited", attempts=1)

    def watch(pipe: redis.client.Pipeline, updated: MessageRecord) -> None:
        outbound.watch_outcome(pipe, updated, delay_s)

    return outbound.store.update(record.id, post, watch)


def scheduled(client: redis.Redis) -> list[str]:
    return ScheduledJobRegistry(SEND_QUEUE, connection=client).get_job_ids()


def test_the_watchdog_is_scheduled_with_the_post_and_taken_off_by_the_outcome(
    redis_client: redis.Redis,
) -> None:
    outbound = Outbound(redis_client, MessageStore(redis_client))
    record = posted(redis_client, outbound)
    watchdog = check_job_id(record.id, 1)
    assert scheduled(redis_client) == [watchdog]
    job = Job.fetch(watchdog, connection=redis_client)
    assert (job.func_name, job.args) == (CHECK_FUNC, (record.id,))

    final = outbound.finalize(record.id, MessageStatus.DELIVERED)

    assert final is not None and final.status is MessageStatus.DELIVERED
    assert scheduled(redis_client) == []
    assert not redis_client.exists(Job.key_for(watchdog))


def test_every_final_status_takes_it_off(redis_client: redis.Redis) -> None:
    outbound = Outbound(redis_client, MessageStore(redis_client))
    for status in (MessageStatus.FAILED, MessageStatus.EXPIRED):
        record = posted(redis_client, outbound)
        outbound.finalize(record.id, status)
        assert check_job_id(record.id, 1) not in scheduled(redis_client)


def test_no_watchdog_for_a_message_the_outcome_already_ended(redis_client: redis.Redis) -> None:
    outbound = Outbound(redis_client, MessageStore(redis_client))
    record = Intake(redis_client, outbound.store).submit(
        MessageRecord.new(to=ALICE, text="x", validity_s=300)
    )
    outbound.finalize(record.id, MessageStatus.DELIVERED)  # the event overtook the worker

    def watch(pipe: redis.client.Pipeline, updated: MessageRecord) -> None:
        outbound.watch_outcome(pipe, updated, 60)

    outbound.store.update(record.id, lambda current: current, watch)

    assert scheduled(redis_client) == []
    assert not list(redis_client.scan_iter("rq:job:check-*"))


def test_a_watchdog_already_queued_is_left_to_run(redis_client: redis.Redis) -> None:
    outbound = Outbound(redis_client, MessageStore(redis_client))
    record = posted(redis_client, outbound, delay_s=0)
    watchdog = check_job_id(record.id, 1)
    # RQ's scheduler moved it to the queue: a worker may be about to run it.
    queue = Queue(SEND_QUEUE, connection=redis_client)
    registry = ScheduledJobRegistry(SEND_QUEUE, connection=redis_client)
    queue.enqueue_job(Job.fetch(watchdog, connection=redis_client))
    registry.remove(watchdog)

    outbound.finalize(record.id, MessageStatus.DELIVERED)

    assert redis_client.exists(Job.key_for(watchdog))
    assert watchdog in queue.job_ids
