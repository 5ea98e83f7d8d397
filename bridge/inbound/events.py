"""Inbound IMs, typing and ended conversations as webhook events, staged in the cursor transaction.

Forwards each typed IM exactly once: the invitation's first message, not its documented repeat.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urljoin

import redis
from redis.client import Pipeline

from bridge.config.accounts import DEFAULT_ID
from bridge.config.redis_text import text_or_none
from bridge.session.conversations import Conversation, ConversationLog, conversation_id
from bridge.ucwa.datauri import DataContent, decode_data_uri, html_to_text
from bridge.ucwa.errors import InvalidDataUri
from bridge.ucwa.html_policy import sanitize_html
from bridge.ucwa.notices import (
    ConversationChanged,
    IncomingInvitation,
    IncomingMessage,
    Notice,
    TypingChanged,
    first_message_key,
)
from bridge.webhooks.endpoints import WebhookEndpoint
from bridge.webhooks.events import EventType, new_event, rfc3339
from bridge.webhooks.outbox import Outbox
from bridge.webhooks.settings import WebhookSettings

log = logging.getLogger(__name__)

STATE_TTL_S = 86_400
KEY_PREFIX = "inbound:"


def seen_key(item_id: str) -> str:
    """An inbound message (or invitation first message) already forwarded or suppressed."""
    return f"{KEY_PREFIX}seen:{item_id}"


def first_key(conv_id: str) -> str:
    """The first message an invitation carried, until the conversation's next message event."""
    return f"{KEY_PREFIX}first:{conv_id}"


def typing_key(conv_id: str, uri: str) -> str:
    return f"{KEY_PREFIX}typing:{conv_id}:{uri.lower()}"


def ended_key(conv_id: str) -> str:
    return f"{KEY_PREFIX}ended:{conv_id}"


# -- pure parts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MessageBody:
    """What a webhook carries: the plain text, and sanitised HTML when the sender sent HTML."""

    text: str
    html: str | None


def decode_body(data_uris: Iterable[str | None]) -> MessageBody | None:
    """Decode ``plainMessage``/``htmlMessage``/invitation ``message`` data URIs (URL or base64).

    The media type of each URI decides what it is. Text prefers the plain part, else renders
    the HTML. None when nothing decodes.
    """
    plain: DataContent | None = None
    html: DataContent | None = None
    for uri in data_uris:
        if not uri:
            continue
        try:
            content = decode_data_uri(uri)
        except InvalidDataUri:
            # The error text may quote the start of the body: keep it out of the logs.
            log.warning("a message body is not a decodable data URI; part skipped")
            continue
        if content.is_html:
            html = html or content
        else:
            plain = plain or content
    if plain is None and html is None:
        return None
    if plain is not None:
        text = plain.text
    else:
        assert html is not None
        text = html_to_text(html.text)
    return MessageBody(
        text=strip_line_end(text), html=sanitize_html(html.text) if html is not None else None
    )


def strip_line_end(text: str) -> str:
    """Drop the trailing CR/LF characters the SfB client appends to every message."""
    return text.rstrip("\r\n")


def same_text_key(conv_key: str, text: str) -> str:
    """Compared to tell the invitation's first message from its repeat; whitespace-insensitive."""
    return first_message_key(conv_key, " ".join(text.split()))


def message_id_for(account: str, href: str) -> str:
    """Stable public id of an inbound message, from its UCWA href (message or invitation)."""
    digest = hashlib.sha256(f"{account}\n{href}".encode()).hexdigest()
    return f"im_{digest[:24]}"


def event_id_for(event_type: str, item_id: str) -> str:
    """A stable webhook-id for a one-off event, so a re-staged event is recognisably the same."""
    digest = hashlib.sha256(f"{event_type}\n{item_id}".encode()).hexdigest()
    return f"evt_{digest[:24]}"


def _bare(uri: str | None) -> str:
    value = (uri or "").strip().lower()
    return value[4:] if value.startswith("sip:") else value


class DedupeState(Protocol):
    """Where dedupe state lives: Redis in production (written through the cursor transaction)."""

    def get(self, key: str) -> str | None: ...

    def set(self, key: str, value: str) -> None: ...

    def delete(self, key: str) -> None: ...


