"""The ``POST /messages`` request model and its translation into field errors.

Pydantic checks types and single fields; cross-field rules and size limits are checked here.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from bridge.api.problems import PAYLOAD_TOO_LARGE, VALIDATION, FieldError, Problem
from bridge.config.accounts import ACCOUNT_ID
from bridge.config.settings import MAX_VALIDITY_S
from bridge.outbound.message_index import SCHEDULE_HORIZON_S
from bridge.ucwa.text import unencodable

MAX_SUBJECT_CHARS = 250
BODY_FIELDS = ("text", "html", "markdown")  # the forms of a message body: exactly one is given
INVALID_CHARACTERS = "invalid_characters"  # the code of a refused character, as at the boundary
MAX_REPORTED_ERRORS = 20  # a body of a thousand unknown fields gets a short answer
# The longest contact URI UCWA documents (removeContactFromAllGroups_ref.md, contactUri), and
# the simulator's limit on startMessaging's ``to``: a longer one would be accepted, then fail.
MAX_URI_CHARS = 250
# How late a send_at may be and still send at once (clocks disagree); earlier is refused.
SEND_AT_PAST_S = 60
# Written without flags so the OpenAPI document can carry the same patterns; used with fullmatch
# (a pattern's $ would also match before a trailing newline).
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
SIP_URI = re.compile(rf"^[Ss][Ii][Pp]:[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~.-]+@{_LABEL}(?:\.{_LABEL})*$")
# The shape of the ids the bridge issues (``conv_`` and 24 hex digits); anything else could
# name one of the registry's index keys instead of a conversation.
CONVERSATION_ID = re.compile(r"^conv_[0-9a-f]{24}$")
# Something other than whitespace (Python's and JavaScript's whitespace alike).
NOT_BLANK = re.compile(
    "[^\\t\\n\\v\\f\\r \\x1c-\\x1f\\x85\\xa0\\u1680\\u2000-\\u200a"
    "\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff]"
)
# For the OpenAPI document, which cannot run validators: something other than whitespace and
# none of the control characters the text policy refuses (bridge.ucwa.text.unencodable).
_CONTROLS = "\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f"
MESSAGE_TEXT = re.compile(
    f"^[^{_CONTROLS}]*"
    "[^\\x00-\\x20\\x7f\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff]"
    f"[^{_CONTROLS}]*$"
)

# RFC 3339 date-time (section 5.6): the offset is required; datetime checks the values.
RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$", re.ASCII
)


def parse_rfc3339(value: str) -> float:
    """Seconds since the epoch; ValueError unless ``value`` is an RFC 3339 date-time."""
    shape = RFC3339.fullmatch(value)
    if shape is None:
        raise ValueError(value)
    date, hour_minute, second, fraction, offset = shape.groups()
    leap = second == "60"  # RFC 3339 allows a leap second, which datetime cannot hold
    offset = "+00:00" if offset in ("Z", "z") else offset
    moment = datetime.fromisoformat(
        f"{date}T{hour_minute}:{'59' if leap else second}{(fraction or '')[:7]}{offset}"
    )
    return (moment + timedelta(seconds=1 if leap else 0)).timestamp()


class MessageBody(BaseModel):
    """What a message says and how it goes: the fields ``POST /messages`` and
    ``POST /broadcasts`` share."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: Annotated[
        str | None,
        Field(default=None, description="Plain-text message. Exactly one of text/html/markdown."),
    ]
    html: Annotated[
        str | None,
        Field(default=None, description="HTML message. Exactly one of text/html/markdown."),
    ]
    markdown: Annotated[
        str | None,
        Field(
            default=None,
            description="CommonMark message, sent as the HTML it renders to (raw HTML in it "
            "shows as text). Exactly one of text/html/markdown.",
        ),
    ]
    subject: Annotated[str | None, Field(default=None, max_length=MAX_SUBJECT_CHARS)]
    importance: Literal["Normal", "Urgent"] = "Normal"
    validity: Annotated[
        int | None,
        Field(
            default=None,
            gt=0,
            le=MAX_VALIDITY_S,
            description="Seconds before an undelivered message expires; the server default "
            "applies when absent.",
        ),
    ]

    from_: Annotated[
        str | None,
        Field(
            default=None,
            alias="from",
            pattern=ACCOUNT_ID.pattern,
            description="Id of the account to send as (see BRIDGE_ACCOUNTS); when absent, the "
            "first account the API key is bound to, else the default account. A reply into a "
            "conversation goes from the conversation's account.",
            examples=["bot"],
        ),
    ]
    send_at: Annotated[
        str | None,
        Field(
            default=None,
            json_schema_extra={"format": "date-time"},
            description="RFC 3339 time to send at, at most 7 days ahead: the message is "
            "scheduled until then (cancellable) and its validity runs from then. A time up to "
            f"{SEND_AT_PAST_S} s in the past sends at once; an earlier one is refused.",
            examples=["2026-05-01T09:00:00Z"],
        ),
    ]

    @field_validator("send_at")
    @classmethod
    def _send_at(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            moment = parse_rfc3339(value)
        except ValueError:
            raise PydanticCustomError(
                "invalid_date_time", "must be an RFC 3339 date-time with an offset"
            ) from None
        now = time.time()
        if moment < now - SEND_AT_PAST_S:
            raise PydanticCustomError("in_the_past", "is in the past")
        if moment > now + SCHEDULE_HORIZON_S:
            raise PydanticCustomError("too_far_ahead", "is more than 7 days ahead")
        return value

    @field_validator("validity", mode="before")
    @classmethod
    def _integral_number(cls, value: Any) -> Any:
        # JSON has one number type: 300.0 is the integer 300, as JSON Schema says too.
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value

    @field_validator("text", "html", "markdown", "subject")
    @classmethod
    def _message_text(cls, value: str | None) -> str | None:
        return checked_text(value)


class SendMessageRequest(MessageBody):
    """Send ``text``, ``html`` or ``markdown`` to ``to`` (a SIP URI) or into ``conversation``."""

    model_config = ConfigDict(extra="forbid", strict=True, title="SendMessageRequest")

    to: Annotated[
        str | None,
        Field(
            default=None,
            max_length=MAX_URI_CHARS,
            description="Recipient SIP URI, e.g. sip:alice@contoso.com. Exactly one of "
            "to/conversation.",
            examples=["sip:alice@contoso.com"],
        ),
    ]
    conversation: Annotated[
        str | None,
        Field(
            default=None,
            description="Id of an existing conversation to reply into. Exactly one of "
            "to/conversation.",
        ),
    ]

    @field_validator("to")
    @classmethod
    def _sip_uri(cls, value: str | None) -> str | None:
        if value is not None and not SIP_URI.fullmatch(value):
            raise PydanticCustomError("invalid_sip_uri", "must be a SIP URI like sip:user@domain")
        return value

    @field_validator("conversation")
    @classmethod
    def _conversation_id(cls, value: str | None) -> str | None:
        if value is not None and not CONVERSATION_ID.fullmatch(value):
            raise PydanticCustomError(
                "invalid_conversation_id",
                "must be a conversation id the bridge issued: conv_ and 24 hex digits",
            )
        return value


def checked_text(value: str | None) -> str | None:
    """A text field's value, refused (``PydanticCustomError``) if blank or carrying controls."""
    if value is None:
        return value
    # NUL, escape sequences and other controls either break the recipient's client or
    # are cut by UCWA after the message was accepted; the position helps find them.
    refused = unencodable(value)
    if refused is not None:
        raise PydanticCustomError(INVALID_CHARACTERS, refused)
    if not NOT_BLANK.search(value):
        raise PydanticCustomError("blank", "must not be empty or only whitespace")
    return value


DEFAULT_CANCEL_REASON = "cancelled by the caller"


class CancelMessageRequest(BaseModel):
    """The optional body of ``POST /messages/{id}/cancel``."""

    model_config = ConfigDict(extra="forbid", strict=True, title="CancelMessageRequest")

    reason: Annotated[
        str | None,
        Field(
            default=None,
            max_length=MAX_SUBJECT_CHARS,
            description="Why, kept as the message's error.message; "
            f"{DEFAULT_CANCEL_REASON!r} when absent.",
        ),
    ]

    @field_validator("reason")
    @classmethod
    def _reason_text(cls, value: str | None) -> str | None:
        return checked_text(value)


def parse_cancel_request(body: Any) -> str:
    """The reason in a decoded JSON body; a 422 ``Problem`` naming the bad field."""
    if not isinstance(body, dict):
        raise Problem(
            VALIDATION,
            "the request body must be a JSON object",
            errors=[FieldError("body", "must be a JSON object", "type")],
        )
    try:
        request = CancelMessageRequest.model_validate(body)
    except ValidationError as exc:
        errors = [_field_error(error) for error in exc.errors(include_url=False)]
        raise Problem(
            VALIDATION, f"{len(errors)} field(s) failed validation", errors=errors
        ) from None
    return request.reason or DEFAULT_CANCEL_REASON


@dataclass(frozen=True)
class Limits:
    max_message_chars: int


def parse_send_request(body: Any, limits: Limits) -> SendMessageRequest:
    """Validate a decoded JSON body; raise a 413 or 422 ``Problem`` naming every bad field."""
    return parse_body(SendMessageRequest, body, limits, ("to", "conversation"))


Body = TypeVar("Body", bound=MessageBody)


def parse_body(
    model: type[Body], body: Any, limits: Limits, recipients: tuple[str, ...] = ()
) -> Body:
    """``body`` as ``model``: a 413 for a text over the limit, else a 422 naming every bad
    field, also when not exactly one body form (and of ``recipients``, if several) is given."""
    if not isinstance(body, dict):
        raise Problem(
            VALIDATION,
            "the request body must be a JSON object",
            errors=[FieldError("body", "must be a JSON object", "type")],
        )
    oversized = [
        FieldError(name, f"must be at most {limits.max_message_chars} characters", "too_long")
        for name in BODY_FIELDS
        if isinstance(body.get(name), str) and len(body[name]) > limits.max_message_chars
    ]
    if oversized:
        raise Problem(PAYLOAD_TOO_LARGE, "the message is too long", errors=oversized)

    errors = _exactly_one(body, *recipients) if len(recipients) > 1 else []
    errors += _exactly_one(body, *BODY_FIELDS)
    try:
        request = model.model_validate(body)
    except ValidationError as exc:
        errors += [_field_error(error) for error in exc.errors(include_url=False)]
    else:
        if not errors:
            return request
    detail = f"{len(errors)} field(s) failed validation"
    if len(errors) > MAX_REPORTED_ERRORS:
        detail += f"; the first {MAX_REPORTED_ERRORS} are listed"
    raise Problem(VALIDATION, detail, errors=errors[:MAX_REPORTED_ERRORS])


def _exactly_one(body: dict[str, Any], *names: str) -> list[FieldError]:
    present = [name for name in names if body.get(name) is not None]
    if len(present) == 1:
        return []
    listed = ", ".join(names[:-1]) + f" or {names[-1]}"
    if present:
        message = (
            f"give either {listed}, not both" if len(names) == 2 else f"give only one of {listed}"
        )
        return [FieldError(present[-1], message, "conflict")]
    return [FieldError(names[0], f"one of {listed} is required", "missing")]


def _field_error(error: Any) -> FieldError:
    location = ".".join(str(part) for part in error["loc"]) or "body"
    kind = error["type"]
    if kind == "extra_forbidden":
        return FieldError(location, "unknown field", "unknown_field")
    return FieldError(location, error["msg"], kind)
