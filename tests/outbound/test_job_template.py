"""Send jobs filled into a template learnt from RQ: for any message id the commands are RQ's own
(timestamps aside), RQ reads the job back as the one it would have written, and a template that
does not reproduce RQ is never used."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rq import Queue
from rq.job import Job

from bridge.outbound.intake import SEND_FUNC, SEND_QUEUE, Gate, Intake
from bridge.outbound.job_template import Command, JobTemplate
from bridge.outbound.messages import MessageRecord, MessageStore

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
