"""Accepting a message: record, recipient FIFO entry and RQ send job in one MULTI/EXEC.

Either all of them land in Redis or none does; only then may the API answer 202.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

import redis
from redis.client import Pipeline
from rq import Queue

from bridge.messages import MessageRecord, MessageStore, fifo_key, sequence_key

SEND_QUEUE = "send"
# One send job is one UCWA POST (5 s connect + 30 s read at worst) and some Redis work; the
# limit only matters when something hangs. Pod grace periods must exceed it.
SEND_JOB_TIMEOUT_S = 120
SEND_FUNC = "workers.send.send_message"  # a dotted path, so bridge never imports workers
MAX_INTAKE_RETRIES = 20


def send_job_id(message_id: str) -> str:
    return f"send-{message_id}"


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


class Intake:
    """Stores new messages and enqueues their send jobs atomically."""

    def __init__(
        self,
        client: redis.Redis,
        store: MessageStore,
        *,
        job_timeout_s: int = SEND_JOB_TIMEOUT_S,
        result_ttl_s: int = 86_400,
        failure_ttl_s: int = 7 * 86_400,
    ) -> None:
        self._redis = client
        self._store = store
        self._queue = Queue(SEND_QUEUE, connection=client)
        self._job_timeout_s = job_timeout_s
        self._result_ttl_s = result_ttl_s
        self._failure_ttl_s = failure_ttl_s

    def submit(self, record: MessageRecord, guard: TransactionGuard | None = None) -> MessageRecord:
        """Persist ``record`` with the next sequence number for its recipient and enqueue it.

        The sequence counter is watched so the sequence order equals the FIFO order even when
        two API processes accept messages for the same recipient at once.
        """
        recipient = record.recipient
        seq_key = sequence_key(recipient)
        watched = [seq_key, *(guard.watched_keys if guard else ())]
        with self._redis.pipeline() as pipe:
            for _ in range(MAX_INTAKE_RETRIES):
                try:
                    pipe.watch(*watched)
                    sequence = int(pipe.get(seq_key) or 0) + 1
                    if guard is not None:
                        guard.check(pipe)
                    stored = replace(record, sequence=sequence)
                    pipe.multi()
                    pipe.set(seq_key, sequence)
                    pipe.rpush(fifo_key(recipient), stored.id)
                    self._store.create(stored, pipe)
                    self._queue.enqueue_call(
                        SEND_FUNC,
                        args=(stored.id,),
                        job_id=send_job_id(stored.id),
                        timeout=self._job_timeout_s,
                        result_ttl=self._result_ttl_s,
                        failure_ttl=self._failure_ttl_s,
                        description=f"send {stored.id}",
                        pipeline=pipe,
                    )
                    if guard is not None:
                        guard.write(pipe, stored)
                    pipe.execute()
                    return stored
                except redis.WatchError:
                    continue
                finally:
                    pipe.reset()
        raise IntakeConflict("too many concurrent writers for one recipient")
