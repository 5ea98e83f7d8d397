"""The outbound message record, its status state machine, and its Redis store.

Keys: ``msg:<id>`` (record JSON), ``rcpt:<recipient>:fifo`` (ids in accepted order),
``rcpt:<recipient>:seq`` (last sequence number); ``<recipient>`` is ``recipient_key()``.
"""

from __future__ import annotations

import json
import math
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, cast

import redis
from redis.client import Pipeline

from bridge.config.accounts import DEFAULT_ID
from bridge.config.redis_conn import Watched, execute_then_watch, watch_and_get
from bridge.config.redis_text import text
from bridge.outbound.message_index import (
    ACCOUNT_MARK,
    INDEX_FUNCTION,
    index_keys,
    member,
    reindex,
    trim_bound,
)

MESSAGE_ID_PREFIX = "msg_"
MAX_UPDATE_RETRIES = 50


class MessageStatus(StrEnum):
    """What a caller sees; ``delivered``, ``failed``, ``expired`` and ``cancelled`` are final;
    ``scheduled`` waits for its ``send_at`` before it joins its recipient's line."""

    SCHEDULED = "scheduled"
    QUEUED = "queued"
    SENDING = "sending"
    DELIVERED = "delivered"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset(
    {
        MessageStatus.DELIVERED,
        MessageStatus.FAILED,
        MessageStatus.EXPIRED,
        MessageStatus.CANCELLED,
    }
)

# A send whose outcome UCWA never told fails with this code and is never sent again; if UCWA
# reports its success later after all, the message becomes delivered (``late_success``).
OUTCOME_UNKNOWN = "outcome_unknown"

ALLOWED_TRANSITIONS: Mapping[MessageStatus, frozenset[MessageStatus]] = {
    MessageStatus.SCHEDULED: frozenset(
        {
            MessageStatus.QUEUED,
            MessageStatus.FAILED,
            MessageStatus.EXPIRED,
            MessageStatus.CANCELLED,
        }
    ),
    MessageStatus.QUEUED: frozenset(
        {
            MessageStatus.SENDING,
            MessageStatus.FAILED,
            MessageStatus.EXPIRED,
            MessageStatus.CANCELLED,
        }
    ),
    # Cancelling a sending message also needs it between attempts (``MessageRecord.cancellable``).
    MessageStatus.SENDING: TERMINAL,
    MessageStatus.DELIVERED: frozenset(),
    MessageStatus.FAILED: frozenset(),
    MessageStatus.EXPIRED: frozenset(),
    MessageStatus.CANCELLED: frozenset(),
}
# The error code of a message cancelled through the API (``cancelled`` is UCWA cancelling an
# invitation); its message is the caller's reason.
CANCELLED_CODE = "cancelled_by_caller"


class MessageStoreError(Exception):
    """Base of the store's errors."""


class MessageNotFound(MessageStoreError, KeyError):
    """No record under that id (never created, or expired from Redis)."""


class IllegalTransition(MessageStoreError):
    """The status change is not allowed from the record's current status."""

    def __init__(self, message_id: str, current: MessageStatus, wanted: MessageStatus) -> None:
        self.message_id = message_id
        self.current = current
        self.wanted = wanted
        super().__init__(f"{message_id}: {current.value} -> {wanted.value} is not allowed")


class NotCancellable(MessageStoreError):
    """The message is with UCWA (posting, invited, posted) or final: too late to cancel."""

    def __init__(self, record: MessageRecord) -> None:
        self.record = record
        super().__init__(f"{record.id} is {record.status.value} ({record.step})")


class TooMuchContention(MessageStoreError):
    """An optimistic update kept losing to concurrent writers."""


def new_message_id() -> str:
    """``msg_`` + 32 hex digits: URL-safe, unique, 36 chars (fits UCWA's 50-char operationId)."""
    return MESSAGE_ID_PREFIX + uuid.uuid4().hex


def utc_now() -> str:
    return format_time(time.time())


def format_time(epoch: float) -> str:
    """RFC 3339 UTC with milliseconds, e.g. ``2024-05-01T12:00:00.123Z``."""
    m = datetime.fromtimestamp(epoch, UTC)
    # Fields by hand: half the cost of strftime, on every accepted message and log line.
    return (
        f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}"
        f".{m.microsecond // 1000:03d}Z"
    )


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# The account whose lines keep the names they had before there were several accounts.
DEFAULT_ACCOUNT = DEFAULT_ID


