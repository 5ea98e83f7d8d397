"""The outbound send state machine, resumable after every step and at most once per message.

queued → posting_<path> → invited | posted → delivered | failed | expired; the poller settles
``invited``/``posted`` from the event channel, the watchdog asks UCWA if no event came. A
message between attempts may be cancelled instead; the claim to post races that cancel fairly.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, TypeVar

import redis
from redis.lock import Lock

from bridge.config.redis_conn import Watched, read_and_watch
from bridge.config.redis_faults import redis_unavailable
from bridge.config.redis_text import text
from bridge.outbound.holders import ProcessLiveness, queue_lock
from bridge.outbound.messages import (
    DEFAULT_ACCOUNT,
    OUTCOME_UNKNOWN,
    MessageError,
    MessageNotFound,
    MessageRecord,
    MessageStatus,
    MessageStore,
    UcwaFault,
    fifo_key,
    record_key,
)
from bridge.outbound.outcomes import Outbound
from bridge.session.client import UcwaClient
from bridge.session.conversations import Conversation, ConversationRegistry
from bridge.session.slot import UcwaSlot
from bridge.session.store import Session, SessionStore, SessionUnavailable
from bridge.session.transport import DeliveryUnknown, NotSent
from bridge.ucwa import errors as ue
from bridge.ucwa.datauri import encode_data_uri, html_to_text
from bridge.ucwa.events import Reason
from bridge.ucwa.links import resolve

log = logging.getLogger(__name__)

# The UCWA operation behind each send path, as metrics and logs name it.
REQUEST_KIND = {"cold": "startMessaging", "warm": "sendMessage", "reopen": "addMessaging"}

WAITING_STEPS = ("invited", "posted")


@dataclass(frozen=True)
class SendSettings:
    """Timings of the send flow (seconds)."""

    invitation_timeout_s: float = 45.0
    message_timeout_s: float = 20.0
    ambiguity_grace_s: float = 5.0
    max_attempts: int = 8
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0
    max_checks: int = 5
    lock_ttl_s: float = 60.0
    ucwa_timeout_s: float = 30.0  # the transport's total deadline for one UCWA exchange

    @property
    def send_lock_ttl_s(self) -> float:
        """Long enough that the lock outlives any one attempt: a POST, a 401 challenge with its
        token grant and the retried POST, each within the UCWA deadline, plus the Redis writes.
        A lock that lapsed mid-POST would let the sweep start a second POST."""
        return max(self.lock_ttl_s, 4 * self.ucwa_timeout_s + 30.0)

    def outcome_window_s(self, path: str | None) -> float:
        """How long an ambiguous POST waits for its outcome on the event channel."""
        waited = self.message_timeout_s if path == "warm" else self.invitation_timeout_s
        return max(waited, self.ambiguity_grace_s)


class Sender:
    """One attempt of one message per call to ``run``; ``check`` is the watchdog."""

    def __init__(
        self,
        client: redis.Redis,
        ucwa: UcwaClient,
        account: str,
        settings: SendSettings | None = None,
        outbound: Outbound | None = None,
        rng: random.Random | None = None,
        account_id: str = DEFAULT_ACCOUNT,
        slot: UcwaSlot | None = None,
        liveness: ProcessLiveness | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.redis = client
        # Set when the worker is asked to stop: a wait for Redis to come back (to give a lock
        # back or undo a lost claim) ends then, so that SIGTERM during an outage is obeyed at
        # once. Nothing is lost by it: the lock names this process and is taken over once the
        # process is gone, and a claim left in place ends as any lost claim does.
        self.stop = stop
        # The worker process named in the send locks this sender takes, so that a run can take
        # over a lock whose process died (``bridge/outbound/holders.py``); None: plain locks.
        self.liveness = liveness
        # The worker process's one UCWA request in flight, shared by its job runners (None: the
        # only runner). A send takes it once its claim's transaction is built, just before the
        # claim is written, and holds it until its POST's answer: a claimed message never waits
        # for it, so a runner killed while it waits has claimed nothing and its message is sent
        # later, not failed as possibly sent.
        self.slot = slot
        self.ucwa = ucwa
        self.settings = settings or SendSettings()
        self.outbound = outbound or Outbound(client, account=account)
        self.store: MessageStore = self.outbound.store
        self.sessions = SessionStore(client, account)
        self.registry = ConversationRegistry(client, account, account_id)
        self.rng = rng or random.Random()
        self.account_id = account_id
        # The senders of the deployment's other accounts, by id: a message goes out through the
        # account it was accepted for, whichever worker runs its job.
        self.peers: dict[str, Sender] = {account_id: self}

    def join(self, others: list[Sender]) -> None:
        """Let every one of ``others`` and this one hand messages to each other by account."""
        group = [self, *others]
        peers = {sender.account_id: sender for sender in group}
        for sender in group:
            sender.peers = peers

    def _seat(self, record: MessageRecord) -> Sender | None:
        """The sender of the record's account (None when that account is not configured)."""
        return self.peers.get(record.account or DEFAULT_ACCOUNT)

    # -- entry points -------------------------------------------------------------------------
    def run(self, message_id: str) -> str:
        return self._locked(message_id, self._run)

    def check(self, message_id: str) -> str:
        """Watchdog: no outcome arrived in time, so ask UCWA about the invitation or message."""
        return self._locked(message_id, self._check)

    def _locked(self, message_id: str, step: Callable[[str, _Read], str]) -> str:
        """One job at a time per message; a second run (RQ may run a job twice) steps aside.

        The lock, the record and this account's session in one round trip: Redis runs the reads
        after the lock's SET, so what they return was read under the lock when it was taken.

        A SET whose answer was lost (Redis ran it and went away, or the connection dropped) may
        have taken the lock: the lock's value read back is this run's token then, so a retry
        that finds it goes on, and a run that cannot reach Redis any more gives it back once
        Redis answers, instead of leaving the message (and its line) locked for the lock's TTL.

        A lock held by a worker process that is gone is taken over in the same round trip
        (``holders.LOCK``), instead of waiting out its TTL.
        """
        ttl_s = self.settings.send_lock_ttl_s
        lock = self.redis.lock(f"lock:send:{message_id}", timeout=ttl_s)
        token = self.liveness.token() if self.liveness else uuid.uuid4().hex.encode()
        lock.local.token = token  # as ``Lock.acquire`` keeps it, for ``release``
        with self.redis.pipeline(transaction=False) as pipe:
            queue_lock(pipe, lock.name, token, ttl_s)
            pipe.get(record_key(message_id))
            self.sessions.queue_read(pipe)
            try:
                (holder, taken_over), raw, session, leased = pipe.execute()
            except redis.RedisError as exc:
                if redis_unavailable(exc):
                    _release(lock, self.stop)  # taken by a script whose answer was lost, or not
                raise
        if taken_over:
            log.info(
                "took over the send lock of a worker that is gone",
                extra={"message_id": message_id},
            )
        if holder != token:
            return "busy"
        held = _HeldLock(lock.name, token)
        entered = _held_lock.set(held)
        try:
            return step(message_id, _Read(raw, self.account_id, (session, leased)))
        finally:
            _held_lock.reset(entered)
            if not held.released:
                _release(lock, self.stop)

    def _session(self, read: _Read | None) -> Session:
        """This account's session: from the job's first round trip when it read this one's."""
        if read is not None and read.account_id == self.account_id:
            return SessionStore.required(*read.session)
        return self.sessions.require()

    # -- the flow -----------------------------------------------------------------------------
    def _run(self, message_id: str, read: _Read) -> str:
        if read.record is None:
            return "unknown"
        record = MessageRecord.from_json(read.record)
        seat = self._seat(record)
        if seat is None:
            return self._unknown_account(record)
        return seat._run_record(record, read)

    def _unknown_account(self, record: MessageRecord) -> str:
        """The record's account is not configured (any more): it cannot be sent as it."""
        if record.status.is_terminal:
            self.outbound.advance(record)
            return "final"
        if record.step.startswith("posting") or record.step in WAITING_STEPS:
            # Something of it may be with UCWA: only that account's events or watchdog can
            # tell, once the account is configured again. Never sent as another account.
            return "waiting"
        self._fail(
            record,
            MessageStatus.FAILED,
            "unknown_account",
            f"the account {record.account!r} is not configured",
        )
        return "failed"

    def _run_record(self, record: MessageRecord, read: _Read | None = None) -> str:
        message_id = record.id
        if record.status.is_terminal:
            self.outbound.advance(record)
            return "final"
        if record.status is MessageStatus.SCHEDULED:
            return "scheduled"  # its release job puts it in line when it is due
        # The head of its line and the conversation it would go to, in one round trip with the
        # record read again under WATCH, for the claim's compare-and-set (its EXEC is then the
        # claim's one round trip). A way out before the claim unwatches as ``claiming`` ends.
        with self.redis.pipeline() as claiming:
            reads = [
                ("LINDEX", fifo_key(record.recipient), 0),
                self.registry.lookup_command(record.conversation, record.to or ""),
            ]
            (head, found), raw = read_and_watch(claiming, reads, record_key(message_id))
            return self._go(record, read, head, found, (claiming, raw))

    def _go(
        self,
        record: MessageRecord,
        read: _Read | None,
        head: Any,
        found: Any,
        watched: Watched,
    ) -> str:
        message_id = record.id
        if head is not None and text(head) != message_id:
            return "parked"  # the message ahead of it starts this one when it ends
        if record.step in WAITING_STEPS:
            return "waiting"
        if record.step.startswith("posting"):
            return self._resolve_ambiguous(record)
        if record.is_expired():  # only ever ``queued`` here: no POST of it can have gone out
            self._fail(record, MessageStatus.EXPIRED, "expired", "validity ran out before sending")
            return "expired"
        try:
            session = self._session(read)
        except SessionUnavailable as exc:
            return self._retry(record, "no_session", str(exc))
        return self._attempt(record, session, ConversationRegistry.looked_up(found), watched)

    def _attempt(
        self,
        record: MessageRecord,
        session: Session,
        conversation: Conversation | None,
        watched: Watched | None = None,
    ) -> str:
        self.ucwa.adopt(session.base_url, session.token, session.token_expires_at)
        if record.conversation and conversation is None:
            self._fail(
                record,
                MessageStatus.FAILED,
                "unknown_conversation",
                f"no conversation {record.conversation}",
            )
            return "failed"
        path, href, request = self._plan(record, session, conversation)
        if href is None:
            return self._retry(record, "no_session", "the session lacks the startMessaging link")
        hold = _SlotHold(self.slot)
        try:
            claimed = self._claim(record, path, watched, before_write=hold.take)
            if claimed is None:
                hold.release()
                return self._stand_down(record.id)
            record, follow = claimed
            try:
                return self._post(record, session, conversation, path, href, request, follow, hold)
            finally:
                if follow is not None:
                    follow[0].reset()  # a no-op when the step after the POST took it
        finally:
            hold.release()

    def _post(
        self,
        record: MessageRecord,
        session: Session,
        conversation: Conversation | None,
        path: str,
        href: str,
        request: dict[str, Any],
        follow: Watched | None,
        hold: _SlotHold | None = None,
    ) -> str:
        """The claimed POST and the step after it; ``follow``: the record, watched since the
        claim, for that step's first try; ``hold``: the UCWA slot, given back with the answer."""
        try:
            try:
                if hold is not None:
                    hold.take()  # taken already by the claim, as a rule
                response = self.ucwa.request("POST", href, kind=REQUEST_KIND[path], **request)
            finally:
                if hold is not None:
                    hold.release()  # the next runner's POST may go while this one records
        except NotSent as exc:
            self._mark(record, step="queued", watched=follow)
            return self._retry(record, "ucwa_unreachable", str(exc))
        except DeliveryUnknown:
            # It may have been sent: only the event channel can tell now, and it is never sent
            # again (see ``_resolve_ambiguous``). The wait counts from now, when the answer was
            # lost: a server that answers late may act on the POST after a read timeout.
            return self._ambiguous(record)
        except ue.UcwaError as exc:
            return self._handle_error(record, exc, path, conversation, session.generation)
        finally:
            self.publish_token(session)
        location = response.header("Location")
        if not location:
            self._mark(record, step="queued", watched=follow)
            return self._retry(record, "ucwa_protocol", f"{path} answered without a Location")
        absolute = resolve(session.base_url, location)
        if path == "warm":
            # The step, its watchdog and the worker's half of the Location race, in one
            # transaction: the outcome comes back if the poller saw it first.
            record, answers = self._mark_answered(
                record,
                self.settings.message_timeout_s,
                partial(self.outbound.queue_claim_href, href=absolute, message_id=record.id),
                release=True,
                watched=follow,
                step="posted",
                message_href=absolute,
                conversation_href=conversation.href if conversation else None,
            )
            outcome = self.outbound.claimed_outcome(answers)
            if outcome is not None:
                self.settle(record.id, outcome)
                return "settled"
            return "posted"
        self._mark(
            record,
            watch_s=self.settings.invitation_timeout_s,
            release=True,
            watched=follow,
            step="invited",
            invitation_href=absolute,
        )
        return "invited"

    def _plan(
        self, record: MessageRecord, session: Session, conversation: Conversation | None
    ) -> tuple[str, str | None, dict[str, Any]]:
        generation = session.generation
        if conversation is not None and conversation.can_send(generation):
            html_ok = "Html" in conversation.formats
            if record.html is not None and html_ok:
                content, ctype = record.html, "text/html; charset=utf-8"
            else:
                content = (
                    record.text if record.text is not None else html_to_text(record.html or "")
                )
                ctype = "text/plain; charset=utf-8"
            return (
                "warm",
                conversation.links["sendMessage"],
                {
                    "content": content,
                    "content_type": ctype,
                    "params": {"operationId": record.id},
                },
            )
        body: dict[str, Any] = {
            "operationId": record.id,
            "_links": {"message": {"href": _first_message(record)}},
        }
        if conversation is not None and conversation.can_add_messaging(generation):
            return "reopen", conversation.links["addMessaging"], {"json": body}
        to = record.to or (conversation.remote if conversation else None)
        body.update({"to": to, "importance": record.importance})
        if record.subject:
            body["subject"] = record.subject
        if conversation is not None and conversation.thread_id:
            body["threadId"] = conversation.thread_id
        return "cold", session.link("startMessaging"), {"json": body}

    # -- outcomes -------------------------------------------------------------------------------
    def settle(self, message_id: str, outcome: dict[str, Any]) -> None:
        """Apply an outcome recorded as plain data (Success, or Failure with a reason)."""
        self.outbound.settle(
            message_id,
            outcome.get("status") == "Success",
            Reason.parse(outcome.get("reason")),
            outcome.get("state"),
        )

    def _check(self, message_id: str, read: _Read) -> str:
        if read.record is None:
            return "unknown"
        record = MessageRecord.from_json(read.record)
        seat = self._seat(record)
        if seat is None:
            return self._recheck(record)
        return seat._check_record(record, read)

    def _check_record(self, record: MessageRecord, read: _Read | None = None) -> str:
        message_id = record.id
        if record.status.is_terminal or record.step not in WAITING_STEPS:
            return "settled"
        href = record.invitation_href if record.step == "invited" else record.message_href
        try:
            session = self._session(read)
            self.ucwa.adopt(session.base_url, session.token, session.token_expires_at)
            resource = self.ucwa.get_json(href or "", kind="check")
        except (ue.ResourceNotFound, ue.ApplicationGone):
            self._fail(
                record,
                MessageStatus.FAILED,
                OUTCOME_UNKNOWN,
                "UCWA no longer knows the operation and reported no outcome",
            )
            return "failed"
        except (ue.UcwaError, SessionUnavailable):
            return self._recheck(record)
        state = str((resource or {}).get("state") or (resource or {}).get("status") or "")
        if state in ("Connected", "Succeeded"):
            self.outbound.finalize(message_id, MessageStatus.DELIVERED)
            return "delivered"
        if state in ("Failed", "Declined", "Cancelled", "Forwarded"):
            self.settle(
                message_id,
                {
                    "status": "Failure",
                    "state": state,
                    "reason": (resource or {}).get("reason") or {},
                },
            )
            return "failed"
        return self._recheck(record)

    def _recheck(self, record: MessageRecord) -> str:
        with self.redis.pipeline() as pipe:
            pipe.incr(f"msg:{record.id}:checks")
            pipe.expire(f"msg:{record.id}:checks", self.store.record_ttl_s)
            checks = int(pipe.execute()[0])
        if checks > self.settings.max_checks:
            self._fail(
                record,
                MessageStatus.FAILED,
                OUTCOME_UNKNOWN,
                "no outcome from UCWA after repeated checks",
            )
            return "failed"
        self.outbound.schedule_check(record.id, self.settings.message_timeout_s)
        return "rechecking"

    # -- faults -------------------------------------------------------------------------------
    def _ambiguous(self, record: MessageRecord) -> str:
        self._mark(record, attempt_at=time.time(), maybe_sent=True)
        self.outbound.enqueue_send(record.id, self.settings.ambiguity_grace_s)
        return "ambiguous"

    def _resolve_ambiguous(self, record: MessageRecord) -> str:
        """A previous POST may have reached UCWA (its answer was lost, or its worker died while
        it was out). Adopt what the event channel saw; never send it again, because nothing can
        prove that UCWA did not act on it: after the outcome window it fails
        ``outcome_unknown``, and a success UCWA reports later still makes it delivered."""
        seen = self.outbound.operation(record.id)
        if seen.get("href"):
            step = "posted" if seen.get("rel") == "message" else "invited"
            field = "message_href" if step == "posted" else "invitation_href"
            href: dict[str, Any] = {field: seen["href"]}
            self._mark(record, step=step, **href)
            if seen.get("status"):
                self.settle(
                    record.id,
                    {
                        "status": seen["status"],
                        "state": seen.get("state"),
                        "reason": _json_or_empty(seen.get("reason")),
                    },
                )
                return "settled"
            delay = (
                self.settings.invitation_timeout_s
                if step == "invited"
                else self.settings.message_timeout_s
            )
            self.outbound.schedule_check(record.id, delay)
            return "adopted"
        window = self.settings.outcome_window_s(record.path)
        waited = time.time() - (record.attempt_at or 0)
        if waited < window:
            self.outbound.enqueue_send(
                record.id, min(self.settings.ambiguity_grace_s, window - waited)
            )
            return "ambiguous"
        self._fail(
            record,
            MessageStatus.FAILED,
            OUTCOME_UNKNOWN,
            f"UCWA gave no answer to the send and reported no outcome within {window:g} s; "
            "it was not sent again, because it may have reached the recipient",
        )
        return "failed"

    def _handle_error(
        self,
        record: MessageRecord,
        exc: ue.UcwaError,
        path: str,
        conv: Conversation | None,
        generation: int,
    ) -> str:
        fault = UcwaFault(exc.code, exc.subcode, exc.message or None, exc.diagnostics)
        if isinstance(exc, ue.ServiceFailure) and exc.status in (500, 502, 504):
            # The server (or a proxy in front of it) may have acted before failing.
            return self._ambiguous(record)
        self._mark(record, step="queued")
        if path in ("warm", "reopen") and isinstance(exc, ue.ResourceNotFound | ue.Conflict):
            if conv is not None:
                self._drop_conversation(conv)
            self.outbound.enqueue_send(record.id)
            return "conversation_gone"
        if isinstance(exc, ue.ApplicationGone):
            self._mark_rebuilding(generation)
            return self._retry(record, "session_lost", str(exc), fault)
        if exc.permanent or isinstance(exc, ue.RequestRejected):
            codes: dict[type[ue.UcwaError], str] = {
                ue.ParameterValidationFailure: "invalid_request",
                ue.EntityTooLarge: "too_large",
                ue.Forbidden: "forbidden",
            }
            code = codes.get(type(exc), "rejected")
            self._fail(record, MessageStatus.FAILED, code, str(exc), fault)
            return "failed"
        return self._retry(record, "ucwa_unavailable", str(exc), fault, retry_after=exc.retry_after)

    def _retry(
        self,
        record: MessageRecord,
        code: str,
        detail: str,
        fault: UcwaFault | None = None,
        retry_after: float | None = None,
    ) -> str:
        if record.attempts >= self.settings.max_attempts:
            self._fail(
                record,
                MessageStatus.FAILED,
                code,
                f"gave up after {record.attempts} attempts: {detail}",
                fault,
            )
            return "failed"
        delay = min(
            self.settings.backoff_cap_s,
            self.settings.backoff_base_s * (2 ** max(record.attempts - 1, 0)),
        )
        delay *= self.rng.uniform(0.8, 1.2)
        if retry_after is not None:
            delay = min(max(delay, retry_after), self.settings.backoff_cap_s * 5)
        if code == "no_session":
            self._mark(record, attempts=record.attempts + 1)
        self.outbound.enqueue_send(record.id, delay)
        log.info(
            "retrying %s in %.1fs: %s", record.id, delay, code, extra={"message_id": record.id}
        )
        return "retry"

    def _fail(
        self,
        record: MessageRecord,
        status: MessageStatus,
        code: str,
        detail: str,
        fault: UcwaFault | None = None,
    ) -> None:
        self.outbound.finalize(record.id, status, MessageError(code, detail, fault))

    # -- small helpers ------------------------------------------------------------------------
    def _mark(
        self,
        record: MessageRecord,
        watch_s: float | None = None,
        release: bool = False,
        watched: Watched | None = None,
        **fields: Any,
    ) -> MessageRecord:
        """Record a step of the flow. ``watch_s``: the step waits for an outcome, so its
        watchdog goes on the schedule in the same transaction (``Outbound.watch_outcome``).
        ``release``: the step is the run's last word on the message (a POST answered), so the
        run's send lock goes in the same transaction: a later run finds the step and waits.
        ``watched``: the record as the claim left it watched, for the first try."""
        return self._mark_answered(record, watch_s, None, release, watched, **fields)[0]

    def _mark_answered(
        self,
        record: MessageRecord,
        watch_s: float | None,
        then: Callable[[redis.client.Pipeline], None] | None,
        release: bool = False,
        watched: Watched | None = None,
        **fields: Any,
    ) -> tuple[MessageRecord, list[Any]]:
        """``_mark``, with ``then`` queued last in its transaction; the transaction's answers."""
        held = _held_lock.get() if release else None

        def watch(pipe: redis.client.Pipeline, updated: MessageRecord) -> None:
            if watch_s is not None:
                self.outbound.watch_outcome(pipe, updated, watch_s)
            if held is not None:
                # EVAL, not the lock's registered script: a transaction would first ask
                # whether it is loaded, a round trip of its own.
                pipe.eval(Lock.LUA_RELEASE_SCRIPT, 1, held.name, held.token)
            if then is not None:
                then(pipe)

        def change(current: MessageRecord) -> MessageRecord:
            if current.status.is_terminal:
                return current
            status = current.status
            history = current.history
            if status == MessageStatus.QUEUED and fields.get("step", "").startswith("posting"):
                status = MessageStatus.SENDING
                history = {**history, status.value: _now_iso()}
            return replace(current, status=status, history=history, **fields)

        found = self.store.update_answered(record.id, change, watch, watched)
        if held is not None:
            held.released = True
        return found

    def _claim(
        self,
        record: MessageRecord,
        path: str,
        watched: Watched | None = None,
        before_write: Callable[[], None] | None = None,
    ) -> tuple[MessageRecord, Watched | None] | None:
        """Move the record to ``posting_<path>`` if it is still between attempts: a
        compare-and-set, as a cancel is (``Outbound.cancel``), so a message is either cancelled
        or posted, never both. None when it is not (cancelled meanwhile): post nothing then.
        With the claimed record comes the record watched again in the claim's round trip
        (``update_then_watch``), for the step after the POST.

        A claim whose answer Redis lost may have committed: its ``attempt_at`` marks it ours,
        so a retried compare-and-set that finds it goes on to post, and one that cannot reach
        Redis any more undoes it (``_unclaim``) before the job gives up."""
        attempt_at = time.time()
        ours = f"posting_{path}"

        def claim(current: MessageRecord) -> MessageRecord:
            if current.step == ours and current.attempt_at == attempt_at:
                return current  # committed by the try whose answer was lost
            if current.status.is_terminal or current.step != "queued":
                raise _ClaimLost(current.id)
            history = current.history
            if current.status == MessageStatus.QUEUED:
                history = {**history, MessageStatus.SENDING.value: _now_iso()}
            return replace(
                current,
                status=MessageStatus.SENDING,
                history=history,
                step=ours,
                attempts=current.attempts + 1,
                attempt_at=attempt_at,
                path=path,
            )

        try:
            return self.store.update_then_watch(
                record.id, claim, watched=watched, before_write=before_write
            )
        except (_ClaimLost, MessageNotFound):
            return None
        except redis.RedisError:
            self._unclaim(record.id, ours, attempt_at)  # no POST went out, whatever it did
            raise

    def _unclaim(self, message_id: str, ours: str, attempt_at: float) -> None:
        """Once Redis answers again, put a record our lost claim moved back between attempts,
        so that it is sent, instead of ending ``outcome_unknown`` as a POST that may have gone
        out would. Only our own claim is undone (a compare-and-set under the send lock)."""

        def back(current: MessageRecord) -> MessageRecord:
            if current.step != ours or current.attempt_at != attempt_at:
                raise _ClaimLost(current.id)
            history = {k: v for k, v in current.history.items() if k != MessageStatus.SENDING.value}
            was_queued = current.attempts == 1
            return replace(
                current,
                status=MessageStatus.QUEUED if was_queued else current.status,
                history=history if was_queued else current.history,
                step="queued",
                attempts=current.attempts - 1,
            )

        try:
            undone = _once_redis_answers(lambda: self.store.update(message_id, back), self.stop)
        except (_ClaimLost, MessageNotFound):
            return  # the claim never committed: nothing to undo
        except redis.RedisError as exc:
            log.warning(
                "could not undo a claim whose answer was lost; the message ends "
                "outcome_unknown unless UCWA reports it: %s",
                exc,
                extra={"message_id": message_id},
            )
            return
        log.info("claim undone: no POST went out", extra={"message_id": undone.id})

    def _stand_down(self, message_id: str) -> str:
        """The claim to post was lost: a final (cancelled) message hands on to the next one in
        its line, exactly as after a failure."""
        try:
            record = self.store.get(message_id)
        except MessageNotFound:
            return "unknown"
        if record.status.is_terminal:
            self.outbound.advance(record)
            return record.status.value
        return "busy"

    def _mark_rebuilding(self, generation: int) -> None:
        """Say the session is being rebuilt, unless the poller already published a newer one:
        a late 404/410 for the old application must not mark the new session unusable."""
        with self.redis.pipeline() as pipe:
            try:
                pipe.watch(self.sessions.key)
                current = pipe.hget(self.sessions.key, "generation")
                if current is None or int(current) != generation:
                    return
                pipe.multi()
                self.sessions.set_state("rebuilding", pipe)
                pipe.execute()
            except redis.WatchError:
                pass  # the session changed meanwhile: it is the poller's newer one

    def _drop_conversation(self, conv: Conversation) -> None:
        conv.messaging_state = "Disconnected"
        conv.links = {k: v for k, v in conv.links.items() if k not in ("sendMessage",)}
        with self.redis.pipeline() as pipe:
            self.registry.save(conv, pipe)
            pipe.execute()

    def publish_token(self, session: Session) -> None:
        """Share a token this worker renewed, so other workers need not renew it again."""
        token = self.ucwa.token()
        if token is not None and token.access_token != session.token:
            self.sessions.replace_token(
                session.generation, token.access_token, token.expires_at.timestamp()
            )


