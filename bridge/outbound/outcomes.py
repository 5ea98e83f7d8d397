"""Finishing outbound messages and starting the next one for the same recipient.

The send job, the poller and the watchdog all end a message through ``Outbound.finalize``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import redis
from rq import Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.registry import ScheduledJobRegistry

from bridge.config.redis_text import text, text_map
from bridge.config.rq_schedule import schedule_job
from bridge.outbound.intake import SEND_FUNC, SEND_JOB_TIMEOUT_S, SEND_QUEUE, release_job_id
from bridge.outbound.job_template import JobTemplate
from bridge.outbound.message_index import line_scope, status_key
from bridge.outbound.messages import (
    CANCELLED_CODE,
    IllegalTransition,
    MessageError,
    MessageNotFound,
    MessageRecord,
    MessageStatus,
    MessageStore,
    NextUp,
    NotCancellable,
    RecipientQueue,
    UcwaFault,
    parse_time,
    record_key,
    utc_now,
)
from bridge.session.conversations import ConversationLog, conversation_id
from bridge.ucwa.events import Reason
from bridge.ucwa.failures import RetryClass, classify_failure

log = logging.getLogger(__name__)

CHECK_FUNC = "workers.send.check_message"
OP_TTL_S = 86_400
# RQ retries a job whose worker died (an "abandoned" job) only while it has retries left.
CRASH_RETRY = Retry(max=3, interval=[1, 5, 15])

StatusHook = Callable[[redis.client.Pipeline, MessageRecord], None]

# The watchdog job's template (``Outbound._first_check_template``); False: not learnt yet.
_check_template: JobTemplate | bool | None = False


class _AlreadyCancelled(Exception):
    """Aborts a cancel's update: the record is cancelled already, nothing to write."""

    def __init__(self, record: MessageRecord) -> None:
        super().__init__(record.id)
        self.record = record


class _NotScheduled(Exception):
    """Aborts a release's update: the message is no longer scheduled (released or ended)."""

    def __init__(self, record: MessageRecord) -> None:
        super().__init__(record.id)
        self.record = record


# The most scheduled messages of one line a release looks at: the oldest first.
MAX_DUE = 1_000


def check_job_id(message_id: str, attempt: int) -> str:
    """The watchdog an attempt schedules for its outcome: one id per attempt, so the message's
    final transition, which knows its attempt, can take it off the schedule. Re-checks the
    watchdog schedules when it runs get ids of their own."""
    return f"check-{message_id}-a{attempt}"