def recipient_key(to: str | None, conversation: str | None, account: str | None = None) -> str:
    """The FIFO name: the lowercased SIP URI, or ``conv:<id>`` for a reply into a conversation;
    ``<account>|`` before it for every account but ``default``: one line per account and
    person, since each account is a sender of its own."""
    if to is not None:
        base = to.strip().lower()
    elif conversation is not None:
        base = f"conv:{conversation}"
    else:
        raise ValueError("a message needs a recipient or a conversation")
    if account is None or account == DEFAULT_ACCOUNT:
        return base
    return f"{account}{ACCOUNT_MARK}{base}"


def record_key(message_id: str) -> str:
    return f"msg:{message_id}"


# The recipients whose line holds something: the poller's sweep reads it instead of scanning
# the keyspace. Intake and release add to it with the line entry; emptying a line removes it.
LINES_KEY = "rcpt:lines"


def fifo_key(recipient: str) -> str:
    return f"rcpt:{recipient}:fifo"


def sequence_key(recipient: str) -> str:
    return f"rcpt:{recipient}:seq"


@dataclass(frozen=True)
class UcwaFault:
    """The error UCWA reported, kept verbatim for callers who speak UCWA; ``diagnostics`` is the
    server's ``X-Ms-diagnostics`` header when it sent one (cleaned, see ``clean_diagnostics``)."""

    code: str | None = None
    subcode: str | None = None
    message: str | None = None
    diagnostics: str | None = None


@dataclass(frozen=True)
class MessageError:
    """Why a message failed or expired: a stable bridge ``code`` plus UCWA's own words."""

    code: str
    message: str
    ucwa: UcwaFault | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MessageError:
        ucwa = data.get("ucwa")
        return cls(data["code"], data["message"], UcwaFault(**ucwa) if ucwa else None)


