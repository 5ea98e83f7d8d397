"""A UCWA client for one account: the transport plus the MsRtcOAuth flow, following hrefs only.

Workers seed it with the token the poller published; a 401 anywhere triggers one fresh grant.
Every request, token grants included, goes only to the origin of ``base_url`` or one the trust
policy allows: a link, Location or redirect elsewhere raises ``UntrustedLink`` and sends nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from bridge.session.transport import UcwaTransport
from bridge.ucwa import errors as ue
from bridge.ucwa.auth import Credentials, MsRtcOAuth, Token, drive, raise_for_status
from bridge.ucwa.links import resolve, with_query
from bridge.ucwa.messages import HttpRequest, HttpResponse
from bridge.ucwa.trust import Origin, TrustPolicy


class UcwaClient:
    """Sends authorised requests to hrefs resolved against ``base_url``."""

    def __init__(
        self,
        credentials: Credentials,
        transport: UcwaTransport | None = None,
        base_url: str = "",
    ) -> None:
        self.transport = transport or UcwaTransport()
        self.oauth = MsRtcOAuth(credentials)
        self.base_url = base_url
        self.trust = TrustPolicy(hosts=self.transport.options.trusted_hosts)
        self.oauth.trust = self.trust

    def allows(self, url: str) -> bool:
        """Whether ``url`` is on the session's origin or one the trust policy allows."""
        try:
            if self.base_url and Origin.of(url) == Origin.of(self.base_url):
                return True
        except ue.InvalidLink:
            return False
        return self.trust.allows(url)

    def check(self, href: str, what: str = "request") -> str:
        """The absolute URL for ``href`` if this session may contact it, else ``UntrustedLink``."""
        url = self.url(href)
        if not self.allows(url):
            self.trust.check(url, what)
        return url

    def seed_token(self, access_token: str, expires_at: float, host: str) -> None:
        expiry = datetime.fromtimestamp(expires_at, UTC)
        self.oauth.tokens[host.lower()] = Token(access_token, expiry, host.lower())

    def token(self, host: str | None = None) -> Token | None:
        """The token for ``host``, by default the host of ``base_url``."""
        return self.oauth.tokens.get((host or host_of(self.base_url)).lower())

    def adopt(self, base_url: str, access_token: str, expires_at: float) -> None:
        """Talk to the application at ``base_url`` with the token the poller published."""
        self.base_url = base_url
        self.seed_token(access_token, expires_at, host_of(base_url))

    def url(self, href: str) -> str:
        return resolve(self.base_url, href) if self.base_url else href

    def request(
        self,
        method: str,
        href: str,
        *,
        json: Any = None,
        content: str | None = None,
        content_type: str | None = None,
        params: dict[str, str] | None = None,
        read_timeout: float | None = None,
        kind: str = "other",
        check: bool = True,
    ) -> HttpResponse:
        url = self.url(href)
        if params:
            url = with_query(url, dict(params))
        headers: list[tuple[str, str]] = []
        if content_type:
            headers.append(("Content-Type", content_type))
        request = HttpRequest(method, url, headers=tuple(headers), json=json, content=content)

        def send(outgoing: HttpRequest) -> HttpResponse:
            # The auth flow may interpose a grant: count it as what it is.
            what = kind if outgoing.url == url else "token"
            self.check(outgoing.url, "password grant" if what == "token" else f"{kind} request")
            return self.transport.send(outgoing, read_timeout=read_timeout, kind=what)

        response = drive(self.oauth.auth_flow(request), send)
        if check:
            raise_for_status(response, request, datetime.now(UTC))
        return response

    def get_json(self, href: str, **kwargs: Any) -> Any:
        return self.request("GET", href, **kwargs).json()

    def close(self) -> None:
        self.transport.close()


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()
