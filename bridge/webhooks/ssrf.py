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


# Cloud instance-metadata services; some sit on addresses Python calls global.
_METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
        "168.63.129.16",  # Azure wire server
    )
)
# Not globally reachable by IANA, though some Python versions call them global.
_EXTRA_NON_GLOBAL = (ipaddress.ip_network("192.0.0.0/24"),)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, Teredo client, NAT64), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def forbidden_category(address: IPAddress) -> str | None:
    """Why ``address`` may not be contacted (``loopback``, ``metadata``...), or None if public.

    An IPv6 address that carries an IPv4 one (``::ffff:127.0.0.1``, 6to4 ``2002:7f00:1::``,
    Teredo, NAT64 ``64:ff9b::a9fe:a9fe``) is judged by the IPv4 address it reaches as well.
    """
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_ipv4(address)
        if inner is not None:
            category = forbidden_category(inner)
            if category is not None or address.ipv4_mapped is not None:
                return category  # a mapped address is exactly its IPv4 address
    for attribute in _CATEGORIES:
        if getattr(address, attribute):
            return attribute.removeprefix("is_").replace("_", "-")
    if address in _METADATA:
        return "metadata"
    if any(address in network for network in _EXTRA_NON_GLOBAL):
        return "not-global"
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