@dataclass(frozen=True)
class MessageRecord:
    """One accepted message: what to send, where it is, and the send flow's resume points.

    ``step``, ``*_href``, ``sequence``, ``attempt_at`` and ``path`` are internal to the send
    flow; ``public_view`` omits them.
    """

    id: str
    to: str | None
    conversation: str | None
    text: str | None
    html: str | None
    subject: str | None
    importance: str
    validity_s: int
    created_at: str
    expires_at: str
    status: MessageStatus = MessageStatus.QUEUED
    history: dict[str, str] = field(default_factory=dict)
    attempts: int = 0
    error: MessageError | None = None
    step: str = "queued"
    sequence: int = 0
    invitation_href: str | None = None
    message_href: str | None = None
    conversation_href: str | None = None
    attempt_at: float | None = None
    path: str | None = None
    # The recipient's line (``recipient_key``) chosen at intake: a reply by ``conversation``
    # joins the line of the person the conversation is with, so they are served in order.
    line: str | None = None
    # Set when an attempt's POST may have reached UCWA without an answer: never resent then.
    maybe_sent: bool = False
    # The error a late success replaced (``outcome_unknown``), shown with the delivery.
    previous_error: MessageError | None = None
    # The caller's Idempotency-Key header, if it sent one: ``GET /messages`` finds it by that.
    idempotency_key: str | None = None
    # When the caller asked it to be sent (RFC 3339); ``scheduled`` until then.
    send_at: str | None = None
    # The broadcast (``POST /broadcasts``) that created it, if one did.
    broadcast: str | None = None
    # The id of the account it is sent as (``from``); None in records older than accounts,
    # which are the default account's.
    account: str | None = None

    def late_success(self, status: MessageStatus) -> bool:
        """Whether ``status`` is a success UCWA reported after the message ended unknown."""
        return (
            status == MessageStatus.DELIVERED
            and self.status in (MessageStatus.FAILED, MessageStatus.EXPIRED)
            and self.error is not None
            and self.error.code == OUTCOME_UNKNOWN
        )

    @property
    def cancellable(self) -> bool:
        """Whether nothing of this message is, or may be, with UCWA: not final, and between
        attempts (``step`` queued) with no POST whose answer was lost."""
        return not self.status.is_terminal and self.step in WAITING and not self.maybe_sent

    @classmethod
    def new(
        cls,
        *,
        to: str | None = None,
        conversation: str | None = None,
        text: str | None = None,
        html: str | None = None,
        subject: str | None = None,
        importance: str = "Normal",
        validity_s: int,
        message_id: str | None = None,
        now: float | None = None,
        send_at: float | None = None,
        account: str | None = None,
    ) -> MessageRecord:
        """A new record; with ``send_at`` later than ``now`` it is ``scheduled`` and its
        validity runs from ``send_at``."""
        if (to is None) == (conversation is None):
            raise ValueError("exactly one of to and conversation is required")
        if (text is None) == (html is None):
            raise ValueError("exactly one of text and html is required")
        moment = time.time() if now is None else now
        created = format_time(moment)
        later = send_at is not None and send_at > moment
        status = MessageStatus.SCHEDULED if later else MessageStatus.QUEUED
        start = send_at if later and send_at is not None else moment
        return cls(
            id=message_id or new_message_id(),
            to=to,
            conversation=conversation,
            text=text,
            html=html,
            subject=subject,
            importance=importance,
            validity_s=validity_s,
            created_at=created,
            expires_at=format_time(start + validity_s),
            status=status,
            step=status.value,
            history={status.value: created},
            send_at=None if send_at is None else format_time(send_at),
            account=account,
            line=recipient_key(to, None, account)
            if to and account not in (None, DEFAULT_ACCOUNT)
            else None,
        )

    @property
    def recipient(self) -> str:
        return self.line or recipient_key(self.to, self.conversation)

    def is_expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= parse_time(self.expires_at)

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (built by hand: ``asdict``'s deep copy costs on the hot path)."""
        data = {name: getattr(self, name) for name in _FIELD_NAMES}
        data["status"] = self.status.value
        data["history"] = dict(self.history)
        data["error"] = asdict(self.error) if self.error else None
        data["previous_error"] = asdict(self.previous_error) if self.previous_error else None
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | bytes) -> MessageRecord:
        data = json.loads(raw)
        data["status"] = MessageStatus(data["status"])
        for name in ("error", "previous_error"):
            data[name] = MessageError.from_dict(data[name]) if data.get(name) else None
        return cls(**data)

    def public_view(self) -> dict[str, Any]:
        """The caller-facing shape (documented as ``Message`` in the OpenAPI document)."""
        view: dict[str, Any] = {
            "id": self.id,
            "status": self.status.value,
            "to": self.to,
            "conversation": self.conversation,
            "subject": self.subject,
            "importance": self.importance,
            "validity": self.validity_s,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "history": dict(self.history),
            "attempts": self.attempts,
            "error": asdict(self.error) if self.error else None,
        }
        if self.previous_error is not None:
            view["previous_error"] = asdict(self.previous_error)
        if self.idempotency_key is not None:
            view["idempotency_key"] = self.idempotency_key
        if self.send_at is not None:
            view["send_at"] = self.send_at
        if self.broadcast is not None:
            view["broadcast"] = self.broadcast
        view["from"] = self.account or DEFAULT_ACCOUNT
        if self.text is not None:
            view["text"] = self.text
        else:
            view["html"] = self.html
        return view


_FIELD_NAMES = tuple(f.name for f in dataclass_fields(MessageRecord))
# Steps at which nothing of a message is with UCWA: waiting in line, or for its ``send_at``.
WAITING = frozenset({"queued", "scheduled"})

# Numbers the message in its recipient's line, appends it to the line, saves the record with
# that number and adds it to its indexes, atomically: the line's order and the numbers always
# agree, and an index never names a record that was not stored. A function, so the intake's
# gated script (bridge.outbound.intake) runs the very same steps.
ACCEPT_FUNCTION = (
    INDEX_FUNCTION
    + """
local function accept(seq_key, fifo_key, record_key, lines_key, id, record, ttl, entry, bound,
                      join, indexes)
  local sequence = redis.call('INCR', seq_key)
  redis.call('EXPIRE', seq_key, ttl)
  if join == '1' then  -- a scheduled message joins its line when it is due
    redis.call('RPUSH', fifo_key, id)
    redis.call('EXPIRE', fifo_key, ttl)
    redis.call('SADD', lines_key, string.sub(fifo_key, 6, -6))  -- rcpt:<recipient>:fifo
    redis.call('EXPIRE', lines_key, ttl)  -- outlives every line: each is written with this TTL
  end
  redis.call('SET', record_key, string.sub(record, 1, -2) .. ',"sequence":' .. sequence .. '}',
             'EX', ttl)
  index_message(indexes, entry, bound, ttl)
  return sequence
end
"""
)
# KEYS: the line's sequence, the line, the record, the set of lines, then the indexes; ARGV:
# ``accept_arguments``.
_ACCEPT = (
    ACCEPT_FUNCTION
    + "return accept(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], ARGV[3], ARGV[4], "
    + "ARGV[5], ARGV[6], {unpack(KEYS, 5, 4 + tonumber(ARGV[7]))})\n"
)


