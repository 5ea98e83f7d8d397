"""SSRF guard: which resolved addresses a webhook may be sent to, decided at send time.

``vet`` resolves every A/AAAA record and refuses the target if any is non-public, unless allowed.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from bridge.webhooks.errors import AddressResolutionError, SsrfBlocked

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_CATEGORIES = (
    "is_unspecified",
    "is_loopback",
    "is_link_local",
    "is_multicast",
    "is_reserved",
    "is_private",
)


def forbidden_category(address: IPAddress) -> str | None:
    """Why ``address`` may not be contacted (``loopback``, ``private``...), or None if public."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    for attribute in _CATEGORIES:
        if getattr(address, attribute):
            return attribute.removeprefix("is_").replace("_", "-")
    if not address.is_global:  # shared address space, documentation ranges, ...
        return "not-global"
    return None


@dataclass(frozen=True)
class Target:
    """A vetted destination: connect to ``address`` while speaking to ``host``."""

    scheme: str
    host: str
    port: int
    address: str


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (IPv4 and IPv6), in resolver order, deduplicated."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise AddressResolutionError(f"cannot resolve {host}: {exc}") from None
    seen: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in seen:
            seen.append(address)
    if not seen:
        raise AddressResolutionError(f"cannot resolve {host}: no addresses")
    return seen


def choose_address(host: str, addresses: list[IPAddress], allow_private: bool) -> IPAddress:
    """The address to pin; refuses if any address is forbidden (a mixed answer is suspect)."""
    if not allow_private:
        for address in addresses:
            category = forbidden_category(address)
            if category is not None:
                raise SsrfBlocked(host, str(address), category)
    return addresses[0]


def vet(url: str, allow_private: bool) -> Target:
    """Resolve ``url``'s host now and return the pinned target, or raise ``SsrfBlocked``."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = choose_address(host, resolve(host, port), allow_private)
    return Target(scheme=parts.scheme, host=host, port=port, address=str(address))
