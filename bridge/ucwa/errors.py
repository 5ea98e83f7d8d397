"""One exception tree for everything the UCWA client can raise, and the mapping from a server
response (HTTP status, UCWA ``code``/``subcode``, OAuth ``error``) to a class in that tree.

Catch the level you need::

    UcwaError                         base: method, url, status, code, subcode, message, body
    ├── TransportError                timeout / connection error (built by the I/O shell)
    ├── ProtocolViolation             malformed payload from the server
    │   ├── InvalidDataUri            not a data: URI, or undecodable
    │   ├── InvalidLink               an href, Location or redirect that is not a usable URL
    │   ├── UntrustedLink             a link to a host outside the session: nothing sent
    │   ├── ResponseTooLarge          a body over the configured cap
    │   └── DiscoveryFailed           no applications link found (retryable)
    │       └── UntrustedRedirect     redirect outside the trusted domains (permanent)
    ├── AuthError
    │   ├── AuthenticationRequired    401 (+ MsRtcOAuth challenge), 403 InvalidToken
    │   │   └── WebTicketInvalid      500 + X-Ms-diagnostics 28032 (token from another pool)
    │   ├── CredentialsRejected       invalid_grant, or 401 right after a fresh token: NEVER retry
    │   ├── GrantNotSupported         unsupported_grant_type, invalid_scope, no usable grant
    │   ├── InvalidTokenRequest       invalid_request
    │   └── TokenServiceFailure       server_error (retryable)
    ├── ApplicationError
    │   ├── ApplicationGone           404 ApplicationNotFound, 410 InactiveApplicationExpired
    │   │   └── PoolUnavailable       410 CannotRedirect (outage: back off, rediscover)
    │   ├── TooManyApplications       410, operator alert
    │   └── UserAgentNotAllowed       410, operator alert
    ├── RequestRejected               other 4xx: the request itself is wrong
    │   ├── BadRequest                400
    │   │   └── ParameterValidationFailure
    │   ├── Forbidden                 403
    │   ├── ResourceNotFound          404 (conversation, messaging… gone)
    │   ├── EntityTooLarge            413
    │   └── PreconditionFailed        412 / 428
    ├── Conflict                      409
    │   ├── PGetReplaced
    │   ├── AlreadyExists
    │   ├── MakeMeAvailableRequired
    │   └── AnotherOperationPending   (retryable)
    ├── Throttled                     429, 503 (retry_after)
    ├── ServiceFailure                500, 502, 504, 408
    └── UnknownUcwaError              anything else; keeps raw status and body
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

_BODY_LIMIT = 2000
_DIAGNOSTICS_LIMIT = 300
# A server has no reason to echo a credential in X-Ms-diagnostics; if one ever does, it must not
# reach a log line or a message record.
_CREDENTIAL = re.compile(
    r"(?i)(\bcwt=|\bbearer\s+|\b(?:access_token|password|token)\s*[=:]\s*)[^\s;,\"]+"
)


class UcwaError(Exception):
    """Base of every UCWA client error. Never carries request headers or request bodies."""

    retryable = False
    needs_reauth = False
    needs_rebuild = False

    def __init__(
        self,
        message: str = "",
        *,
        method: str | None = None,
        url: str | None = None,
        status: int | None = None,
        code: str | None = None,
        subcode: str | None = None,
        body: str | None = None,
        retry_after: float | None = None,
        retry_at: datetime | None = None,
        diagnostics: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.method = method
        self.url = url
        self.status = status
        self.code = code
        self.subcode = subcode
        self.body = body[:_BODY_LIMIT] if body else body
        self.retry_after = retry_after
        self.retry_at = retry_at
        self.diagnostics = diagnostics

    @property
    def permanent(self) -> bool:
        """True when nothing (waiting, re-auth, rebuilding the session) can make it succeed."""
        return not (self.retryable or self.needs_reauth or self.needs_rebuild)

    def __str__(self) -> str:
        parts = [type(self).__name__]
        if self.status is not None:
            parts.append(str(self.status))
        if self.code or self.subcode:
            parts.append("/".join(p for p in (self.code, self.subcode) if p))
        head = " ".join(parts)
        where = f" ({self.method} {self.url})" if self.method and self.url else ""
        return f"{head}: {self.message}{where}" if self.message else f"{head}{where}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, "
            f"subcode={self.subcode!r}, method={self.method!r}, url={self.url!r})"
        )


class TransportError(UcwaError):
    retryable = True


class ProtocolViolation(UcwaError):
    pass


class InvalidDataUri(ProtocolViolation, ValueError):
    pass


class InvalidLink(ProtocolViolation):
    pass


class UntrustedLink(ProtocolViolation):
    """A link, Location or redirect to an origin the session did not discover: never followed,
    so neither the bearer token nor the password can leave the UCWA hosts."""


class ResponseTooLarge(ProtocolViolation):
    pass


class DiscoveryFailed(ProtocolViolation):
    retryable = True


class UntrustedRedirect(DiscoveryFailed):
    retryable = False


class AuthError(UcwaError):
    pass


class AuthenticationRequired(AuthError):
    needs_reauth = True


class WebTicketInvalid(AuthenticationRequired):
    pass


class CredentialsRejected(AuthError):
    """Bad username/password. Retrying risks locking the account out."""


class GrantNotSupported(AuthError):
    pass


class InvalidTokenRequest(AuthError):
    pass


class TokenServiceFailure(AuthError):
    retryable = True


class ApplicationError(UcwaError):
    pass


class ApplicationGone(ApplicationError):
    needs_rebuild = True


class PoolUnavailable(ApplicationGone):
    pass


class TooManyApplications(ApplicationError):
    """Per-user application limit reached: an operator must clean up."""


class UserAgentNotAllowed(ApplicationError):
    """The server refuses our userAgent: an operator must act."""


class RequestRejected(UcwaError):
    pass


class BadRequest(RequestRejected):
    pass


class ParameterValidationFailure(BadRequest):
    pass


class Forbidden(RequestRejected):
    pass


class ResourceNotFound(RequestRejected):
    pass


class EntityTooLarge(RequestRejected):
    pass


class PreconditionFailed(RequestRejected):
    pass


class Conflict(UcwaError):
    pass


class PGetReplaced(Conflict):
    pass


class AlreadyExists(Conflict):
    pass


class MakeMeAvailableRequired(Conflict):
    pass


class AnotherOperationPending(Conflict):
    retryable = True


class Throttled(UcwaError):
    retryable = True


class ServiceFailure(UcwaError):
    retryable = True


class UnknownUcwaError(UcwaError):
    pass


E = TypeVar("E", bound=type[UcwaError])
_Key = tuple[int | None, str | None, str | None]
_REGISTRY: dict[_Key, type[UcwaError]] = {}


def register(
    status: int | None = None, code: str | None = None, subcode: str | None = None
) -> Callable[[E], E]:
    """Map (status, code, subcode) to a class; None matches anything. Case-insensitive names."""

    def decorate(cls: E) -> E:
        _REGISTRY[(status, _norm(code), _norm(subcode))] = cls
        return cls

    return decorate


def _norm(value: str | None) -> str | None:
    return value.lower() if value else None


for _status, _code, _subcode, _cls in (
    (404, None, "ApplicationNotFound", ApplicationGone),
    (410, None, "InactiveApplicationExpired", ApplicationGone),
    (410, None, "CannotRedirect", PoolUnavailable),
    (None, None, "TooManyApplications", TooManyApplications),
    (None, None, "UserAgentNotAllowed", UserAgentNotAllowed),
    (None, None, "PGetReplaced", PGetReplaced),
    (409, None, "AlreadyExists", AlreadyExists),
    (409, None, "MakeMeAvailableRequired", MakeMeAvailableRequired),
    (409, None, "AnotherOperationPending", AnotherOperationPending),
    (400, None, "ParameterValidationFailure", ParameterValidationFailure),
    (None, None, "EntityTooLarge", EntityTooLarge),
    (None, "EntityTooLarge", None, EntityTooLarge),
    (None, "invalid_grant", None, CredentialsRejected),
    (None, "unsupported_grant_type", None, GrantNotSupported),
    (None, "invalid_scope", None, GrantNotSupported),
    (None, "invalid_request", None, InvalidTokenRequest),
    (None, "server_error", None, TokenServiceFailure),
    (None, "temporarily_unavailable", None, TokenServiceFailure),
    (400, None, None, BadRequest),
    (401, None, None, AuthenticationRequired),
    (403, None, None, Forbidden),
    (404, None, None, ResourceNotFound),
    (408, None, None, ServiceFailure),
    (409, None, None, Conflict),
    (410, None, None, ApplicationGone),
    (412, None, None, PreconditionFailed),
    (413, None, None, EntityTooLarge),
    (428, None, None, PreconditionFailed),
    (429, None, None, Throttled),
    (500, None, None, ServiceFailure),
    (502, None, None, ServiceFailure),
    (503, None, None, Throttled),
    (504, None, None, ServiceFailure),
):
    register(_status, _code, _subcode)(_cls)


def lookup(status: int | None, code: str | None, subcode: str | None) -> type[UcwaError]:
    """Most specific registered class; unknown subcodes fall back to the status class."""
    c, s = _norm(code), _norm(subcode)
    keys: list[_Key] = []
    if s:
        keys += [(status, c, s), (status, None, s), (None, None, s)]
    if c:
        keys += [(status, c, None), (None, c, None)]
    keys.append((status, None, None))
    for key in keys:
        cls = _REGISTRY.get(key)
        if cls is not None:
            return cls
    return UnknownUcwaError


def header(headers: Mapping[str, str] | None, name: str) -> str | None:
    """Case-insensitive header lookup over a plain mapping."""
    if not headers:
        return None
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def parse_retry_after(value: str | None, now: datetime) -> datetime | None:
    """Retry-After as delta-seconds or an HTTP date, as an absolute time; None if unusable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(when, now)
    if seconds != seconds or seconds < 0:  # NaN or negative
        return None
    try:
        return now + timedelta(seconds=seconds)
    except OverflowError:  # infinite, or beyond the year 9999
        return None


