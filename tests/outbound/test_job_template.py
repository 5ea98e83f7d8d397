"""Send jobs filled into a template learnt from RQ: for any message id the commands are RQ's own
(timestamps aside), RQ reads the job back as the one it would have written, and a template that
does not reproduce RQ is never used."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rq import Queue
from rq.job import Job
from rq.registry import ScheduledJobRegistry
from rq.scheduler import RQScheduler

from bridge.outbound.intake import SEND_FUNC, SEND_QUEUE, Gate, Intake
from bridge.outbound.job_template import Command, JobTemplate
from bridge.outbound.messages import MessageRecord, MessageStatus, MessageStore
from bridge.outbound.outcomes import CHECK_FUNC, Outbound

IDS = st.from_regex(r"msg_[0-9a-f]{32}", fullmatch=True)


def intake(client: redis.Redis) -> Intake:
    return Intake(client, MessageStore(client))


@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
@given(message_id=IDS)
def test_the_template_writes_what_rq_writes_for_any_id(
    redis_client: redis.Redis, message_id: str
) -> None:
    source = intake(redis_client)
    record = replace(
        MessageRecord.new(to="sip:a@contoso.com", text="x", validity_s=60), id=message_id
    )
    template = JobTemplate.learn(source._rq_send_commands, SEND_FUNC)
    assert template is not None

    made = template.build(message_id, stamp="")
    rq_made = source._rq_job_commands(record)

    assert rq_made is not None
    assert made == template.unstamped(rq_made)
    assert source._job_commands(record)[0] == rq_made[0]  # the intake uses the template


@pytest.mark.parametrize("how", ["gated", "plain"])
def test_rq_reads_a_templated_job_back_as_its_own(redis_client: redis.Redis, how: str) -> None:
    """Both ways in: one script call behind a gate (a rate limit), or a MULTI without one."""
    source = intake(redis_client)
    new = MessageRecord.new(to="sip:a@contoso.com", text="x", validity_s=60)
    if how == "gated":
        admit = Gate("local function gate(key, args) return {1} end\n", "test:gate", ())
        reply, record = source.submit_gated(new, admit)
        assert reply == [1]
    else:
        record = source.submit(new)
    assert record is not None
    assert isinstance(source._template, JobTemplate)  # written from the template

    job = Job.fetch(f"send-{record.id}", connection=redis_client)

    assert (job.func_name, job.args, job.kwargs) == (SEND_FUNC, (record.id,), {})
    assert job.description == f"send {record.id}" and job.origin == SEND_QUEUE
    assert job.timeout == 120 and job.get_status() == "queued" and job.created_at is not None
    assert job.enqueued_at is not None
    assert Queue(SEND_QUEUE, connection=redis_client).job_ids == [job.id]


def test_a_template_that_does_not_reproduce_rq_is_not_used(redis_client: redis.Redis) -> None:
    source = intake(redis_client)

    def one_field_more(message_id: str) -> Sequence[Command] | None:
        commands = source._rq_send_commands(message_id)
        assert commands is not None
        if message_id.endswith("second00"):  # RQ writing a field the first probe lacked
            return [*commands, ("HSET", f"rq:job:send-{message_id}", "extra", "1")]
        return commands

    def not_replayable(message_id: str) -> Sequence[Command] | None:
        return None

    def other_data(message_id: str) -> Sequence[Command] | None:
        commands: list[Any] = [list(c) for c in source._rq_send_commands(message_id) or []]
        for command in commands:
            if "data" in command:
                command[command.index("data") + 1] = b"another serializer"
        return [tuple(c) for c in commands]

    for commands_for in (one_field_more, not_replayable, other_data):
        assert JobTemplate.learn(commands_for, SEND_FUNC) is None, commands_for.__name__


# -- the watchdog a POST schedules ------------------------------------------------------------


def sending(message_id: str, attempts: int = 1) -> MessageRecord:
    record = MessageRecord.new(to="sip:a@contoso.com", text="x", validity_s=60)
    return replace(record, id=message_id, status=MessageStatus.SENDING, attempts=attempts)


def watchdog_commands(outbound: Outbound, record: MessageRecord) -> list[Command]:
    with outbound.client.pipeline() as pipe:
        pipe.multi()
        outbound.watch_outcome(pipe, record, 30)
        return [tuple(args) for args, _options in pipe.command_stack]


@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
@given(message_id=IDS, attempts=st.integers(min_value=1, max_value=3))
def test_a_watchdog_from_the_template_is_what_rq_schedules_for_any_id(
    redis_client: redis.Redis, message_id: str, attempts: int
) -> None:
    outbound = Outbound(redis_client)
    record = sending(message_id, attempts)
    at_s = time.time() + 30
    with redis_client.pipeline() as pipe:
        pipe.multi()
        outbound._schedule_check(pipe, message_id, attempts, at_s)
        rq_made = [tuple(args) for args, _options in pipe.command_stack]
    template = outbound._first_check_template()
    assert template is not None

    made = watchdog_commands(outbound, record)

    # the job's commands, timestamps aside, and its place on the schedule to the second
    assert template.unstamped(made[:-1]) == template.unstamped(rq_made[:-1])
    assert made[-1][:2] == rq_made[-1][:2] == ("ZADD", "rq:scheduled:send")
    assert abs(int(made[-1][2]) - int(rq_made[-1][2])) <= 1
    assert made[-1][3] == rq_made[-1][3] == f"check-{message_id}-a{attempts}"


def test_rq_reads_a_templated_watchdog_back_and_runs_it_when_due(redis_client: redis.Redis) -> None:
    outbound = Outbound(redis_client)
    record = sending("msg_" + "ab" * 16)
    with redis_client.pipeline() as pipe:
        pipe.multi()
        job_id = outbound.watch_outcome(pipe, record, 0.1)
        pipe.execute()
    assert job_id == f"check-{record.id}-a1"

    job = Job.fetch(job_id, connection=redis_client)

    assert (job.func_name, job.args, job.kwargs) == (CHECK_FUNC, (record.id,), {})
    assert job.get_status() == "scheduled" and job.description == f"check_message {record.id}"
    assert (job.retries_left, job.retry_intervals) == (3, [1, 5, 15])
    assert (job.timeout, job.result_ttl, job.failure_ttl) == (120, 0, 7 * 86_400)
    scheduled = ScheduledJobRegistry(queue=Queue(SEND_QUEUE, connection=redis_client))
    assert scheduled.get_job_ids() == [job_id]
    time.sleep(1.2)  # RQ keeps whole seconds, rounded up
    scheduler = RQScheduler([SEND_QUEUE], connection=redis_client)
    scheduler.acquire_locks()
    scheduler.enqueue_scheduled_jobs()
    scheduler.release_locks()
    assert Queue(SEND_QUEUE, connection=redis_client).job_ids == [job_id]
    assert Job.fetch(job_id, connection=redis_client).get_status() == "queued"