class MemoryState:
    """A dict-backed ``DedupeState``, for tests and dry runs."""

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self.values: dict[str, str] = dict(values or {})

    def get(self, key: str) -> str | None:
        return self.values.get(key)

    def set(self, key: str, value: str) -> None:
        self.values[key] = value

    def delete(self, key: str) -> None:
        self.values.pop(key, None)


class BatchState:
    """Redis state for one cursor transaction: reads committed values with a separate client,
    queues writes on the transaction's pipeline, and remembers them for later notices of the batch.
    """

    def __init__(self, reader: redis.Redis, pipe: Pipeline, ttl_s: int, outbox: Outbox) -> None:
        self.reader = reader
        self.pipe = pipe
        self.ttl_s = ttl_s
        self.outbox = outbox
        self._local: dict[str, str | None] = {}

    def prefetch(self, keys: Sequence[str]) -> None:
        missing = [k for k in keys if k not in self._local]
        if missing:
            for key, value in zip(missing, self.reader.mget(missing), strict=True):
                self._local[key] = text_or_none(value)

    def get(self, key: str) -> str | None:
        if key not in self._local:
            self._local[key] = text_or_none(self.reader.get(key))
        return self._local[key]

    def set(self, key: str, value: str) -> None:
        self._local[key] = value
        self.pipe.set(key, value, ex=self.ttl_s)

    def delete(self, key: str) -> None:
        self._local[key] = None
        self.pipe.delete(key)


def _utc_now() -> datetime:
    return datetime.now(UTC)


# -- the hook --------------------------------------------------------------------------------