class MessageStore:
    """Records in Redis; every change is a compare-and-set so concurrent workers lose no write."""

    def __init__(self, client: redis.Redis, record_ttl_s: int = 7 * 86_400) -> None:
        self._redis = client
        self.record_ttl_s = record_ttl_s

    def get(self, message_id: str) -> MessageRecord:
        raw = self._redis.get(record_key(message_id))
        if raw is None:
            raise MessageNotFound(message_id)
        return MessageRecord.from_json(raw)

    def create(self, record: MessageRecord, pipe: Pipeline) -> None:
        """Queue the write of a new record on ``pipe`` (already in MULTI) with the record TTL."""
        pipe.set(record_key(record.id), record.to_json(), ex=self.record_ttl_s)

    def accept(self, record: MessageRecord, pipe: Pipeline) -> None:
        """Queue, on ``pipe`` (in MULTI), numbering ``record`` in its recipient's line, the line
        entry and the record; the command's result in EXEC's answer is the sequence number.

        EVAL, not EVALSHA: inside MULTI a NOSCRIPT (after a Redis restart) would fail this
        command alone while the rest of the transaction ran.
        """
        keys, args = self.accept_arguments(record)
        pipe.eval(_ACCEPT, len(keys), *keys, *args)

    def accept_arguments(self, record: MessageRecord) -> tuple[list[str], list[str | int]]:
        """KEYS (the four of ``accept``, then its indexes) and ARGV (``accept``'s seven scalar
        arguments, the last the number of index keys) for ``record``. A scheduled record lives
        the record TTL after its ``send_at``."""
        data = record.to_dict()
        del data["sequence"]
        recipient = record.recipient
        indexes = index_keys(record)
        keys = [
            sequence_key(recipient),
            fifo_key(recipient),
            record_key(record.id),
            LINES_KEY,
            *indexes,
        ]
        record_json = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        ttl = self.record_ttl_s + self.delay_s(record)
        entry, bound = member(record), trim_bound(record, self.record_ttl_s)
        join = "0" if record.status is MessageStatus.SCHEDULED else "1"
        return keys, [record.id, record_json, ttl, entry, bound, join, len(indexes)]

    @staticmethod
    def delay_s(record: MessageRecord) -> int:
        """Whole seconds from intake to ``send_at`` (0 for a message sent at once)."""
        if record.send_at is None:
            return 0
        return max(0, math.ceil(parse_time(record.send_at) - parse_time(record.created_at)))

    def update(
        self,
        message_id: str,
        mutate: Callable[[MessageRecord], MessageRecord],
        also: Callable[[Pipeline, MessageRecord], None] | None = None,
        watched: Watched | None = None,
    ) -> MessageRecord:
        """Apply ``mutate`` to the current record and save it unless someone wrote in between.

        ``mutate`` may run several times and must be pure; exceptions it raises abort the update.
        ``watched``: a pipeline already watching the record, and the record it read then
        (``read_and_watch``), for the first try: no round trip of its own before the EXEC.
        """
        return self.update_answered(message_id, mutate, also, watched)[0]

    def update_answered(
        self,
        message_id: str,
        mutate: Callable[[MessageRecord], MessageRecord],
        also: Callable[[Pipeline, MessageRecord], None] | None = None,
        watched: Watched | None = None,
    ) -> tuple[MessageRecord, list[Any]]:
        """``update``, with the transaction's answers: those of what ``also`` queued are last."""
        updated, answers, _ = self._update(message_id, mutate, also, watched, then_watch=False)
        return updated, answers

    def update_then_watch(
        self,
        message_id: str,
        mutate: Callable[[MessageRecord], MessageRecord],
        watched: Watched | None = None,
        before_write: Callable[[], None] | None = None,
    ) -> tuple[MessageRecord, Watched | None]:
        """``update``, and the record watched again in the same round trip as its EXEC: a
        pipeline watching it with what it read then, for the next update's first try (the
        caller hands it on or resets it). None when that read did not come back.
        ``before_write``: called when the transaction is built, just before it is sent (every
        try), e.g. to wait for a turn that should hold only the round trip."""
        updated, _, follow = self._update(
            message_id, mutate, None, watched, then_watch=True, before_write=before_write
        )
        return updated, follow

    def _update(
        self,
        message_id: str,
        mutate: Callable[[MessageRecord], MessageRecord],
        also: Callable[[Pipeline, MessageRecord], None] | None,
        watched: Watched | None,
        then_watch: bool,
        before_write: Callable[[], None] | None = None,
    ) -> tuple[MessageRecord, list[Any], Watched | None]:
        key = record_key(message_id)
        with self._redis.pipeline() as own:
            for attempt in range(MAX_UPDATE_RETRIES):
                if attempt >= 2:
                    # Writers that keep colliding take turns instead of retrying in lock-step
                    # (a busy CPU can otherwise starve one of them past the retry limit).
                    time.sleep(random.uniform(0, 0.001 * min(attempt, 20)))
                pipe = own
                try:
                    if attempt == 0 and watched is not None:
                        pipe, raw = watched
                    else:
                        raw = watch_and_get(pipe, key)
                    if raw is None:
                        raise MessageNotFound(message_id)
                    current = MessageRecord.from_json(raw)
                    updated = mutate(current)
                    if updated.id != message_id:
                        raise ValueError("an update must not change the message id")
                    pipe.multi()
                    pipe.set(key, updated.to_json(), keepttl=True)
                    life = self.record_ttl_s + self.delay_s(updated)
                    reindex(pipe, current, updated, self.record_ttl_s, life)
                    if also is not None:
                        also(pipe, updated)  # e.g. a status webhook, in the same transaction
                    if before_write is not None:
                        before_write()
                    if then_watch:
                        return updated, *execute_then_watch(pipe, key)
                    return updated, pipe.execute(), None
                except redis.WatchError:
                    continue
                finally:
                    pipe.reset()
        raise TooMuchContention(message_id)

    def transition(
        self,
        message_id: str,
        status: MessageStatus,
        also: Callable[[Pipeline, MessageRecord], None] | None = None,
        **fields: Any,
    ) -> MessageRecord:
        """Move to ``status`` (appending to the history) and set ``fields`` in the same write.

        Raises ``IllegalTransition`` when the current status does not allow it: a final status
        never changes, and a status is never re-entered.
        """
        return self.transition_answered(message_id, status, also, **fields)[0]

    def transition_answered(
        self,
        message_id: str,
        status: MessageStatus,
        also: Callable[[Pipeline, MessageRecord], None] | None = None,
        **fields: Any,
    ) -> tuple[MessageRecord, list[Any]]:
        """``transition``, with the transaction's answers: those of what ``also`` queued are
        last."""
        forbidden = {"id", "status", "history", "created_at"} & fields.keys()
        if forbidden:
            raise ValueError(f"transition() does not set {', '.join(sorted(forbidden))}")

        def move(record: MessageRecord) -> MessageRecord:
            if record.late_success(status):
                history = {**record.history, status.value: utc_now()}
                late = {"error": None, "previous_error": record.error}
                return replace(record, status=status, history=history, **{**late, **fields})
            if status not in ALLOWED_TRANSITIONS[record.status]:
                raise IllegalTransition(message_id, record.status, status)
            history = {**record.history, status.value: utc_now()}
            return replace(record, status=status, history=history, **fields)

        return self.update_answered(message_id, move, also)


