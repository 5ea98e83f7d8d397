"""Applies what the event channel said to Redis: conversations, operation outcomes, cursor.

The poller calls it once per event batch; outcomes settle the waiting outbound messages. One event
that makes any step raise is quarantined (``quarantine.py``) and the rest of the batch goes on.

Settling a message takes several transactions of its own, so it cannot share the cursor's. The
outcomes a batch carries are therefore held in ``poller:<account>:unsettled`` by the cursor
transaction and settled from there: a poller that stops, or a Redis that goes away, after the
cursor moved leaves them held, and the next active poller settles them first. Redis persists
commands in order, so a settlement that reached disk took its held entry's removal after it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import redis

from bridge.config.accounts import DEFAULT_ID
from bridge.inbound.quarantine import Quarantine, passes_through
from bridge.outbound.messages import MessageNotFound, MessageRecord, record_key
from bridge.outbound.outcomes import OP_TTL_S, Outbound
from bridge.session.conversations import Conversation, ConversationRegistry
from bridge.ucwa.events import Event, EventBatch, Reason
from bridge.ucwa.links import InvalidLink, resolve
from bridge.ucwa.notices import (
    ConversationChanged,
    IncomingInvitation,
    IncomingMessage,
    InvitationOutcome,
    MessageOutcome,
    MessagingChanged,
    NeedsFetch,
    Notice,
    ParticipantChanged,
    TypingChanged,
    classify,
    conversation_hrefs,
    remote_uris,
)

log = logging.getLogger(__name__)

# Called inside the cursor transaction for inbound notices (webhook staging lives there).
InboundHook = Callable[[redis.client.Pipeline, Notice, Conversation | None], None]


def unsettled_key(account: str) -> str:
    """The outcomes of applied batches not yet settled, one JSON list per batch, oldest first."""
    return f"poller:{account}:unsettled"


@dataclass
class BatchResult:
    """What applying one batch did, for logs, metrics and tests."""

    settled: list[str] = field(default_factory=list)
    accepts: list[str] = field(default_factory=list)
    inbound: int = 0
    quarantined: int = 0
    held: int = 0  # outcomes held for ``settle``
    # Where the cursor transaction's answers hold the held entries (LRANGE), then the records
    # of ``read_operations`` (MGET): ``settle`` starts from them instead of reading again.
    reads_at: int | None = None
    read_operations: list[str] = field(default_factory=list)


class EventSink:
    """Turns notices into registry entries and message outcomes for one application."""

    def __init__(
        self,
        client: redis.Redis,
        account: str,
        outbound: Outbound | None = None,
        inbound_hook: InboundHook | None = None,
        account_id: str = DEFAULT_ID,
    ) -> None:
        self.redis = client
        self.account = account
        self.account_id = account_id
        self.registry = ConversationRegistry(client, account, account_id)
        self.outbound = outbound or Outbound(client, account=account)
        self.inbound_hook = inbound_hook
        self.quarantine = Quarantine(client, account)
        self.unsettled_key = unsettled_key(account)
        # Events ``notices`` could not read, written to the quarantine by ``apply_state`` inside
        # the cursor transaction, so a batch is quarantined exactly when its cursor moves.
        self._unread: list[tuple[str, BaseException, object]] = []
        # The registry records ``notices`` read (absolute href → raw record, None: none kept),
        # for ``apply_state``: one read of each conversation per batch.
        self._known: dict[str, bytes | None] = {}

    def notices(self, batch: EventBatch, base_url: str) -> list[Notice]:
        """Every notice in server order; an event that cannot be read is set aside."""
        self._unread = []
        # Only the conversations this batch names are read: one round trip, however many are
        # live (reading them all cost a GET each, per batch: most of the poller's CPU). What
        # it reads is kept for ``apply_state``.
        hrefs = _absolute(base_url, conversation_hrefs(batch))
        self._known = self.registry.read_hrefs(set(hrefs.values()))
        remotes = _live_remotes(hrefs, self._known)
        try:
            remotes.update(remote_uris(batch))
        except Exception as exc:  # poison: read the events without the batch's remote URIs
            if passes_through(exc):
                raise
            self._unread.append(("interpret", exc, None))
        found: list[Notice] = []
        for sender, event in batch.events():
            try:
                notice = classify(sender, event, remotes)
            except Exception as exc:
                if passes_through(exc):
                    raise
                self._unread.append(("interpret", exc, event))
                continue
            if notice is not None:
                found.append(notice)
        return found

    def _contained(
        self,
        pipe: redis.client.Pipeline,
        stage: str,
        item: object,
        step: Callable[[], None],
        result: BatchResult | None = None,
    ) -> None:
        """Run ``step``, which queues commands on ``pipe``; if it raises, drop what it queued
        and quarantine ``item`` instead (Redis being unavailable, or the lease lost, passes)."""
        mark = len(pipe.command_stack)
        try:
            step()
        except Exception as exc:
            if passes_through(exc):
                raise
            del pipe.command_stack[mark:]
            self.quarantine.record(pipe, stage, exc, item)
            if result is not None:
                result.quarantined += 1

    def note_operations(
        self, batch: EventBatch, base_url: str, pipe: redis.client.Pipeline
    ) -> None:
        """Remember every operationId the server echoed, so an ambiguous POST can be settled."""
        for _, event in batch.events():
            self._contained(
                pipe, "operations", event, partial(self._note_operation, event, base_url, pipe)
            )

    def _note_operation(self, event: Event, base_url: str, pipe: redis.client.Pipeline) -> None:
        res = event.embedded
        if not res or event.rel not in ("messagingInvitation", "message"):
            return
        operation = res.get("operationId")
        if not isinstance(operation, str) or res.get("direction") == "Incoming":
            return
        fields = {"rel": event.rel, "href": resolve(base_url, event.href or "")}
        if event.type == "completed":
            fields["status"] = event.status or ""
            fields["state"] = str(res.get("state") or "")
            if event.reason is not None:
                fields["reason"] = json.dumps(event.reason.__dict__)
        self.outbound.note_operation(pipe, operation, **fields)

    def apply_state(
        self,
        notices: list[Notice],
        generation: int,
        base_url: str,
        pipe: redis.client.Pipeline,
    ) -> BatchResult:
        """Queue registry writes (and inbound hooks) on ``pipe``, which the caller executes."""
        result = BatchResult()
        for stage, error, item in self._unread:
            self.quarantine.record(pipe, stage, error, item)
            result.quarantined += 1
        self._unread = []
        begin = getattr(self.inbound_hook, "begin_batch", None)
        end = getattr(self.inbound_hook, "end_batch", None)
        if callable(begin) and callable(end):
            begin(defer_jobs=True)  # the batch's delivery jobs are written at its end, together
        elif callable(begin):
            begin()
        cache: dict[str, Conversation] = {}
        now = time.time()
        known, self._known = self._known, {}
        missing = _named_conversations(notices, base_url) - known.keys()
        if missing:  # what ``notices`` did not read, in one round trip
            known.update(self.registry.read_hrefs(missing))

        def conversation(href: str | None, create: bool = True) -> Conversation | None:
            if not href:
                return None
            absolute = resolve(base_url, href)
            if absolute in cache:
                return cache[absolute]
            if absolute in known:  # loaded here: a record that cannot be read sets aside
                raw = known[absolute]  # only the notice that needs it
                conv = self.registry.load(raw) if raw is not None else None
            else:
                conv = self.registry.by_href(absolute)
            if conv is None or conv.generation != generation:
                if not create:
                    return None
                conv = Conversation(
                    id=self.registry.id_for(absolute),
                    href=absolute,
                    generation=generation,
                    created_at=now,
                    remote=conv.remote if conv else None,
                    thread_id=conv.thread_id if conv else None,
                )
            conv.last_activity = now
            cache[absolute] = conv
            return conv

        def apply(notice: Notice) -> None:
            if isinstance(notice, ConversationChanged):
                conv = conversation(notice.href)
                if conv is None:
                    return
                conv.remote = conv.remote or notice.remote_uri
                conv.thread_id = notice.thread_id or conv.thread_id
                conv.subject = notice.subject or conv.subject
                if notice.change == "deleted":
                    conv.state, conv.messaging_state, conv.links = "Deleted", "Disconnected", {}
                    if self.inbound_hook is not None:
                        self.inbound_hook(pipe, notice, conv)
                elif notice.state:
                    conv.state = notice.state
            elif isinstance(notice, MessagingChanged):
                conv = conversation(notice.conversation_href)
                if conv is None:
                    return
                conv.messaging_state = notice.state or conv.messaging_state
                links = {
                    "sendMessage": notice.send_message_href,
                    "stopMessaging": notice.stop_messaging_href,
                    "addMessaging": notice.add_messaging_href,
                    "setIsTyping": notice.set_is_typing_href,
                    "messaging": notice.href,
                }
                conv.links = {k: resolve(base_url, v) for k, v in links.items() if v}
                if notice.negotiated_formats:
                    conv.formats = list(notice.negotiated_formats)
            elif isinstance(notice, InvitationOutcome):
                conv = conversation(notice.conversation_href)
                if conv is not None:
                    conv.remote = conv.remote or notice.remote_uri
                    conv.thread_id = notice.thread_id or conv.thread_id
                    conv.direction = notice.direction or conv.direction
            elif isinstance(notice, IncomingInvitation):
                conv = conversation(notice.conversation_href)
                if conv is not None:
                    conv.direction = "Incoming"
                    conv.remote = notice.from_uri or conv.remote
                    conv.remote_name = notice.from_name or conv.remote_name
                    conv.thread_id = notice.thread_id or conv.thread_id
                    conv.subject = notice.subject or conv.subject
                if notice.event_type == "started" and notice.accept_href:
                    result.accepts.append(resolve(base_url, notice.accept_href))
                if self.inbound_hook is not None:
                    self.inbound_hook(pipe, notice, conv)
            elif isinstance(notice, IncomingMessage | TypingChanged | ParticipantChanged):
                conv = conversation(notice.conversation_href)
                if isinstance(notice, IncomingMessage):
                    result.inbound += 1
                    if conv is not None and _same_person(notice.from_uri, conv.remote):
                        # The display name an outgoing conversation never learned otherwise.
                        conv.remote_name = conv.remote_name or notice.from_name
                if self.inbound_hook is not None:
                    self.inbound_hook(pipe, notice, conv)

        for notice in notices:
            self._contained(pipe, "apply", notice, partial(apply, notice), result)
        if callable(end):
            end(pipe)
        for conv in cache.values():
            self._contained(pipe, "apply", conv, partial(self.registry.save, conv, pipe), result)
        self._hold(notices, base_url, pipe, result)
        return result

    def _hold(
        self,
        notices: list[Notice],
        base_url: str,
        pipe: redis.client.Pipeline,
        result: BatchResult,
    ) -> None:
        """Queue the batch's outcomes on ``pipe`` for ``settle``, in the cursor transaction."""
        held: list[dict[str, object]] = []

        def hold(notice: InvitationOutcome | MessageOutcome) -> None:
            held.append(_settlement(notice, base_url))

        for notice in notices:
            if isinstance(notice, MessageOutcome) or (
                isinstance(notice, InvitationOutcome) and notice.direction != "Incoming"
            ):
                self._contained(pipe, "settle", notice, partial(hold, notice), result)
        if held:
            pipe.rpush(self.unsettled_key, json.dumps(held))
            pipe.expire(self.unsettled_key, OP_TTL_S)
            result.held += len(held)
            # What ``settle`` reads first, read by the same transaction: the held entries, and
            # the records this batch's outcomes name.
            result.reads_at = len(pipe.command_stack)
            pipe.lrange(self.unsettled_key, 0, -1)
            result.read_operations = _operations(held)
            if result.read_operations:
                pipe.mget([record_key(op) for op in result.read_operations])

    def settle(self, result: BatchResult | None = None, answers: list[Any] | None = None) -> None:
        """Settle every held outcome, oldest batch first, and only then drop its entry.
        ``answers``: those of the cursor transaction that queued ``result``'s reads.

        Idempotent: an outcome settled twice (a poller stopped between the two steps, or two
        pollers at a handover) changes nothing the second time."""
        entries: list[bytes] | None = None
        preread: dict[str, bytes | None] = {}
        at = result.reads_at if result is not None else None
        if result is not None and at is not None and answers is not None:
            entries = answers[at]
            if result.read_operations:
                preread = dict(zip(result.read_operations, answers[at + 1], strict=True))
        if entries is None:
            entries = cast(list[bytes], self.redis.lrange(self.unsettled_key, 0, -1))
        for raw in entries:
            try:
                items = json.loads(raw)
                if not isinstance(items, list):
                    raise ValueError("a held entry is not a list")
            except ValueError as exc:
                items = []
                self._quarantine_now("settle", exc, raw)
            read = self._read_messages(items, preread)
            for item in items:
                try:
                    self._settle_one(item, result, read)
                except Exception as exc:
                    if passes_through(exc):
                        raise
                    self._quarantine_now("settle", exc, item)
                    if result is not None:
                        result.quarantined += 1
            self.redis.lrem(self.unsettled_key, 1, raw)  # type: ignore[arg-type]  # bytes work

    def _quarantine_now(self, stage: str, error: BaseException, item: object) -> None:
        with self.redis.pipeline() as pipe:
            self.quarantine.record(pipe, stage, error, item)
            pipe.execute()

    def _read_messages(
        self, items: list[Any], preread: dict[str, bytes | None]
    ) -> dict[str, bytes | None]:
        """The records the entry's operations name, in one round trip at most (none when the
        cursor transaction read them: ``preread``, each taken once). Each is used once, by its
        first outcome in the entry (a later one reads its record again)."""
        read: dict[str, bytes | None] = {}
        operations = []
        for op in _operations(items):
            if op in preread:
                read[op] = preread.pop(op)
            else:
                operations.append(op)
        if operations:
            raws = self.redis.mget([record_key(op) for op in operations])
            read.update(zip(operations, cast(list[bytes | None], raws), strict=True))
        return read

    def _settle_one(
        self, item: dict[str, Any], result: BatchResult | None, read: dict[str, bytes | None]
    ) -> None:
        operation = item.get("operation")
        reason = Reason(**item["reason"]) if item.get("reason") else None
        if operation and operation in read:
            raw = read.pop(operation)
            record = MessageRecord.from_json(raw) if raw is not None else None
        else:
            record = self._message(operation) if operation else None
        message_id = record.id if record is not None else None
        if item["kind"] == "invitation":
            if message_id is None:
                return
            self.outbound.settle(
                message_id,
                bool(item["success"]),
                reason,
                item.get("state"),
                conversation_href=item.get("conversation"),
                record=record,
            )
        else:
            if message_id is None:
                outcome = {
                    "status": "Success" if item["success"] else "Failure",
                    "reason": item.get("reason"),
                }
                message_id = self.outbound.post_href_outcome(item["href"], outcome)
                if not message_id:
                    return
            self.outbound.settle(
                message_id,
                bool(item["success"]),
                reason,
                conversation_href=item.get("conversation"),
                record=record,
            )
        if result is not None:
            result.settled.append(message_id)

    def _message(self, message_id: str) -> MessageRecord | None:
        """The record an operation id names, if it is one of our messages."""
        try:
            return self.outbound.store.get(message_id)
        except MessageNotFound:
            return None


