"""Property tests for the SSRF guard: an IPv6 spelling of an IPv4 address (mapped, 6to4, NAT64)
is refused whenever the IPv4 address is, and private IPv6 ranges are always refused."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.webhooks.ssrf import forbidden_category

FAST = settings(max_examples=200, derandomize=True, database=None, deadline=None)

ipv4 = st.integers(min_value=0, max_value=2**32 - 1).map(ipaddress.IPv4Address)
# Bias towards the interesting ranges: loopback, private, link-local, metadata, shared space.
internal_ipv4 = st.sampled_from(
    [
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "100.64.0.0/10",
        "0.0.0.0/8",
        "192.0.0.0/24",
    ]
).flatmap(
    lambda net: st.integers(0, ipaddress.ip_network(net).num_addresses - 1).map(
        lambda i, net=net: ipaddress.ip_network(net)[i]  # type: ignore[misc]
    )
)


def mapped(a: ipaddress.IPv4Address) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(f"::ffff:{a}")


def six_to_four(a: ipaddress.IPv4Address) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address((0x2002 << 112) | (int(a) << 80) | 1)


def nat64(a: ipaddress.IPv4Address) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | int(a))


@FAST
@given(st.one_of(ipv4, internal_ipv4))
def test_a_mapped_address_is_judged_exactly_as_its_ipv4_address(a: ipaddress.IPv4Address) -> None:
    assert forbidden_category(mapped(a)) == forbidden_category(a)


@FAST
@given(st.one_of(ipv4, internal_ipv4))
def test_wrapped_forms_of_a_forbidden_address_are_forbidden(a: ipaddress.IPv4Address) -> None:
    if forbidden_category(a) is not None:
        assert forbidden_category(six_to_four(a)) is not None
        assert forbidden_category(nat64(a)) is not None


@FAST
@given(st.sampled_from(["fc00::/7", "fe80::/10", "::1/128", "ff00::/8"]), st.integers(0, 2**64))
def test_private_link_local_and_multicast_ipv6_are_forbidden(net: str, offset: int) -> None:
    network = ipaddress.ip_network(net)
    address = network[offset % network.num_addresses]
    assert forbidden_category(address) is not None
