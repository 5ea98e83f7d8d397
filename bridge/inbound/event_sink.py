"""Applies what the event channel said to Redis: conversations, operation outcomes, cursor.

The poller calls it once per event batch; outcomes settle the waiting outbound messages.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from bridge.outbound.messages import MessageNotFound
from bridge.outbound.outcomes import Outbound
from bridge.session.conversations import Conversation, ConversationRegistry
from bridge.ucwa.events import EventBatch
from bridge.ucwa.links import resolve
from bridge.ucwa.notices import (
    ConversationChanged,
    IncomingInvitation,
    IncomingMessage,
    InvitationOutcome,
    MessageOutcome,
    MessagingChanged,
    Notice,
    ParticipantChanged,
    TypingChanged,
    interpret,
)

log = logging.getLogger(__name__)

# Called inside the cursor transaction for inbound notices (webhook staging lives there).
InboundHook = Callable[[redis.client.Pipeline, Notice, Conversation | None], None]


@dataclass
class BatchResult:
    """What applying one batch did, for logs, metrics and tests."""

    settled: list[str] = field(default_factory=list)
    accepts: list[str] = field(default_factory=list)
    inbound: int = 0


class EventSink:
    """Turns notices into registry entries and message outcomes for one application."""

    def __init__(
        self,
        client: redis.Redis,
        account: str,
        outbound: Outbound | None = None,
        inbound_hook: InboundHook | None = None,
    ) -> None:
        self.redis = client
        self.account = account
        self.registry = ConversationRegistry(client, account)
        self.outbound = outbound or Outbound(client)
        self.inbound_hook = inbound_hook

    def notices(self, batch: EventBatch, base_url: str) -> list[Notice]:
        known = {conv.href: conv.remote for conv in self.registry.active() if conv.remote}
        relative = {href.replace(base_url, "", 1): uri for href, uri in known.items() if uri}
        return interpret(batch, {**known, **relative})

    def note_operations(
        self, batch: EventBatch, base_url: str, pipe: redis.client.Pipeline
    ) -> None:
        """Remember every operationId the server echoed, so an ambiguous POST can be settled."""
        for _, event in batch.events():
            res = event.embedded
            if not res or event.rel not in ("messagingInvitation", "message"):
                continue
            operation = res.get("operationId")
            if not isinstance(operation, str) or res.get("direction") == "Incoming":
                continue
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
        begin = getattr(self.inbound_hook, "begin_batch", None)
        if callable(begin):
            begin()
        cache: dict[str, Conversation] = {}
        now = time.time()

        def conversation(href: str | None, create: bool = True) -> Conversation | None:
            if not href:
                return None
            absolute = resolve(base_url, href)
            if absolute in cache:
                return cache[absolute]
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

        for notice in notices:
            if isinstance(notice, ConversationChanged):
                conv = conversation(notice.href)
                if conv is None:
                    continue
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
                    continue
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
                if self.inbound_hook is not None:
                    self.inbound_hook(pipe, notice, conv)
        for conv in cache.values():
            self.registry.save(conv, pipe)
        return result

    def settle(self, notices: list[Notice], base_url: str, result: BatchResult) -> None:
        """Settle outbound messages; idempotent, so a re-delivered batch changes nothing."""
        for notice in notices:
            if isinstance(notice, InvitationOutcome) and notice.direction != "Incoming":
                if notice.operation_id and self._is_message(notice.operation_id):
                    self.outbound.settle(
                        notice.operation_id, notice.success, notice.reason, notice.state
                    )
                    result.settled.append(notice.operation_id)
            elif isinstance(notice, MessageOutcome):
                message_id = notice.operation_id if notice.operation_id else None
                if message_id is None or not self._is_message(message_id):
                    href = resolve(base_url, notice.href or "")
                    outcome = {
                        "status": "Success" if notice.success else "Failure",
                        "reason": notice.reason.__dict__ if notice.reason else None,
                    }
                    message_id = self.outbound.post_href_outcome(href, outcome)
                if message_id:
                    self.outbound.settle(message_id, notice.success, notice.reason)
                    result.settled.append(message_id)

    def _is_message(self, message_id: str) -> bool:
        try:
            self.outbound.store.get(message_id)
        except MessageNotFound:
            return False
        return True
