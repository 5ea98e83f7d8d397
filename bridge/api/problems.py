"""RFC 9457 problem details: the catalogue of problem types and their JSON responses.

Every error the HTTP API returns (messages and the webhook blueprint alike) goes through
``Problem``; each kind has a stable ``type`` URI.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flask import Response

from bridge.ucwa.text import repair

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:ucwa-bridge:problem:"


@dataclass(frozen=True)
class ProblemType:
    slug: str
    status: int
    title: str

    @property
    def uri(self) -> str:
        return TYPE_PREFIX + self.slug


BAD_REQUEST = ProblemType("bad-request", 400, "Bad request")
HTTP_ERROR = ProblemType("http-error", 400, "HTTP error")  # other protocol errors; status varies
MALFORMED_JSON = ProblemType("malformed-json", 400, "Request body is not valid JSON")
INVALID_HEADER = ProblemType("invalid-header", 400, "A request header is invalid")
UNAUTHORIZED = ProblemType("unauthorized", 401, "Missing or invalid API key")
FORBIDDEN = ProblemType("forbidden", 403, "API key lacks the required scope")
ACCOUNT_FORBIDDEN = ProblemType("account-forbidden", 403, "API key may not send from this account")
NOT_FOUND = ProblemType("not-found", 404, "No such resource")
MESSAGE_NOT_FOUND = ProblemType("message-not-found", 404, "No such message")
METHOD_NOT_ALLOWED = ProblemType("method-not-allowed", 405, "Method not allowed")
IDEMPOTENCY_IN_PROGRESS = ProblemType(
    "idempotency-in-progress", 409, "A request with this Idempotency-Key is still in progress"
)
PAYLOAD_TOO_LARGE = ProblemType("payload-too-large", 413, "Request or message too large")
UNSUPPORTED_MEDIA_TYPE = ProblemType(
    "unsupported-media-type", 415, "Request body must be application/json"
)
VALIDATION = ProblemType("validation-error", 422, "Request body failed validation")
IDEMPOTENCY_KEY_REUSED = ProblemType(
    "idempotency-key-reused", 422, "Idempotency-Key was already used with a different request"
)
DELIVERY_NOT_FOUND = ProblemType("delivery-not-found", 404, "No such webhook delivery")
CONVERSATION_NOT_FOUND = ProblemType("conversation-not-found", 404, "No such conversation")
BROADCAST_NOT_FOUND = ProblemType("broadcast-not-found", 404, "No such broadcast")
CONVERSATION_NOT_LIVE = ProblemType(
    "conversation-not-live", 409, "The conversation is not live on the UCWA server"
)
ENDPOINT_NOT_FOUND = ProblemType("endpoint-not-found", 404, "No such webhook endpoint")
DELIVERY_IN_FLIGHT = ProblemType(
    "delivery-in-flight", 409, "The delivery is queued or being attempted"
)
MESSAGE_NOT_CANCELLABLE = ProblemType(
    "message-not-cancellable", 409, "The message is already with UCWA or final"
)
INTERNAL = ProblemType("internal-error", 500, "Internal error")
UNAVAILABLE = ProblemType("service-unavailable", 503, "Service temporarily unavailable")

ALL_TYPES: tuple[ProblemType, ...] = (
    BAD_REQUEST,
    HTTP_ERROR,
    MALFORMED_JSON,
    INVALID_HEADER,
    UNAUTHORIZED,
    FORBIDDEN,
    NOT_FOUND,
    MESSAGE_NOT_FOUND,
    CONVERSATION_NOT_FOUND,
    BROADCAST_NOT_FOUND,
    CONVERSATION_NOT_LIVE,
    METHOD_NOT_ALLOWED,
    IDEMPOTENCY_IN_PROGRESS,
    PAYLOAD_TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE,
    VALIDATION,
    IDEMPOTENCY_KEY_REUSED,
    DELIVERY_NOT_FOUND,
    ENDPOINT_NOT_FOUND,
    DELIVERY_IN_FLIGHT,
    MESSAGE_NOT_CANCELLABLE,
    INTERNAL,
    UNAVAILABLE,
)


@dataclass(frozen=True)
class FieldError:
    """One failed field: ``field`` is a dotted path into the body (or a header name)."""

    field: str
    message: str
    code: str

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message, "code": self.code}


class Problem(Exception):
    """Raised anywhere in a request; rendered as ``application/problem+json``."""

    def __init__(
        self,
        kind: ProblemType,
        detail: str | None = None,
        *,
        errors: Sequence[FieldError] = (),
        headers: Mapping[str, str] | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or kind.title)
        self.kind = kind
        self.detail = detail or kind.title
        self.errors = tuple(errors)
        self.headers = dict(headers or {})
        self.extensions = dict(extensions or {})  # members beside the standard ones

    def body(self, instance: str | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": self.kind.uri,
            "title": self.kind.title,
            "status": self.kind.status,
            "detail": self.detail,
        }
        for name, value in self.extensions.items():
            data.setdefault(name, value)
        if instance:
            data["instance"] = instance
        if self.errors:
            data["errors"] = [error.to_dict() for error in self.errors]
        return data

    def to_response(self, instance: str | None = None) -> Response:
        body = self.body(instance)
        try:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            # A detail that quotes caller text must not turn the answer into a 500.
            data = json.dumps(repair(body), ensure_ascii=False).encode("utf-8")
        response = Response(data, status=self.kind.status, mimetype=PROBLEM_MEDIA_TYPE)
        for name, value in self.headers.items():
            response.headers[name] = value
        return response


def invalid(field: str, message: str) -> Problem:
    """A 422 naming one bad field or query parameter."""
    return Problem(
        VALIDATION, f"{field}: {message}", errors=[FieldError(field, message, "invalid")]
    )