class InboundEvents:
    """The poller's inbound hook: notices in, webhook events staged on the cursor transaction.

    Call ``begin_batch()`` before each cursor transaction (a new pipeline also starts one), so
    state remembered from an aborted transaction never leaks into its retry. With
    ``begin_batch(defer_jobs=True)`` the delivery jobs of the whole transaction are written by
    ``end_batch(pipe)``, so deliveries to one endpoint share jobs; otherwise each notice's.
    """

    def __init__(
        self,
        endpoints: Sequence[WebhookEndpoint],
        account: str,
        *,
        settings: WebhookSettings | None = None,
        clock: Callable[[], datetime] = _utc_now,
        typing_events: bool = False,
        ended_events: bool = False,
        state_ttl_s: int = STATE_TTL_S,
        reader: redis.Redis | None = None,
        account_id: str = DEFAULT_ID,
    ) -> None:
        self.endpoints = list(endpoints)
        self.account = account
        self.account_id = account_id  # the receiving account, named in every event
        self.settings = settings
        self.clock = clock
        self.typing_events = typing_events and self._wanted(EventType.CONVERSATION_TYPING)
        self.ended_events = ended_events and self._wanted(EventType.CONVERSATION_ENDED)
        self.state_ttl_s = state_ttl_s
        self.reader = reader
        self._batch: BatchState | None = None
        self._defer_jobs = False

    def _wanted(self, event_type: str) -> bool:
        return any(e.enabled and e.wants(event_type) for e in self.endpoints)

    def begin_batch(self, defer_jobs: bool = False) -> None:
        """Forget the per-transaction memory; the next call starts from committed Redis state.
        ``defer_jobs``: the caller calls ``end_batch`` before it executes the transaction."""
        self._batch = None
        self._defer_jobs = defer_jobs

    def end_batch(self, pipe: Pipeline) -> None:
        """Write the delivery jobs of everything staged on ``pipe`` since ``begin_batch``."""
        if self._batch is not None and self._batch.pipe is pipe:
            self._batch.outbox.flush()
        self._defer_jobs = False

    def __call__(self, pipe: Pipeline, notice: Notice, conversation: Conversation | None) -> None:
        """The ``InboundHook``: see ``handle``."""
        self.handle(pipe, notice, conversation)

    def handle(
        self, pipe: Pipeline, notice: Notice, conversation: Conversation | None
    ) -> list[str]:
        """Queue dedupe state and the notice's webhook events on ``pipe`` (in MULTI); return the
        staged delivery ids. Nothing is written unless the caller's transaction commits."""
        if pipe.watching and not pipe.explicit_transaction:
            raise ValueError("inbound hook: call pipe.multi() after WATCH, before the hook")
        batch = self._batch
        if batch is None or batch.pipe is not pipe:
            reader = self.reader or redis.Redis(connection_pool=pipe.connection_pool)
            outbox = Outbox(pipe, self.endpoints, self.settings)
            batch = self._batch = BatchState(reader, pipe, self.state_ttl_s, outbox)
        if isinstance(notice, IncomingMessage):
            conv_id = self._conv_id(notice.conversation_href, conversation)
            item = self._message_item(notice, conversation)
            keys = [seen_key(message_id_for(self.account, item))]
            batch.prefetch([*keys, first_key(conv_id)] if conv_id else keys)
        staged: list[str] = []
        for event in self.events_for(notice, conversation, batch):
            if event["type"] == EventType.MESSAGE_RECEIVED:
                _log_received(pipe, event["data"], self.clock())
            staged += batch.outbox.stage(event)
        if not self._defer_jobs:
            batch.outbox.flush()
        return staged

    # -- decisions over a DedupeState (no Redis here) -------------------------------------------

    def events_for(
        self, notice: Notice, conversation: Conversation | None, state: DedupeState
    ) -> list[dict[str, Any]]:
        """The webhook events one notice produces, updating ``state``; the same input twice
        against the updated state produces nothing the second time."""
        if isinstance(notice, IncomingInvitation):
            return self._invitation(notice, conversation, state)
        if isinstance(notice, IncomingMessage):
            return self._message(notice, conversation, state)
        if isinstance(notice, TypingChanged):
            return self._typing(notice, conversation, state) if self.typing_events else []
        if isinstance(notice, ConversationChanged) and notice.change == "deleted":
            return self._ended(notice, conversation, state) if self.ended_events else []
        return []

    def _conv_id(self, href: str | None, conversation: Conversation | None) -> str | None:
        if conversation is not None:
            return conversation.id
        return conversation_id(self.account, href) if href else None

    def _absolute(self, href: str, conversation: Conversation | None) -> str:
        return urljoin(conversation.href, href) if conversation is not None else href

    def _message_item(self, notice: IncomingMessage, conversation: Conversation | None) -> str:
        if notice.href:
            return self._absolute(notice.href, conversation)
        # No href (never seen in practice): fall back on what a re-delivery repeats verbatim.
        moment = notice.timestamp.isoformat() if notice.timestamp else ""
        parts = (notice.conversation_href, moment, notice.plain_data_uri, notice.html_data_uri)
        return "\n".join(p or "" for p in parts)

    def _invitation(
        self, notice: IncomingInvitation, conversation: Conversation | None, state: DedupeState
    ) -> list[dict[str, Any]]:
        if not notice.message_data_uri:
            return []  # opened without a first message: the message events carry everything
        conv_id = self._conv_id(notice.conversation_href, conversation)
        fallback = f"{notice.conversation_href}#invitation#{notice.message_data_uri}"
        item = self._absolute(notice.href or fallback, conversation)
        message_id = message_id_for(self.account, item)
        if state.get(seen_key(message_id)) is not None:
            return []  # ``started`` then ``updated``, or a re-delivered batch
        state.set(seen_key(message_id), "invitation")
        body = decode_body([notice.message_data_uri])
        if body is None:
            log.warning(
                "incoming invitation's first message did not decode; dropped",
                extra={"message_id": message_id},
            )
            return []
        if conv_id:
            # The conversation's next message event repeats this text (ReceiveAnIM.md step 16).
            state.set(first_key(conv_id), same_text_key(conv_id, body.text))
        log.info("incoming message", extra={"message_id": message_id, "conversation": conv_id})
        sender = {
            "uri": notice.from_uri or (conversation.remote if conversation else None),
            "name": notice.from_name or (conversation.remote_name if conversation else None),
        }
        return [self._received(message_id, conv_id, sender, body, None)]

    def _message(
        self, notice: IncomingMessage, conversation: Conversation | None, state: DedupeState
    ) -> list[dict[str, Any]]:
        message_id = message_id_for(self.account, self._message_item(notice, conversation))
        if state.get(seen_key(message_id)) is not None:
            return []  # ``started`` then ``completed``, or a re-delivered batch
        state.set(seen_key(message_id), "message")
        body = decode_body([notice.plain_data_uri, notice.html_data_uri])
        conv_id = self._conv_id(notice.conversation_href, conversation)
        if conv_id:
            pending = state.get(first_key(conv_id))
            if pending is not None:
                # Only the first message event after the invitation can be its repeat.
                state.delete(first_key(conv_id))
                if body is not None and pending == same_text_key(conv_id, body.text):
                    log.info(
                        "repeat of the invitation's first message suppressed",
                        extra={"message_id": message_id, "conversation": conv_id},
                    )
                    return []
        if body is None:
            log.warning(
                "incoming message without a decodable body; dropped",
                extra={"message_id": message_id, "conversation": conv_id},
            )
            return []
        log.info("incoming message", extra={"message_id": message_id, "conversation": conv_id})
        sender = {
            "uri": notice.from_uri or (conversation.remote if conversation else None),
            "name": notice.from_name or (conversation.remote_name if conversation else None),
        }
        return [self._received(message_id, conv_id, sender, body, notice.timestamp)]

    def _received(
        self,
        message_id: str,
        conv_id: str | None,
        sender: dict[str, str | None],
        body: MessageBody,
        timestamp: datetime | None,
    ) -> dict[str, Any]:
        now = self.clock()
        data = {
            "message_id": message_id,
            "conversation": conv_id,
            "from": sender,
            "text": body.text,
            "html": body.html,
            "received_at": rfc3339(timestamp or now),
            "account": self.account_id,
        }
        event = new_event(EventType.MESSAGE_RECEIVED, data, now)
        event["id"] = event_id_for(EventType.MESSAGE_RECEIVED, message_id)
        return event

    def _typing(
        self, notice: TypingChanged, conversation: Conversation | None, state: DedupeState
    ) -> list[dict[str, Any]]:
        conv_id = self._conv_id(notice.conversation_href, conversation)
        uri = notice.participant_uri or (conversation.remote if conversation else None)
        if not conv_id or not uri or _bare(uri) == _bare(self.account):
            return []
        key = typing_key(conv_id, uri)
        was_typing = state.get(key) == "1"
        if was_typing == notice.typing:
            return []  # no change, or a re-delivered batch
        state.set(key, "1" if notice.typing else "0")
        remote = conversation is not None and _bare(conversation.remote) == _bare(uri)
        now = self.clock()
        data = {
            "conversation": conv_id,
            "participant": {
                "uri": uri,
                "name": conversation.remote_name if remote and conversation else None,
            },
            "typing": notice.typing,
            "at": rfc3339(now),
            "account": self.account_id,
        }
        return [new_event(EventType.CONVERSATION_TYPING, data, now)]

    def _ended(
        self, notice: ConversationChanged, conversation: Conversation | None, state: DedupeState
    ) -> list[dict[str, Any]]:
        conv_id = self._conv_id(notice.href, conversation)
        if not conv_id or state.get(ended_key(conv_id)) is not None:
            return []
        state.set(ended_key(conv_id), "1")
        now = self.clock()
        data = {
            "conversation": conv_id,
            "remote": {
                "uri": (conversation.remote if conversation else None) or notice.remote_uri,
                "name": conversation.remote_name if conversation else None,
            },
            "ended_at": rfc3339(now),
            "account": self.account_id,
        }
        event = new_event(EventType.CONVERSATION_ENDED, data, now)
        event["id"] = event_id_for(EventType.CONVERSATION_ENDED, conv_id)
        return [event]


def _log_received(pipe: Pipeline, data: dict[str, Any], now: datetime) -> None:
    """An inbound message in its conversation's log (``GET /conversations/<id>``)."""
    conv_id = data.get("conversation")
    if not isinstance(conv_id, str):
        return
    entry = {
        "direction": "inbound",
        "message_id": data["message_id"],
        "from": data["from"],
        "text": data["text"],
        "html": data["html"],
        "at": data["received_at"],
    }
    ConversationLog.add(pipe, conv_id, entry, now.timestamp())
