"""Webhook event types and the event envelope ``{id, type, timestamp, data}``.

Pure: builds envelopes and their exact JSON body bytes; no I/O.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    MESSAGE_RECEIVED = "message.received"
    MESSAGE_DELIVERED = "message.delivered"
    MESSAGE_FAILED = "message.failed"
    MESSAGE_EXPIRED = "message.expired"
    MESSAGE_CANCELLED = "message.cancelled"
    CONVERSATION_TYPING = "conversation.typing"
    CONVERSATION_ENDED = "conversation.ended"


ALL_EVENT_TYPES: frozenset[str] = frozenset(t.value for t in EventType)

# Chatty conversation events reach only endpoints that list them explicitly.
DEFAULT_EVENT_TYPES: frozenset[str] = ALL_EVENT_TYPES - {
    EventType.CONVERSATION_TYPING.value,
    EventType.CONVERSATION_ENDED.value,
}


def rfc3339(moment: datetime) -> str:
    """UTC RFC 3339 with millisecond precision and a ``Z`` suffix."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_event_id() -> str:
    return "evt_" + secrets.token_hex(12)


def new_event(type: str, data: dict[str, Any], now: datetime) -> dict[str, Any]:
    """Build an event envelope with a fresh unique id; ``now`` must be timezone-aware."""
    if type not in ALL_EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {type!r}")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return {"id": new_event_id(), "type": type, "timestamp": rfc3339(now), "data": data}


def encode_event(event: dict[str, Any]) -> bytes:
    """The exact body bytes that are stored, signed and POSTed for this event."""
    for field in ("id", "type", "timestamp", "data"):
        if field not in event:
            raise ValueError(f"webhook event lacks {field!r}")
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