# Drop a message from its line if it is first: KEYS the line, the set of lines; ARGV the id.
_DROP_IF_HEAD = """
local popped = 0
if redis.call('LINDEX', KEYS[1], 0) == ARGV[1] then
  redis.call('LPOP', KEYS[1])
  if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('SREM', KEYS[2], string.sub(KEYS[1], 6, -6))
  end
  popped = 1
end
"""

# {1 if it was dropped else 0, the line's head afterwards (false when the line is empty)}.
_POP_IF_HEAD = _DROP_IF_HEAD + "return {popped, redis.call('LINDEX', KEYS[1], 0)}\n"


# A scheduled message that falls due joins its line by accepted order (its sequence) among the
# messages still waiting there, never ahead of the head, which is being sent. Reads each
# waiting record's sequence: lines are short. KEYS: the line, the set of lines; ARGV: id,
# sequence, the record key prefix, the line's TTL. Returns 1 when the id was added, 0 when it
# was there already.
_JOIN_IN_ORDER = """
redis.call('SADD', KEYS[2], string.sub(KEYS[1], 6, -6))
redis.call('EXPIRE', KEYS[2], ARGV[4])
if redis.call('LINDEX', KEYS[1], 0) == ARGV[1] then
  return 0
end
local waiting = redis.call('LRANGE', KEYS[1], 1, -1)
for _, other in ipairs(waiting) do
  if other == ARGV[1] then
    return 0
  end
end
for _, other in ipairs(waiting) do
  local raw = redis.call('GET', ARGV[3] .. other)
  if raw then
    local sequence = tonumber(cjson.decode(raw)['sequence'])
    if sequence and sequence > tonumber(ARGV[2]) then
      redis.call('LINSERT', KEYS[1], 'BEFORE', other, ARGV[1])
      redis.call('EXPIRE', KEYS[1], ARGV[4])
      return 1
    end
  end
end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""


# ``_POP_IF_HEAD``, then what starting the new head needs: KEYS the line, the set of lines;
# ARGV the id, the record key prefix, the runs counter's TTL. {popped, head, the head's record,
# the head's next run number} (head, record and run false when there is none; a run is counted
# only for a head whose record exists).
_POP_THEN_NEXT = (
    _DROP_IF_HEAD
    + """