def _settlement(notice: InvitationOutcome | MessageOutcome, base_url: str) -> dict[str, Any]:
    """What ``EventSink.settle`` needs of an outcome, as JSON (links made absolute). A message's
    conversation comes along too: its outcome may beat the worker's record of it."""
    conversation = notice.conversation_href
    item: dict[str, Any] = {
        "operation": notice.operation_id,
        "success": notice.success,
        "reason": notice.reason.__dict__ if notice.reason else None,
        "conversation": resolve(base_url, conversation) if conversation else None,
    }
    if isinstance(notice, InvitationOutcome):
        return {"kind": "invitation", "state": notice.state, **item}
    return {"kind": "message", "href": resolve(base_url, notice.href or ""), **item}


def _operations(items: list[Any]) -> list[str]:
    """The operation ids of held outcomes, once each, sorted."""
    return sorted(
        {
            item["operation"]
            for item in items
            if isinstance(item, dict) and isinstance(item.get("operation"), str)
        }
    )


def _named_conversations(notices: list[Notice], base_url: str) -> set[str]:
    """The absolute hrefs of the conversations whose records ``apply_state`` updates for
    ``notices`` (unusable ones left out): a message's outcome updates none."""
    hrefs: set[str] = set()
    for notice in notices:
        if isinstance(notice, NeedsFetch | MessageOutcome):
            continue
        href = notice.href if isinstance(notice, ConversationChanged) else notice.conversation_href
        if isinstance(href, str) and href:
            hrefs.add(href)
    return set(_absolute(base_url, hrefs).values())


def _live_remotes(hrefs: dict[str, str], known: dict[str, bytes | None]) -> dict[str, str]:
    """For ``{name: absolute href}``: name → remote SIP URI of each live conversation kept
    with a remote. A record that cannot be read gives none."""
    found: dict[str, str] = {}
    for name, href in hrefs.items():
        raw = known.get(href)
        if raw is None:
            continue
        try:
            conv = ConversationRegistry.load(raw)
        except Exception as exc:  # its notices meet it again in ``apply_state``, contained
            if passes_through(exc):
                raise
            continue
        if conv.remote and conv.alive:
            found[name] = conv.remote
    return found


def _same_person(uri: str | None, remote: str | None) -> bool:
    def bare(value: str) -> str:
        return value.strip().lower().removeprefix("sip:")

    return bool(uri and remote) and bare(uri or "") == bare(remote or "")


def _absolute(base_url: str, hrefs: set[str]) -> dict[str, str]:
    """href as an event writes it → absolute href, as the registry keeps it; an unusable href
    is left out (the event that carries it is set aside when it is classified)."""
    found: dict[str, str] = {}
    for href in hrefs:
        try:
            found[href] = resolve(base_url, href)
        except InvalidLink:
            continue
    return found
