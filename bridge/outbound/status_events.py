"""Outbound message outcomes as webhook events: ``message.delivered``, ``.failed``, ``.expired``,
``.cancelled``.

``status_hook`` builds the ``on_final`` callback ``Outbound`` runs once a message is final.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from redis.client import Pipeline

from bridge.outbound.messages import DEFAULT_ACCOUNT, MessageRecord, MessageStatus
from bridge.session.conversations import conversation_id
from bridge.webhooks.endpoints import WebhookEndpoint
from bridge.webhooks.events import EventType, new_event
from bridge.webhooks.outbox import stage_event
from bridge.webhooks.settings import WebhookSettings

EVENT_TYPES: dict[MessageStatus, EventType] = {
    MessageStatus.DELIVERED: EventType.MESSAGE_DELIVERED,
    MessageStatus.FAILED: EventType.MESSAGE_FAILED,
    MessageStatus.EXPIRED: EventType.MESSAGE_EXPIRED,
    MessageStatus.CANCELLED: EventType.MESSAGE_CANCELLED,
}


def status_event_id(event_type: str, message_id: str) -> str:
    """One final status per message, so its event id is derived: a repeat is the same event."""
    digest = hashlib.sha256(f"{event_type}\n{message_id}".encode()).hexdigest()
    return f"evt_{digest[:24]}"


def status_data(record: MessageRecord, account: str | None = None) -> dict[str, Any]:
    """The ``data`` of a status event. ``conversation`` is the one the caller replied into or,
    when ``account`` is given, the one the bridge used, so replies can be matched to it."""
    conversation = record.conversation
    if conversation is None and account and record.conversation_href:
        conversation = conversation_id(account, record.conversation_href)
    data = {
        "message_id": record.id,
        "status": record.status.value,
        "to": record.to,
        "conversation": conversation,
        "error": asdict(record.error) if record.error else None,
        "history": dict(record.history),
        "attempts": record.attempts,
        "account": record.account or DEFAULT_ACCOUNT,
    }
    if record.broadcast is not None:
        data["broadcast"] = record.broadcast
    if record.previous_error is not None:  # delivered after it had ended ``outcome_unknown``
        data["previous_error"] = asdict(record.previous_error)
    return data


def status_event(
    record: MessageRecord, now: datetime, account: str | None = None
) -> dict[str, Any] | None:
    """The webhook event for a final record; None while the message is not final."""
    event_type = EVENT_TYPES.get(record.status)
    if event_type is None:
        return None
    event = new_event(event_type, status_data(record, account), now)
    event["id"] = status_event_id(event_type, record.id)
    return event


def _utc_now() -> datetime:
    return datetime.now(UTC)


def status_hook(
    endpoints: Sequence[WebhookEndpoint],
    settings: WebhookSettings | None = None,
    *,
    account: str | None = None,
    clock: Callable[[], datetime] = _utc_now,
) -> Callable[[Pipeline, MessageRecord], None]:
    """``Outbound(on_final=...)``: stage the record's status event on the caller's pipeline."""
    targets = list(endpoints)

    def on_final(pipe: Pipeline, record: MessageRecord) -> None:
        event = status_event(record, clock(), account)
        if event is not None:
            stage_event(pipe, event, targets, settings)

    return on_final
