"""The MsRtcOAuth exchange as a generator flow: it yields requests and receives responses, so the
401 challenge → password grant → Bearer retry is driven by the I/O shell or by hand in tests.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from bridge.ucwa.challenge import MsRtcOAuthChallenge, parse_challenge
from bridge.ucwa.errors import (
    AuthenticationRequired,
    CredentialsRejected,
    GrantNotSupported,
    ProtocolViolation,
    TransportError,
    UcwaError,
    UntrustedLink,
    error_from_response,
)
from bridge.ucwa.messages import HttpRequest, HttpResponse
from bridge.ucwa.trust import Origin, TrustPolicy

PASSWORD_GRANT = "password"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded;charset=UTF-8"
DEFAULT_EXPIRES_IN = 3600
MAX_EXPIRES_IN = 7 * 86_400  # a longer lifetime is not believed (and would overflow datetimes)
Clock = Callable[[], datetime]
T = TypeVar("T")
Flow = Generator[HttpRequest, HttpResponse, T]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Credentials:
    """Username (UPN, SIP address or DOMAIN\\user) and password for the password grant."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password='[redacted]')"

    __str__ = __repr__


@dataclass(frozen=True)
class Token:
    """An access token (``cwt=...``), when it expires, and the host it is valid for."""

    access_token: str
    expires_at: datetime
    host: str = ""
    token_type: str = "Bearer"

    def should_renew(self, now: datetime, margin: timedelta = timedelta(minutes=5)) -> bool:
        return now >= self.expires_at - margin

    def is_expired(self, now: datetime) -> bool:
        return now >= self.expires_at

    def authorization(self) -> str:
        return f"Bearer {self.access_token}"

    def __repr__(self) -> str:
        return (
            f"Token(access_token='[redacted]', expires_at={self.expires_at.isoformat()!r}, "
            f"host={self.host!r})"
        )

    __str__ = __repr__


def token_request(challenge: MsRtcOAuthChallenge, credentials: Credentials) -> HttpRequest:
    """The password-grant POST; the shell URL-encodes ``form`` (see ``encoded_body``)."""
    return HttpRequest(
        "POST",
        challenge.href,
        headers=(("Content-Type", FORM_CONTENT_TYPE), ("Accept", "application/json")),
        form=(
            ("grant_type", PASSWORD_GRANT),
            ("username", credentials.username),
            ("password", credentials.password),
        ),
    )


def token_from_response(response: HttpResponse, url: str, host: str, now: datetime) -> Token:
    """A Token from a 200 grant response, or the mapped error (invalid_grant → credentials)."""
    if response.status == 401:
        raise CredentialsRejected(
            "token endpoint answered 401", method="POST", url=url, status=401, body=response.text
        )
    if not response.ok:
        raise error_from_response(
            response.status, response.header_map(), response.text, "POST", url, now
        )
    data = response.json()
    access = data.get("access_token") if isinstance(data, dict) else None
    if not isinstance(access, str) or not access:
        # No body in the error: a malformed grant response may still carry secrets.
        raise ProtocolViolation(
            "token response without access_token", method="POST", url=url, status=200
        )
    try:
        expires_in = int(data.get("expires_in", DEFAULT_EXPIRES_IN))
    except (TypeError, ValueError, OverflowError):  # OverflowError: an infinite float
        expires_in = DEFAULT_EXPIRES_IN
    lifetime = min(max(expires_in, 0), MAX_EXPIRES_IN)
    return Token(access, now + timedelta(seconds=lifetime), host=host.lower())


def _token_rejected(response: HttpResponse) -> bool:
    diagnostics = response.header("X-Ms-diagnostics") or ""
    warning = response.header("Warning") or ""
    return (response.status == 500 and diagnostics.strip().startswith("28032")) or (
        response.status == 403 and "invalidtoken" in warning.lower()
    )


