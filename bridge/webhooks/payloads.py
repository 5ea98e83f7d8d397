"""The webhook event bodies as pydantic models: what the OpenAPI document's ``webhooks`` section
publishes, so receiver teams can generate their models, and what the tests check every event
the bridge sends against.

The producers build plain dicts (``bridge.inbound.events``, ``bridge.outbound.status_events``);
these models describe them and are never used to build them, so a producer that drifts from
the published shape fails the tests instead of silently changing the contract.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bridge.webhooks.events import EventType

Timestamp = Annotated[str, Field(description="RFC 3339, UTC, milliseconds, Z suffix")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Person(_Strict):
    uri: str | None = Field(description="SIP URI")
    name: str | None = Field(description="display name, when UCWA gave one")


class UcwaErrorDetail(_Strict):
    code: str | None = None
    subcode: str | None = None
    message: str | None = None
    diagnostics: str | None = Field(None, description="the server's X-Ms-diagnostics header")


class MessageErrorDetail(_Strict):
    code: str = Field(description="stable bridge error code (README: Error codes)")
    message: str
    ucwa: UcwaErrorDetail | None = None


class MessageReceivedData(_Strict):
    message_id: str = Field(description="stable per incoming message: a repeat has the same id")
    conversation: str | None = Field(description="conv_… id; reply with POST /messages")
    sender: Person = Field(alias="from")
    text: str
    html: str | None = Field(description="sanitised HTML, when the message had HTML")
    received_at: Timestamp
    account: str = Field(description="the id of the account that received it")


class MessageStatusData(_Strict):
    message_id: str
    status: Literal["delivered", "failed", "expired", "cancelled"]
    to: str | None
    conversation: str | None
    error: MessageErrorDetail | None
    history: dict[str, Timestamp] = Field(description="status → when it was reached")
    attempts: int
    previous_error: MessageErrorDetail | None = Field(
        None, description="delivered after it had ended outcome_unknown: that earlier error"
    )
    broadcast: str | None = Field(None, description="the broadcast that created the message")
    account: str = Field(description="the id of the account the message was sent as")


class ConversationTypingData(_Strict):
    conversation: str
    participant: Person
    typing: bool
    at: Timestamp
    account: str = Field(description="the id of the account in the conversation")


class ConversationEndedData(_Strict):
    conversation: str
    remote: Person
    ended_at: Timestamp
    account: str = Field(description="the id of the account in the conversation")


DATA_MODELS: dict[EventType, type[BaseModel]] = {
    EventType.MESSAGE_RECEIVED: MessageReceivedData,
    EventType.MESSAGE_DELIVERED: MessageStatusData,
    EventType.MESSAGE_FAILED: MessageStatusData,
    EventType.MESSAGE_EXPIRED: MessageStatusData,
    EventType.MESSAGE_CANCELLED: MessageStatusData,
    EventType.CONVERSATION_TYPING: ConversationTypingData,
    EventType.CONVERSATION_ENDED: ConversationEndedData,
}

DESCRIPTIONS: dict[EventType, str] = {
    EventType.MESSAGE_RECEIVED: "Someone sent the bot an instant message.",
    EventType.MESSAGE_DELIVERED: "A message accepted by POST /messages was delivered.",
    EventType.MESSAGE_FAILED: "A message failed; error says why.",
    EventType.MESSAGE_EXPIRED: "A message was not sent within its validity.",
    EventType.MESSAGE_CANCELLED: "A message was cancelled before it was sent (error.message "
    "is the reason); the next one to that person starts.",
    EventType.CONVERSATION_TYPING: "The remote started or stopped typing (opt-in).",
    EventType.CONVERSATION_ENDED: "The remote left or the conversation ended (opt-in).",
}


def envelope_schema(event_type: EventType, data_ref: str) -> dict[str, Any]:
    """The JSON schema of one event's body: ``{id, type, timestamp, data}``."""
    return {
        "type": "object",
        "description": DESCRIPTIONS[event_type],
        "required": ["id", "type", "timestamp", "data"],
        "additionalProperties": False,
        "properties": {
            "id": {
                "type": "string",
                "description": "evt_…; the same for every attempt (and the webhook-id header)",
            },
            "type": {"type": "string", "const": event_type.value},
            "timestamp": {"type": "string", "format": "date-time"},
            "data": {"$ref": data_ref},
        },
    }


def validate_event(event: dict[str, Any]) -> BaseModel:
    """Check an event body against its published model (ValueError or ValidationError)."""
    if set(event) != {"id", "type", "timestamp", "data"}:
        raise ValueError(f"envelope fields {sorted(event)}")
    model = DATA_MODELS[EventType(event["type"])]
    return model.model_validate(event["data"])
