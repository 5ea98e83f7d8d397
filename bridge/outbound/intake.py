"""Accepting a message: record, recipient FIFO entry and RQ send job in one MULTI/EXEC or script.

Either all of them land in Redis or none does; only then may the API answer 202.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import redis
from redis.client import Pipeline
from rq import Queue

from bridge.outbound.job_template import JobTemplate
from bridge.outbound.messages import (
    ACCEPT_FUNCTION,
    MessageRecord,
    MessageStatus,
    MessageStore,
    parse_time,
    recipient_key,
)
from bridge.session.conversations import ConversationRegistry

SEND_QUEUE = "send"
# One send job is one UCWA POST (5 s connect + 30 s read at worst) and some Redis work; the
# limit only matters when something hangs. Pod grace periods must exceed it.
SEND_JOB_TIMEOUT_S = 120
SEND_FUNC = "workers.send.send_message"  # a dotted path, so bridge never imports workers
RELEASE_FUNC = "workers.send.release_message"  # a scheduled message falls due
MAX_INTAKE_RETRIES = 20
# Commands RQ queues for a job that the gated script may replay: each has exactly one key, its
# first argument. Anything else (a future RQ's new bookkeeping) falls back to two round trips.
_REPLAYABLE = frozenset({b"SADD", b"HSET", b"HMSET", b"RPUSH", b"LPUSH", b"ZADD", b"EXPIRE"})

# After the gate (a Lua function ``gate(key, args)`` prepended to this) lets the message in:
# number it, append it to its line, save it, then replay the job's commands captured from RQ.
# KEYS: the gate's key, those of ``accept`` (four, then the indexes), one per replayed command.
# ARGV: the gate's argument count and arguments, the seven of ``accept`` (the last the number of
# index keys), then per replayed command its argument count, its name and its arguments after
# the key.
_GATED_INTAKE = (
    ACCEPT_FUNCTION
    + """
local gate_argc = tonumber(ARGV[1])
local reply = gate(KEYS[1], {unpack(ARGV, 2, gate_argc + 1)})
if reply[1] == 0 then
  return reply
end
local i = gate_argc + 2
local indexes = tonumber(ARGV[i + 6])
local sequence = accept(KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[i], ARGV[i + 1], ARGV[i + 2],
                        ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], {unpack(KEYS, 6, 5 + indexes)})
i = i + 7
for k = 6 + indexes, #KEYS do
  local argc = tonumber(ARGV[i])
  redis.call(ARGV[i + 1], KEYS[k], unpack(ARGV, i + 2, i + 1 + argc))
  i = i + 2 + argc
end
reply[#reply + 1] = sequence
return reply
"""
)
_GATE_ALONE = "return gate(KEYS[1], ARGV)\n"

# Many messages in one script call: all of them stored, numbered, indexed and enqueued, or none
# (a script runs whole, and Redis refuses one that would write past maxmemory before it starts).
# Prepended: ACCEPT_FUNCTION and a ``gate(key, args)`` (``_NO_GATE`` when none).
# KEYS: [gate key], the batch record's key, [the idempotency key], then per message the keys of
# ``accept`` (four, then its indexes) and one per replayed RQ command.
# ARGV: gated (1/0) [gate argc, gate args], the batch record and its TTL, idempotent (1/0)
# [claim token, the stored answer, its TTL], the message count, then per message the seven of
# ``accept``, its command count and per command: argc, name, the arguments after the key.
# Replies the gate's reply ({1} without a gate), or {-1} when the idempotency claim was lost.
_BATCH_INTAKE = """
local k, a = 1, 1
local gated = ARGV[a] == '1'
local gate_key, gate_args
if gated then
  local argc = tonumber(ARGV[a + 1])
  gate_key, gate_args = KEYS[k], {unpack(ARGV, a + 2, a + 1 + argc)}
  k, a = k + 1, a + 2 + argc
else
  a = a + 1
end
local batch_key, batch, batch_ttl = KEYS[k], ARGV[a], ARGV[a + 1]
k, a = k + 1, a + 2
local claim_key, claim_value, claim_ttl
if ARGV[a] == '1' then
  claim_key = KEYS[k]
  local raw = redis.call('GET', claim_key)
  if not raw or cjson.decode(raw)['token'] ~= ARGV[a + 1] then
    return {-1}
  end
  claim_value, claim_ttl = ARGV[a + 2], ARGV[a + 3]
  k, a = k + 1, a + 4
else
  a = a + 1
end
local reply = {1}
if gated then
  reply = gate(gate_key, gate_args)
  if reply[1] == 0 then
    return reply
  end
end
redis.call('SET', batch_key, batch, 'EX', batch_ttl)
if claim_key then
  redis.call('SET', claim_key, claim_value, 'EX', claim_ttl)
end
local count = tonumber(ARGV[a])
a = a + 1
for _ = 1, count do
  local indexes = tonumber(ARGV[a + 6])
  accept(KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], ARGV[a], ARGV[a + 1], ARGV[a + 2],
         ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], {unpack(KEYS, k + 4, k + 3 + indexes)})
  k, a = k + 4 + indexes, a + 7
  local commands = tonumber(ARGV[a])
  a = a + 1
  for _ = 1, commands do
    local argc = tonumber(ARGV[a])
    redis.call(ARGV[a + 1], KEYS[k], unpack(ARGV, a + 2, a + 1 + argc))
    k, a = k + 1, a + 2 + argc
  end
