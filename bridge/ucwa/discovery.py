"""Autodiscovery as a generator flow: lyncdiscover root → (redirect)* → user → applications URL,
with a hop limit, a domain check on every redirect, and re-authentication on a new host.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from bridge.ucwa.auth import Flow, MsRtcOAuth
from bridge.ucwa.errors import (
    AuthError,
    DiscoveryFailed,
    UcwaError,
    UntrustedRedirect,
)
from bridge.ucwa.links import link, resolve
from bridge.ucwa.messages import HttpRequest

_ACCEPT = (("Accept", "application/json"),)


@dataclass(frozen=True)
class DiscoveryResult:
    """Where the user's UCWA lives: the applications URL on the home pool."""

    applications_url: str
    user_url: str
    hops: int


def sip_domain(sip_address: str) -> str:
    address = sip_address.strip()
    if address.lower().startswith("sip:"):
        address = address[4:]
    _, at, domain = address.rpartition("@")
    if not at or not domain:
        raise ValueError(f"not a SIP address: {sip_address!r}")
    return domain.lower()


def discovery_urls(sip_address: str, allow_http: bool = False) -> list[str]:
    """Internal first, then external (RootURL.md); HTTP variants only when allowed."""
    domain = sip_domain(sip_address)
    urls = [f"https://lyncdiscoverinternal.{domain}", f"https://lyncdiscover.{domain}"]
    if allow_http:
        urls += [f"http://lyncdiscoverinternal.{domain}", f"http://lyncdiscover.{domain}"]
    return urls


def is_trusted(url: str, domains: Iterable[str], allow_http: bool = False) -> bool:
    """The URL is https (unless allowed) and its host is one of ``domains`` or below one."""
    parts = urlsplit(url)
    if parts.scheme != "https" and not (allow_http and parts.scheme == "http"):
        return False
    host = (parts.hostname or "").lower().rstrip(".")
    return any(host == d or host.endswith("." + d) for d in (d.lower().strip(".") for d in domains))


class Discovery:
    """Walks discovery for one SIP address, authenticating through ``auth``."""

    def __init__(
        self,
        sip_address: str,
        auth: MsRtcOAuth,
        *,
        trusted_domains: Iterable[str] = (),
        max_hops: int = 8,
        allow_http: bool = False,
        start_urls: Iterable[str] | None = None,
    ) -> None:
        self.domains = (sip_domain(sip_address), *trusted_domains)
        self.auth = auth
        self.max_hops = max_hops
        self.allow_http = allow_http
        self.start_urls = (
            list(start_urls) if start_urls else discovery_urls(sip_address, allow_http)
        )

    def flow(self) -> Flow[DiscoveryResult]:
        """Try each start URL in turn; auth errors stop the walk at once."""
        failures: list[str] = []
        for url in self.start_urls:
            try:
                result = yield from self._walk(url)
            except AuthError:
                raise
            except UcwaError as exc:  # transport, HTTP or untrusted redirect: try the next
                failures.append(f"{url}: {exc}")
                continue
            return result
        raise DiscoveryFailed(
            "no discovery URL led to an applications link: " + "; ".join(failures)
        )

    def _check(self, url: str) -> str:
        if not is_trusted(url, self.domains, self.allow_http):
            raise UntrustedRedirect(f"refusing redirect to untrusted {url}", url=url)
        return url

    def _walk(self, url: str) -> Flow[DiscoveryResult]:
        user_url: str | None = None
        for hops in range(1, self.max_hops + 1):
            request = HttpRequest("GET", url, headers=_ACCEPT)
            response = yield from self.auth.auth_flow(request)
            if response.status in (301, 302, 303, 307, 308):
                location = response.header("Location")
                if not location:
                    raise DiscoveryFailed("redirect without Location", url=url)
                url = self._check(resolve(url, location))
                continue
            if response.status != 200:
                raise DiscoveryFailed(f"HTTP {response.status}", url=url, status=response.status)
            resource = response.json()
            applications = link(resource, "applications")
            if applications:
                return DiscoveryResult(resolve(url, applications), user_url or url, hops)
            redirect = link(resource, "redirect")
            user = link(resource, "user")
            if redirect:
                # A redirect may land on another pool: auth_flow sends no token to a new host,
                # gets that pool's 401 challenge and fetches a token there.
                url = self._check(resolve(url, redirect))
            elif user and resolve(url, user) != url:
                url = user_url = self._check(resolve(url, user))
            else:
                raise DiscoveryFailed(
                    "resource has no user, redirect or applications link", url=url
                )
        raise DiscoveryFailed(f"more than {self.max_hops} discovery hops", url=url)