# Takes a message's watchdog off the schedule, in its final transition's MULTI. Only a job still
# on the schedule is deleted: one already queued or running finds the message final and ends.
_UNSCHEDULE_CHECK = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then redis.call('DEL', KEYS[2]) end
return 0
"""


def op_key(operation_id: str) -> str:
    return f"op:{operation_id}"


def href_key(href: str) -> str:
    return f"outhref:{href}"


class Outbound:
    """Enqueues send attempts and finalizes messages, keeping per-recipient order."""

    def __init__(
        self,
        client: redis.Redis,
        store: MessageStore | None = None,
        on_final: StatusHook | None = None,
        account: str | None = None,
    ) -> None:
        self.client = client
        self.account = account  # names the conversation a final message went through
        self.store = store or MessageStore(client)
        self.fifo = RecipientQueue(client)
        self.queue = Queue(SEND_QUEUE, connection=client)
        self._scheduled = ScheduledJobRegistry(queue=self.queue)
        self.on_final = on_final

    # -- scheduling -------------------------------------------------------------------------
    def enqueue_send(
        self,
        message_id: str,
        delay_s: float = 0.0,
        func: str = SEND_FUNC,
        run: int | None = None,
    ) -> str:
        """A fresh RQ job for another attempt; the record and a lock keep it at most once.
        ``run``: the run number, when the caller has counted it already."""
        if run is None:
            with self.client.pipeline(transaction=False) as pipe:  # one round trip
                pipe.incr(f"msg:{message_id}:runs")
                pipe.expire(f"msg:{message_id}:runs", self.store.record_ttl_s)
                run = int(pipe.execute()[0])
        job_id = f"{'check' if func == CHECK_FUNC else 'send'}-{message_id}-{run}"
        options: dict[str, Any] = {
            "job_id": job_id,
            "retry": CRASH_RETRY,
            # The record holds the outcome: a finished job and its result would only use memory.
            "result_ttl": 0,
            "failure_ttl": 7 * 86_400,
            "job_timeout": SEND_JOB_TIMEOUT_S,
            "description": f"{func.rsplit('.', 1)[-1]} {message_id}",
        }
        if delay_s > 0:
            self.queue.enqueue_in(timedelta(seconds=delay_s), func, message_id, **options)
        else:
            self.queue.enqueue(func, message_id, **options)
        return job_id

    def schedule_check(self, message_id: str, delay_s: float) -> str:
        """A re-check the watchdog schedules when it runs: it stays on the schedule and runs."""
        return self.enqueue_send(message_id, delay_s, func=CHECK_FUNC)

    def watch_outcome(
        self, pipe: redis.client.Pipeline, record: MessageRecord, delay_s: float
    ) -> str | None:
        """In the MULTI of the record update that records a POST: ask UCWA about the outcome of
        ``record``'s attempt after ``delay_s`` unless it arrives first. The final transition
        (``_on_final``) takes this watchdog off the schedule. Nothing when ``record`` is final
        already: the outcome overtook the update, and nothing is left to watch."""
        if record.status.is_terminal:
            return None
        job_id = check_job_id(record.id, record.attempts)
        at_s = time.time() + delay_s
        template = self._first_check_template() if record.attempts == 1 else None
        if template is None:
            self._schedule_check(pipe, record.id, record.attempts, at_s)
            return job_id
        # A first attempt's watchdog (nearly all of them) from the template learnt from RQ, its
        # time on the schedule as ``schedule_job`` sets it: RQ built a job per send.
        for command in template.build(record.id):
            pipe.execute_command(*command)
        pipe.zadd(self._scheduled.key, {job_id: math.ceil(at_s)})
        return job_id

    def _schedule_check(
        self, pipe: redis.client.Pipeline, message_id: str, attempt: int, at_s: float
    ) -> None:
        schedule_job(
            pipe,
            self.queue,
            CHECK_FUNC,
            at_s,
            job_id=check_job_id(message_id, attempt),
            args=(message_id,),
            retry=CRASH_RETRY,
            result_ttl=0,
            failure_ttl=7 * 86_400,
            timeout=SEND_JOB_TIMEOUT_S,
            description=f"check_message {message_id}",
        )

    def _first_check_template(self) -> JobTemplate | None:
        """The commands of a first attempt's watchdog job but its place on the schedule, learnt
        once per process from what ``schedule_job`` queues (None: RQ builds each)."""
        global _check_template
        if _check_template is False:
            _check_template = JobTemplate.learn(self._rq_check_commands, CHECK_FUNC)
        return _check_template if isinstance(_check_template, JobTemplate) else None

    def _rq_check_commands(self, message_id: str) -> list[tuple[Any, ...]]:
        with self.client.pipeline() as pipe:
            pipe.multi()
            self._schedule_check(pipe, message_id, 1, 0.0)
            commands = [tuple(args) for args, _options in pipe.command_stack]
        return [c for c in commands if c[:2] != ("ZADD", self._scheduled.key)]

    def release(self, message_id: str) -> str:
        """A scheduled message fell due: it and every other due message of its line go
        ``queued``, each into the line by accepted order (one transaction with its record),
        then the line's head starts. Releasing the line's due messages together, lowest
        sequence first, keeps accepted order however RQ orders or overlaps the release jobs
        of messages due at the same moment. Running it again changes nothing."""
        try:
            record = self.store.get(message_id)
        except MessageNotFound:
            return "unknown"
        if record.status not in (MessageStatus.SCHEDULED, MessageStatus.QUEUED):
            return record.status.value  # cancelled (or ended) while it waited
        for due in self._due_in_line(record):
            self._release_one(due.id)
        head = self.fifo.head(record.recipient)
        if head is not None:
            try:
                first = self.store.get(head)
            except MessageNotFound:
                first = None
            if first is None or first.step == "queued":
                self.kick(record.recipient)
        return "released"

    def _due_in_line(self, record: MessageRecord) -> list[MessageRecord]:
        """The scheduled messages of ``record``'s line that are due, lowest sequence first."""
        key = status_key(MessageStatus.SCHEDULED.value, line_scope(record))
        ids = [text(m).partition(":")[2] for m in self.client.zrange(key, 0, MAX_DUE - 1)]
        ids = list(dict.fromkeys([record.id, *ids]))
        now = time.time()
        due = []
        for raw in self.client.mget([record_key(i) for i in ids]):
            if raw is None:
                continue
            other = MessageRecord.from_json(raw)
            if (
                other.status is MessageStatus.SCHEDULED
                and other.recipient == record.recipient
                and other.send_at is not None
                and (other.id == record.id or parse_time(other.send_at) <= now)
            ):
                due.append(other)
        return sorted(due, key=lambda r: r.sequence)

    def _release_one(self, message_id: str) -> None:
        def due(record: MessageRecord) -> MessageRecord:
            if record.status is not MessageStatus.SCHEDULED:
                raise _NotScheduled(record)
            history = {**record.history, MessageStatus.QUEUED.value: utc_now()}
            return replace(record, status=MessageStatus.QUEUED, step="queued", history=history)

        life = self.store.record_ttl_s

        def join(pipe: redis.client.Pipeline, record: MessageRecord) -> None:
            self.fifo.join_in_order(pipe, record, life)

        try:
            self.store.update(message_id, due, join)
        except (MessageNotFound, _NotScheduled):
            return  # released by another run, cancelled or gone meanwhile
        log.info("scheduled message due", extra={"message_id": message_id})

    # -- finishing ----------------------------------------------------------------------------
    def finalize(
        self,
        message_id: str,
        status: MessageStatus,
        error: MessageError | None = None,
        record: MessageRecord | None = None,
        **fields: Any,
    ) -> MessageRecord | None:
        """Move to a final status (once), then let the next message to that recipient go.
        ``record``: the message as its caller has just read it (the transition reads it again
        under WATCH), saving a round trip."""
        if record is None or record.id != message_id:
            try:
                record = self.store.get(message_id)
            except MessageNotFound:
                return None
        href = fields.get("conversation_href") or record.conversation_href
        if record.conversation is None and href and self.account:
            # The conversation a cold send opened, so the caller can match the reply to it.
            fields["conversation"] = conversation_id(self.account, href)
        if record.late_success(status):
            # UCWA acted on a POST whose answer was lost, after the message ended unknown.
            log.warning(
                "a message that ended with an unknown outcome was delivered after all",
                extra={"message_id": message_id},
            )
            record = self._safe_transition(message_id, status, **fields) or record
        elif not record.status.is_terminal:
            if record.status == MessageStatus.QUEUED and status == MessageStatus.DELIVERED:
                # Delivered without a recorded sending step (e.g. outcome raced the worker).
                self._safe_transition(message_id, MessageStatus.SENDING)
            if not status.is_terminal:
                record = self._safe_transition(message_id, status, error=error, **fields) or record
            elif ended := self._final_transition(message_id, status, error=error, **fields):
                record, next_up = ended
                self._start_next(record.recipient, next_up)
                return record
        self.advance(record)
        return record

    def _final_transition(
        self, message_id: str, status: MessageStatus, **fields: Any
    ) -> tuple[MessageRecord, NextUp] | None:
        """``_safe_transition`` to a final status, whose transaction also drops the message
        from its line and reads what starting the new head needs (None: it was not allowed)."""
        runs_ttl_s = self.store.record_ttl_s

        def also(pipe: redis.client.Pipeline, record: MessageRecord) -> None:
            self._on_final(pipe, record)
            self.fifo.queue_pop_then_next(pipe, record.recipient, record.id, runs_ttl_s)

        moved = self._transition_answered(message_id, status, also, **fields)
        if moved is None:
            return None
        record, answers = moved
        return record, RecipientQueue.next_up(answers)

    def _start_next(self, recipient: str, next_up: NextUp) -> str | None:
        """``_start`` for the head a final transition read: no read of its own unless that
        head has ended too."""
        head, record = next_up.head, next_up.record
        if head is None:
            return None
        if record is not None and not record.status.is_terminal:
            return self.enqueue_send(head, run=next_up.run)
        _, following = self.fifo.pop_then_head(recipient, head)
        return self._start(recipient, following)

    def cancel(self, message_id: str, reason: str) -> MessageRecord:
        """End a message nothing of which is with UCWA as ``cancelled``, then start the next one
        to that recipient, as after a failure. Cancelling a cancelled message returns it as it
        is (no second event); ``MessageNotFound`` or ``NotCancellable`` otherwise.

        One compare-and-set on the record, as the worker's claim to post is
        (``Sender._claim``): whichever commits first wins, and the other sees it and backs off.
        """

        def stop(record: MessageRecord) -> MessageRecord:
            if record.status is MessageStatus.CANCELLED:
                raise _AlreadyCancelled(record)
            if not record.cancellable:
                raise NotCancellable(record)
            history = {**record.history, MessageStatus.CANCELLED.value: utc_now()}
            error = MessageError(CANCELLED_CODE, reason)
            return replace(record, status=MessageStatus.CANCELLED, history=history, error=error)

        try:
            record = self.store.update(message_id, stop, self._on_final)
        except _AlreadyCancelled as already:
            record = already.record  # a repeat also finishes a cancel cut off before its line
        else:
            log.info("message cancelled", extra={"message_id": message_id, "status": "cancelled"})
        # Behind another message it stays in line until that one ends (``kick`` drops it then);
        # kicking now would only start the head again.
        if self.fifo.pop_if_head(record.recipient, record.id):
            self.kick(record.recipient)
        if MessageStatus.SCHEDULED.value in record.history:
            # Its release job would find it cancelled and do nothing: drop it now instead.
            try:
                registry = ScheduledJobRegistry(queue=self.queue)
                registry.remove(release_job_id(record.id), delete_job=True)
            except NoSuchJobError:
                pass  # released already, or a repeated cancel
        return record

    def _safe_transition(
        self, message_id: str, status: MessageStatus, **fields: Any
    ) -> MessageRecord | None:
        also = self._on_final if status.is_terminal else None
        moved = self._transition_answered(message_id, status, also, **fields)
        return None if moved is None else moved[0]

    def _transition_answered(
        self,
        message_id: str,
        status: MessageStatus,
        also: StatusHook | None,
        **fields: Any,
    ) -> tuple[MessageRecord, list[Any]] | None:
        """The transition and its transaction's answers, logged; None when it is not allowed."""
        try:
            moved = self.store.transition_answered(message_id, status, also, **fields)
        except IllegalTransition:
            return None
        log.info(
            "message %s", status.value, extra={"message_id": message_id, "status": status.value}
        )
        return moved

    def _on_final(self, pipe: redis.client.Pipeline, record: MessageRecord) -> None:
        """In the final transition's transaction: the status hook (webhooks), and the message
        in its conversation's log."""
        if self.on_final is not None:
            self.on_final(pipe, record)
        watchdog = check_job_id(record.id, record.attempts)
        pipe.eval(_UNSCHEDULE_CHECK, 2, self._scheduled.key, Job.key_for(watchdog), watchdog)
        if record.conversation:
            entry = {"direction": "outbound", "message_id": record.id, "at": record.created_at}
            ConversationLog.add(pipe, record.conversation, entry, parse_time(record.created_at))

    def advance(self, record: MessageRecord) -> None:
        """Drop a final message from its recipient's line and start the new head, if any."""
        if not record.status.is_terminal:
            return
        _, head = self.fifo.pop_then_head(record.recipient, record.id)
        self._start(record.recipient, head)

    def kick(self, recipient: str) -> str | None:
        return self._start(recipient, self.fifo.head(recipient))

    def _start(self, recipient: str, head: str | None) -> str | None:
        """Enqueue the send of ``head``, the first in ``recipient``'s line; a head that ended
        or expired out of Redis is dropped first, so it never blocks the line."""
        while head is not None:
            try:
                record = self.store.get(head)
            except MessageNotFound:
                record = None
            if record is not None and not record.status.is_terminal:
                return self.enqueue_send(head)
            _, head = self.fifo.pop_then_head(recipient, head)
        return None

    def settle(
        self,
        message_id: str,
        success: bool,
        reason: Reason | None = None,
        state: str | None = None,
        retry_delay_s: float = 2.0,
        conversation_href: str | None = None,
        record: MessageRecord | None = None,
    ) -> MessageRecord | None:
        """Apply an outcome seen on the event channel or by the watchdog.

        Success → delivered. A failure says nothing reached the recipient, so service trouble
        sends again later; anything else (declined, no answer, offline…) fails with the reason.
        """
        known: dict[str, Any] = (
            {"conversation_href": conversation_href} if conversation_href else {}
        )
        if success:
            return self.finalize(message_id, MessageStatus.DELIVERED, record=record, **known)
        verdict = classify_failure(reason, state)
        fault = UcwaFault(verdict.raw_code, verdict.raw_subcode, verdict.message)
        if verdict.retry is RetryClass.BACKOFF and self._requeue(message_id):
            self.enqueue_send(message_id, retry_delay_s)
            return None
        detail = verdict.message or f"UCWA reported {verdict.code.value}"
        error = MessageError(verdict.code.value, detail, fault)
        return self.finalize(message_id, MessageStatus.FAILED, error=error, record=record, **known)

    def _requeue(self, message_id: str) -> bool:
        """Put a message whose attempt failed in service back to ``queued`` for another go."""

        def back(record: MessageRecord) -> MessageRecord:
            if record.status.is_terminal:
                return record
            return replace(record, step="queued")

        try:
            record = self.store.update(message_id, back)
        except MessageNotFound:
            return False
        return not record.status.is_terminal

    # -- correlation written by the poller ----------------------------------------------------
    def note_operation(self, pipe: redis.client.Pipeline, operation_id: str, **fields: str) -> None:
        pipe.hset(op_key(operation_id), mapping=dict(fields.items()))
        pipe.expire(op_key(operation_id), OP_TTL_S)

    def operation(self, operation_id: str) -> dict[str, str]:
        return text_map(self.client.hgetall(op_key(operation_id)))

    def claim_href(self, href: str, message_id: str) -> dict[str, Any] | None:
        """The worker's half of the Location race: the outcome, if the poller saw it first."""
        with self.client.pipeline() as pipe:
            self.queue_claim_href(pipe, href, message_id)
            return self.claimed_outcome(pipe.execute())

    @staticmethod
    def queue_claim_href(pipe: redis.client.Pipeline, href: str, message_id: str) -> None:
        """``claim_href`` queued on the caller's transaction; ``claimed_outcome`` reads it from
        the transaction's answers, where it must come last."""
        pipe.hset(href_key(href), "message", message_id)
        pipe.expire(href_key(href), OP_TTL_S)
        pipe.hget(href_key(href), "outcome")

    @staticmethod
    def claimed_outcome(answers: list[Any]) -> dict[str, Any] | None:
        outcome = answers[-1]
        return json.loads(outcome) if outcome else None

    def post_href_outcome(self, href: str, outcome: dict[str, Any]) -> str | None:
        """The poller's half: returns the message id if the worker already claimed the href."""
        with self.client.pipeline() as pipe:
            pipe.hset(href_key(href), "outcome", json.dumps(outcome))
            pipe.expire(href_key(href), OP_TTL_S)
            pipe.hget(href_key(href), "message")
            _, _, message = pipe.execute()
        return text(message) if message else None