end
return reply
"""
_NO_GATE = "local function gate(key, args) return {1} end\n"


def send_job_id(message_id: str) -> str:
    return f"send-{message_id}"


def release_job_id(message_id: str) -> str:
    return f"release-{message_id}"


class IntakeError(Exception):
    """Base of intake errors."""


class IntakeConflict(IntakeError):
    """A guard's precondition no longer holds (e.g. an idempotency claim was lost)."""


class TransactionGuard(Protocol):
    """Something that must hold, and be written, in the same transaction as the message."""

    @property
    def watched_keys(self) -> Sequence[str]: ...

    def check(self, pipe: Pipeline) -> None:
        """Read the watched keys (immediate mode); raise ``IntakeConflict`` to abort."""

    def write(self, pipe: Pipeline, record: MessageRecord) -> None:
        """Queue writes inside the MULTI, after the record and the job."""


@dataclass(frozen=True)
class Batch:
    """The record of a batch (a broadcast), stored with its messages under ``key``."""

    key: str
    value: str
    ttl_s: int


@dataclass(frozen=True)
class ClaimWrite:
    """An Idempotency-Key claim to check (still ``token``'s) and complete with ``value``."""

    key: str
    token: str
    value: str
    ttl_s: int


@dataclass(frozen=True)
class Gate:
    """A check that decides, in the intake's own script, whether the message may be stored.

    ``lua`` defines ``local function gate(key, args)`` returning a list whose first element is
    1 (store the message) or 0 (store nothing); the list is handed back to the caller.
    """

    lua: str
    key: str
    args: tuple[str, ...]