def clean_diagnostics(value: str | None) -> str | None:
    """An ``X-Ms-diagnostics`` value fit for a log line and a message record: one line of
    printable text, at most 300 characters, any credential-looking value redacted; None if empty.

    It reads like ``28020;source="pool.contoso.com";reason="No valid security token."``
    (AuthenticationInUCWA.md). Kept for people, never parsed for decisions beyond its number.
    """
    if not value:
        return None
    text = " ".join("".join(c if c.isprintable() else " " for c in value).split())
    text = _CREDENTIAL.sub(lambda m: m.group(1) + "[REDACTED]", text)
    return text[:_DIAGNOSTICS_LIMIT] or None


def _json_object(body_text: str | None) -> dict[str, Any] | None:
    if not body_text or not body_text.lstrip().startswith("{"):
        return None
    try:
        data = json.loads(body_text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def error_from_response(
    status: int,
    headers: Mapping[str, str] | None,
    body_text: str | None,
    method: str | None = None,
    url: str | None = None,
    now: datetime | None = None,
) -> UcwaError:
    """Build the error for a non-success response: JSON, HTML or empty body alike."""
    now = now or datetime.now(UTC)
    data = _json_object(body_text)
    code = subcode = None
    message = ""
    if data is not None:
        raw_code = data.get("code") or data.get("error")
        code = str(raw_code) if raw_code else None
        subcode = str(data["subcode"]) if data.get("subcode") else None
        message = str(data.get("message") or data.get("error_description") or "")
    diagnostics = clean_diagnostics(header(headers, "X-Ms-diagnostics"))
    cls = lookup(status, code, subcode)
    if status == 500 and diagnostics and diagnostics.strip().startswith("28032"):
        cls = WebTicketInvalid
    elif status == 403 and "invalidtoken" in (header(headers, "Warning") or "").lower():
        cls = AuthenticationRequired
    if not message:
        message = _default_message(status, data is None and bool(body_text))
    retry_at = parse_retry_after(header(headers, "Retry-After"), now)
    return cls(
        message,
        method=method,
        url=url,
        status=status,
        code=code,
        subcode=subcode,
        body=body_text,
        retry_after=(retry_at - now).total_seconds() if retry_at else None,
        retry_at=retry_at,
        diagnostics=diagnostics,
    )


def _default_message(status: int, non_json_body: bool) -> str:
    suffix = " (non-JSON body)" if non_json_body else ""
    return f"HTTP {status}{suffix}"