local head = redis.call('LINDEX', KEYS[1], 0)
if not head then
  return {popped, false, false, false}
end
local record = redis.call('GET', ARGV[2] .. head)
local run = false
if record then
  run = redis.call('INCR', ARGV[2] .. head .. ':runs')
  redis.call('EXPIRE', ARGV[2] .. head .. ':runs', ARGV[3])
end
return {popped, head, record, run}
"""
)


@dataclass(frozen=True)
class NextUp:
    """A line's head after a final message left it (``RecipientQueue.queue_pop_then_next``)."""

    head: str | None
    record: MessageRecord | None  # None: the head's record is gone
    run: int | None  # the head's next run number, already counted


class RecipientQueue:
    """Per-recipient FIFO of message ids in accepted order, so sends to one party keep order."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._pop_if_head = client.register_script(_POP_IF_HEAD)

    def head(self, recipient: str) -> str | None:
        """The id that must be sent next to ``recipient``, or None when nothing waits."""
        raw = self._redis.lindex(fifo_key(recipient), 0)
        return None if raw is None else text(raw)

    def pop_if_head(self, recipient: str, message_id: str) -> bool:
        """Remove ``message_id`` if it is first in line (atomic); True when it was removed."""
        return self.pop_then_head(recipient, message_id)[0]

    def pop_then_head(self, recipient: str, message_id: str) -> tuple[bool, str | None]:
        """``pop_if_head``, and the head of the line after it, in one round trip."""
        keys = [fifo_key(recipient), LINES_KEY]
        popped, head = cast(list[Any], self._pop_if_head(keys=keys, args=[message_id]))
        return bool(popped), None if head is None else text(head)

    @staticmethod
    def queue_pop_then_next(
        pipe: Pipeline, recipient: str, message_id: str, runs_ttl_s: int
    ) -> None:
        """``pop_then_head`` queued on the caller's transaction (EVAL: a NOSCRIPT in MULTI
        would fail it alone), with the new head's record and its next run number counted, so
        that starting it takes no read of its own; ``next_up`` reads the answer, which must be
        the transaction's last."""
        keys = [fifo_key(recipient), LINES_KEY]
        pipe.eval(_POP_THEN_NEXT, 2, *keys, message_id, record_key(""), runs_ttl_s)

    @staticmethod
    def next_up(answers: list[Any]) -> NextUp:
        _, head, raw, run = cast(list[Any], answers[-1])
        if head is None:
            return NextUp(None, None, None)
        return NextUp(
            text(head),
            MessageRecord.from_json(raw) if raw is not None else None,
            int(run) if run is not None else None,
        )

    @staticmethod
    def join_in_order(pipe: Pipeline, record: MessageRecord, ttl_s: int) -> None:
        """Queue on ``pipe`` (in MULTI) adding a message that fell due to its line, by its
        sequence among the waiting ones (EVAL: a NOSCRIPT in MULTI would fail it alone)."""
        keys = [fifo_key(record.recipient), LINES_KEY]
        pipe.eval(_JOIN_IN_ORDER, 2, *keys, record.id, record.sequence, record_key(""), ttl_s)

    def pending(self, recipient: str) -> list[str]:
        return [text(raw) for raw in self._redis.lrange(fifo_key(recipient), 0, -1)]