class MsRtcOAuth:
    """Holds one token per host and authorises requests through ``auth_flow``.

    A token is used until ``renew_margin`` before it expires (by default until it expires):
    renewing early is the poller's duty, on its own schedule, so that workers never fetch
    grants of their own while the published token is still good. A margin wider than a
    short-lived token would otherwise send every request without one and pay a 401 each.
    """

    def __init__(
        self,
        credentials: Credentials,
        clock: Clock = utc_now,
        renew_margin: timedelta = timedelta(0),
    ) -> None:
        self.credentials = credentials
        self.clock = clock
        self.renew_margin = renew_margin
        self.tokens: dict[str, Token] = {}
        # Where the password may go besides the challenged request's own origin (set by the
        # client to the session's policy); token endpoints used are remembered per host.
        self.trust: TrustPolicy | None = None
        self.token_endpoints: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"MsRtcOAuth(credentials={self.credentials!r}, hosts={sorted(self.tokens)!r})"

    def token_for(self, host: str) -> Token | None:
        token = self.tokens.get(host.lower())
        if token is None or token.should_renew(self.clock(), self.renew_margin):
            return None
        return token

    def forget(self, host: str) -> None:
        self.tokens.pop(host.lower(), None)

    def authorize(self, request: HttpRequest) -> HttpRequest:
        """Add the Bearer header when a fresh token exists for the request's host, else strip it.

        A token is sent only to the host it was issued for: tokens are per pool, and a
        redirect to another host must not leak it.
        """
        token = self.token_for(request.host)
        if token is None:
            return request.without_header("Authorization")
        return request.with_header("Authorization", token.authorization())

    def _check_token_endpoint(self, href: str, request: HttpRequest) -> None:
        """The password goes only to the challenged origin or one the trust policy allows."""
        same_origin = Origin.of(href) == Origin.of(request.url)
        if not same_origin:
            if self.trust is None:
                raise UntrustedLink(
                    f"refusing password grant to {Origin.of(href)}: not {Origin.of(request.url)}",
                    url=str(Origin.of(href)),
                )
            self.trust.check(href, "password grant")
        self.token_endpoints[request.host] = href

    def auth_flow(self, request: HttpRequest) -> Flow[HttpResponse]:
        """Send ``request``; on a 401 challenge get a token and replay it once."""
        response = yield self.authorize(request)
        if _token_rejected(response):
            self.forget(request.host)
            response = yield request.without_header("Authorization")
        if response.status != 401:
            return response
        self.forget(request.host)
        challenge = parse_challenge(response.header_values("WWW-Authenticate"))
        if challenge is None:
            raise AuthenticationRequired(
                "401 without an MsRtcOAuth challenge",
                method=request.method,
                url=request.url,
                status=401,
                body=response.text,
            )
        if challenge.grant_types and not challenge.allows(PASSWORD_GRANT):
            raise GrantNotSupported(
                f"server offers {', '.join(challenge.grant_types)}; password grant needed",
                method=request.method,
                url=request.url,
                status=401,
            )
        self._check_token_endpoint(challenge.href, request)
        token_response = yield token_request(challenge, self.credentials)
        token = token_from_response(token_response, challenge.href, request.host, self.clock())
        self.tokens[token.host] = token
        response = yield request.with_header("Authorization", token.authorization())
        if response.status == 401:
            self.forget(request.host)
            raise CredentialsRejected(
                "401 again with a fresh token",
                method=request.method,
                url=request.url,
                status=401,
                body=response.text,
            )
        return response


def drive(flow: Flow[T], send: Callable[[HttpRequest], HttpResponse]) -> T:
    """Run a flow with ``send``; transport errors are thrown into the flow to handle or re-raise."""
    request = next(flow)
    while True:
        try:
            try:
                response = send(request)
            except TransportError as exc:
                request = flow.throw(exc)
                continue
            request = flow.send(response)
        except StopIteration as stop:
            value: T = stop.value
            return value


def raise_for_status(response: HttpResponse, request: HttpRequest, now: datetime) -> None:
    """Raise the mapped UcwaError for a non-2xx response."""
    if not response.ok:
        error: UcwaError = error_from_response(
            response.status, response.header_map(), response.text, request.method, request.url, now
        )
        raise error