class Intake:
    """Stores new messages and enqueues their send jobs atomically."""

    def __init__(
        self,
        client: redis.Redis,
        store: MessageStore,
        *,
        job_timeout_s: int = SEND_JOB_TIMEOUT_S,
        result_ttl_s: int = 0,  # the record holds the outcome; a finished job only uses memory
        failure_ttl_s: int = 7 * 86_400,
    ) -> None:
        self._redis = client
        self._store = store
        self._queue = Queue(SEND_QUEUE, connection=client)
        self._job_timeout_s = job_timeout_s
        self._result_ttl_s = result_ttl_s
        self._failure_ttl_s = failure_ttl_s
        self._gated_scripts: dict[str, Any] = {}
        self._template: JobTemplate | bool | None = False  # False: not learnt yet

    def with_line(self, record: MessageRecord) -> MessageRecord:
        """``record`` with its recipient's line: one line per remote person, whether a message
        names them (``to``) or replies into a conversation with them. A reply into a conversation
        the registry does not know keeps a line of its own (it fails when it is sent)."""
        if record.line is not None or record.to is not None or record.conversation is None:
            return record
        conversation = ConversationRegistry(self._redis, "").get(record.conversation)
        if conversation is None or not conversation.remote:
            return record
        return replace(record, line=recipient_key(conversation.remote, None, record.account))

    def submit_gated(
        self, record: MessageRecord, gate: Gate
    ) -> tuple[list[Any], MessageRecord | None]:
        """Run ``gate`` and, only if it lets the message in, store it as ``submit`` does, in
        one script call: one round trip, atomic as the MULTI/EXEC. Returns the gate's reply
        and the stored record (None when the gate refused).
        """
        record = self.with_line(record)
        job_commands = self._job_commands(record)
        if job_commands is None:
            reply = list(self._script(gate.lua + _GATE_ALONE)(keys=[gate.key], args=gate.args))
            return reply, (self.submit(record) if reply[0] == 1 else None)
        accept_keys, accept_args = self._store.accept_arguments(record)
        job_keys, job_args = _replayed(job_commands)
        keys: list[Any] = [gate.key, *accept_keys, *job_keys]
        args: list[Any] = [len(gate.args), *gate.args, *accept_args, *job_args]
        reply = list(self._script(gate.lua + _GATED_INTAKE)(keys=keys, args=args))
        if reply[0] != 1:
            return reply, None
        return reply[:-1], replace(record, sequence=int(reply[-1]))

    def submit_batch(
        self,
        records: Sequence[MessageRecord],
        batch: Batch,
        gate: Gate | None = None,
        claim: ClaimWrite | None = None,
    ) -> list[Any]:
        """Store ``records`` (numbered in their lines, indexed, their jobs enqueued), the
        ``batch`` record and the completed ``claim`` in one script call, or none of it: when
        the gate refuses (its reply comes back), when the claim was lost (``IntakeConflict``),
        and when Redis refuses writes (the script is refused before it starts). Returns the
        gate's reply, ``[1]`` without a gate."""
        keys: list[Any] = []
        args: list[Any] = []
        if gate is not None:
            keys.append(gate.key)
            args += [1, len(gate.args), *gate.args]
        else:
            args.append(0)
        keys.append(batch.key)
        args += [batch.value, batch.ttl_s]
        if claim is not None:
            keys.append(claim.key)
            args += [1, claim.token, claim.value, claim.ttl_s]
        else:
            args.append(0)
        args.append(len(records))
        for record in records:
            commands = self._job_commands(record)
            if commands is None:
                raise IntakeError("RQ queued a command the batch script cannot replay")
            accept_keys, accept_args = self._store.accept_arguments(record)
            job_keys, job_args = _replayed(commands)
            keys += [*accept_keys, *job_keys]
            args += [*accept_args, len(commands), *job_args]
        source = ACCEPT_FUNCTION + (gate.lua if gate is not None else _NO_GATE) + _BATCH_INTAKE
        reply = list(self._script(source)(keys=keys, args=args))
        if reply[0] == -1:
            raise IntakeConflict("the idempotency claim expired before the batch was stored")
        return reply

    def _script(self, source: str) -> Any:
        # EVALSHA, falling back to EVAL after a NOSCRIPT (Redis restarted): outside MULTI a
        # failed call changed nothing, so repeating it is safe.
        script = self._gated_scripts.get(source)
        if script is None:
            script = self._gated_scripts[source] = self._redis.register_script(source)
        return script

    def _job_commands(self, record: MessageRecord) -> list[tuple[Any, ...]] | None:
        """The commands RQ queues to enqueue ``record``'s send job, or None if one of them
        cannot be replayed in a script. A send job due now comes from the template learnt from
        RQ (``job_template``); a scheduled one, and every job when none was learnt, from RQ."""
        template = self._send_template(record)
        if template is not None:
            return template.build(record.id)
        return self._rq_job_commands(record)

    def _send_template(self, record: MessageRecord) -> JobTemplate | None:
        """The template of ``record``'s job when it is a send job due now, learnt from RQ once
        (None: a scheduled message's job, or no template: RQ builds it)."""
        if record.status is MessageStatus.SCHEDULED:
            return None
        if self._template is False:
            self._template = JobTemplate.learn(self._rq_send_commands, SEND_FUNC)
        return self._template if isinstance(self._template, JobTemplate) else None

    def _rq_send_commands(self, message_id: str) -> list[tuple[Any, ...]] | None:
        probe = MessageRecord.new(to="sip:probe@invalid", text="-", validity_s=60)
        return self._rq_job_commands(replace(probe, id=message_id))

    def _rq_job_commands(self, record: MessageRecord) -> list[tuple[Any, ...]] | None:
        with self._redis.pipeline() as pipe:
            pipe.multi()
            self._rq_enqueue(record, pipe)
            commands = [args for args, _options in pipe.command_stack]
        for command in commands:
            name = command[0].encode() if isinstance(command[0], str) else command[0]
            if name.upper() not in _REPLAYABLE or len(command) < 3:
                return None
        return commands

    def submit(self, record: MessageRecord, guard: TransactionGuard | None = None) -> MessageRecord:
        """Persist ``record`` with the next sequence number for its recipient and enqueue it.

        The numbering, the line entry, the record and the job are one MULTI/EXEC, so the
        sequence order equals the line order even when several API processes accept messages
        for one recipient at once. Without a guard that is a single round trip to Redis.
        """
        record = self.with_line(record)
        with self._redis.pipeline() as pipe:
            if guard is None:
                pipe.multi()
                return self._execute(pipe, record)
            for _ in range(MAX_INTAKE_RETRIES):
                try:
                    if guard.watched_keys:
                        pipe.watch(*guard.watched_keys)
                    guard.check(pipe)
                    pipe.multi()
                    return self._execute(pipe, record, guard)
                except redis.WatchError:
                    continue
                finally:
                    pipe.reset()
        raise IntakeConflict("the guarded keys kept changing while the message was stored")

    def _execute(
        self, pipe: Pipeline, record: MessageRecord, guard: TransactionGuard | None = None
    ) -> MessageRecord:
        self._store.accept(record, pipe)
        self._enqueue(record, pipe)
        if guard is not None:
            guard.write(pipe, record)
        sequence = pipe.execute()[0]
        return replace(record, sequence=int(sequence))

    def _enqueue(self, record: MessageRecord, pipe: Pipeline) -> None:
        """Queue ``record``'s job on ``pipe``: a send job due now from the template learnt from
        RQ (``_job_commands``), any other job as RQ builds it."""
        template = self._send_template(record)
        if template is None:
            self._rq_enqueue(record, pipe)
            return
        for command in template.build(record.id):
            pipe.execute_command(*command)

    def _rq_enqueue(self, record: MessageRecord, pipe: Pipeline) -> None:
        if record.status is MessageStatus.SCHEDULED and record.send_at is not None:
            # RQ's scheduler (every worker runs one) moves the job to the queue when it is due.
            # It keeps whole seconds, cut down: rounded up, the job never runs before send_at.
            self._queue.enqueue_at(
                datetime.fromtimestamp(math.ceil(parse_time(record.send_at)), UTC),
                RELEASE_FUNC,
                record.id,
                job_id=release_job_id(record.id),
                job_timeout=self._job_timeout_s,
                result_ttl=self._result_ttl_s,
                failure_ttl=self._failure_ttl_s,
                description=f"release {record.id}",
                pipeline=pipe,
            )
            return
        self._queue.enqueue_call(
            SEND_FUNC,
            args=(record.id,),
            job_id=send_job_id(record.id),
            timeout=self._job_timeout_s,
            result_ttl=self._result_ttl_s,
            failure_ttl=self._failure_ttl_s,
            description=f"send {record.id}",
            pipeline=pipe,
        )


def _replayed(commands: Sequence[tuple[Any, ...]]) -> tuple[list[Any], list[Any]]:
    """KEYS and ARGV that replay RQ's ``commands`` in an intake script: per command its key,
    and its argument count, name and the arguments after the key."""
    keys: list[Any] = []
    args: list[Any] = []
    for name, key, *rest in commands:
        keys.append(key)
        args += [len(rest), name, *rest]
    return keys, args