# How long a run waits for Redis to take writes again to give its lock back (or undo a claim):
# without it, a send cut off by an outage would stay locked for the lock's whole TTL after Redis
# returned.
LOCK_RELEASE_WAIT_S = 20.0

T = TypeVar("T")


def _once_redis_answers(step: Callable[[], T], stop: threading.Event | None = None) -> T:
    """``step()``, repeated with a backoff while Redis is unavailable, for up to
    ``LOCK_RELEASE_WAIT_S`` or until ``stop`` is set; then, or on any other error, its error is
    raised."""
    deadline = time.monotonic() + LOCK_RELEASE_WAIT_S
    delay = 0.2
    stop = stop or threading.Event()  # never set
    while True:
        try:
            return step()
        except redis.RedisError as exc:
            if not redis_unavailable(exc) or time.monotonic() + delay > deadline:
                raise
            # Redis, and with it RQ's scheduler, is away: nothing to hand to.
            if stop.wait(delay):
                raise
            delay = min(delay * 2, 2.0)


class _SlotHold:
    """A send's turn at the UCWA slot (when there is one): taken once by ``take``, however often
    it is called, and given back once by ``release``."""

    def __init__(self, slot: UcwaSlot | None) -> None:
        self._slot = slot
        self._held = False

    def take(self) -> None:
        if self._slot is not None and not self._held:
            self._slot.acquire()
            self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._slot.release()  # type: ignore[union-attr]


