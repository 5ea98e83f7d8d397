"""Which URLs the UCWA client may contact: the origins discovered for the session, the domains
trusted while discovering, and hosts the operator configured. Everything else is refused.

The bearer token and the password only ever travel to URLs this policy allows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from bridge.ucwa.errors import InvalidLink, UntrustedLink

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Origin:
    """Scheme, host and port of a URL (RFC 6454): what a link must share with the session."""

    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Origin:
        """The origin of an absolute http(s) URL; ``InvalidLink`` for anything else."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise InvalidLink(f"not a usable URL: {exc}", url=url[:200]) from None
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").lower().rstrip(".")
        if scheme not in _DEFAULT_PORTS or not host:
            raise InvalidLink("not an absolute http or https URL", url=url[:200])
        return cls(scheme, host, port if port is not None else _DEFAULT_PORTS[scheme])

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


class TrustPolicy:
    """Allowed origins (exact), plus hosts and domain suffixes allowed over https (or http when
    ``allow_http``). Mutable: the session adds the origins it discovers."""

    def __init__(
        self,
        origins: Iterable[Origin] = (),
        *,
        domains: Iterable[str] = (),
        hosts: Iterable[str] = (),
        allow_http: bool = False,
    ) -> None:
        self.origins: set[Origin] = set(origins)
        self.domains = tuple(d.lower().strip(".") for d in domains if d.strip("."))
        self.hosts = frozenset(h.lower().rstrip(".") for h in hosts if h)
        self.allow_http = allow_http

    @classmethod
    def for_session(cls, url: str, hosts: Iterable[str] = ()) -> TrustPolicy:
        """Only the origin of the session's application (and configured hosts)."""
        origin = Origin.of(url)
        return cls({origin}, hosts=hosts, allow_http=origin.scheme == "http")

    @classmethod
    def for_discovery(
        cls, discovery_url: str, domains: Iterable[str], hosts: Iterable[str] = ()
    ) -> TrustPolicy:
        """The discovery URL's origin and anything below the given domains (the SIP domain)."""
        origin = Origin.of(discovery_url)
        return cls({origin}, domains=domains, hosts=hosts, allow_http=origin.scheme == "http")

    def add(self, url: str) -> None:
        self.origins.add(Origin.of(url))

    def allows(self, url: str) -> bool:
        try:
            origin = Origin.of(url)
        except InvalidLink:
            return False
        if origin in self.origins:
            return True
        if origin.scheme != "https" and not (self.allow_http and origin.scheme == "http"):
            return False
        host = origin.host
        return host in self.hosts or any(host == d or host.endswith("." + d) for d in self.domains)

    def check(self, url: str, what: str = "request") -> str:
        """``url`` if allowed, else ``UntrustedLink`` naming the refused origin (no path)."""
        if not self.allows(url):
            origin = Origin.of(url)  # InvalidLink for a malformed URL
            raise UntrustedLink(
                f"refusing {what} to {origin}: not a host of this UCWA session", url=str(origin)
            )
        return url

    def __repr__(self) -> str:
        return (
            f"TrustPolicy(origins={sorted(map(str, self.origins))!r}, domains={self.domains!r}, "
            f"hosts={sorted(self.hosts)!r}, allow_http={self.allow_http})"
        )
