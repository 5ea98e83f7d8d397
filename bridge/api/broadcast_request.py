"""The ``POST /broadcasts`` request model: a message body and up to 500 recipients."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from bridge.api.schemas import MAX_URI_CHARS, SIP_URI, Limits, MessageBody, parse_body
from bridge.outbound.broadcasts import MAX_RECIPIENTS


def _sip_uri(value: str) -> str:
    if not SIP_URI.fullmatch(value):
        raise PydanticCustomError("invalid_sip_uri", "must be a SIP URI like sip:user@domain")
    return value


Recipient = Annotated[str, Field(max_length=MAX_URI_CHARS), AfterValidator(_sip_uri)]


class SendBroadcastRequest(MessageBody):
    """Send one ``text``, ``html`` or ``markdown`` to every SIP URI in ``to``."""

    model_config = ConfigDict(extra="forbid", strict=True, title="SendBroadcastRequest")

    to: Annotated[
        list[Recipient],
        Field(
            min_length=1,
            max_length=MAX_RECIPIENTS,
            description=f"Recipients' SIP URIs, 1 to {MAX_RECIPIENTS}; one given twice "
            "(compared without case) gets one message.",
            examples=[["sip:alice@contoso.com", "sip:bob@contoso.com"]],
        ),
    ]

    def recipients(self) -> list[str]:
        """``to`` without repeats (compared without case), in the order first given."""
        seen: dict[str, str] = {}
        for uri in self.to:
            seen.setdefault(uri.strip().lower(), uri)
        return list(seen.values())


def parse_broadcast_request(body: Any, limits: Limits) -> SendBroadcastRequest:
    """Validate a decoded JSON body; a 413 or 422 ``Problem`` naming every bad field."""
    return parse_body(SendBroadcastRequest, body, limits)