@dataclass
class _HeldLock:
    """The send lock a run holds; ``released`` once a transaction of the run let it go."""

    name: str
    token: bytes
    released: bool = False


# The send lock of the run in progress in this thread (``Sender._locked``), for the step that
# releases it with its own write.
_held_lock: ContextVar[_HeldLock | None] = ContextVar("bridge_send_lock", default=None)


def _release(lock: Lock, stop: threading.Event | None = None) -> None:
    try:
        _once_redis_answers(lock.release, stop)
    except redis.exceptions.LockError:
        pass  # it expired while we worked (or is another run's now): nothing to undo
    except redis.RedisError:
        pass  # the lock expires by itself


@dataclass(frozen=True)
class _Read:
    """What a job's first round trip read with its lock: the record's JSON (None: gone) and
    the session answers (``SessionStore.queue_read``) of the sender that took the job."""

    record: bytes | None
    account_id: str
    session: tuple[Any, Any]


class _ClaimLost(Exception):
    """Aborts the claim's update: the record is no longer between attempts."""


def _first_message(record: MessageRecord) -> str:
    if record.html is not None:
        return encode_data_uri(record.html, "text/html")
    return encode_data_uri(record.text or "", "text/plain")


def _json_or_empty(value: str | None) -> dict[str, Any]:
    import json

    try:
        parsed = json.loads(value) if value else {}
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _now_iso() -> str:
    from bridge.outbound.messages import utc_now

    return utc_now()
