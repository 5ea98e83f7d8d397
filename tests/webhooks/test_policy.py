"""Pure parts: retry decisions, Retry-After parsing, SSRF address decisions, signing."""

from __future__ import annotations

import ipaddress
import time
from email.utils import formatdate

import pytest
from standardwebhooks import Webhook

from bridge.webhooks.errors import SsrfBlocked
from bridge.webhooks.retry import RetryPolicy, Verdict, decide, parse_retry_after
from bridge.webhooks.signing import signed_headers
from bridge.webhooks.ssrf import choose_address, forbidden_category, vet
from tests.webhooks.harness import new_secret

POLICY = RetryPolicy(schedule_s=(0, 5, 300), jitter=0.2, retry_after_cap_s=3600)


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_2xx_succeeds(status: int) -> None:
    assert decide(POLICY, 0, status).verdict is Verdict.SUCCEEDED


def test_410_disables_and_other_failures_retry_on_the_schedule() -> None:
    assert decide(POLICY, 0, 410).verdict is Verdict.DISABLE_ENDPOINT
    assert decide(POLICY, 0, 500) == decide(POLICY, 0, 500, rand=0.9)  # 0 s has no jitter
    second = decide(POLICY, 1, 404, rand=0.5)
    assert (second.verdict, second.delay_s, second.reason) == (Verdict.RETRY, 5.0, "http_404")
    assert decide(POLICY, 2, None, "timeout: read").reason == "timeout"
    assert decide(POLICY, 0, 302).reason == "redirect_302"
    exhausted = decide(POLICY, 3, 500)
    assert (exhausted.verdict, exhausted.reason) == (Verdict.DEAD, "retries_exhausted")


def test_jitter_stays_within_twenty_percent() -> None:
    assert decide(POLICY, 2, 500, rand=0.0).delay_s == pytest.approx(240)
    assert decide(POLICY, 2, 500, rand=0.999999).delay_s == pytest.approx(360, rel=1e-4)


def test_retry_after_is_a_floor_for_429_and_503_only_and_is_capped() -> None:
    assert decide(POLICY, 1, 429, retry_after_s=120).delay_s == 120
    assert decide(POLICY, 1, 503, retry_after_s=1).delay_s == 5  # schedule is later
    assert decide(POLICY, 1, 429, retry_after_s=86400).delay_s == 3600  # capped
    assert decide(POLICY, 1, 500, retry_after_s=120).delay_s == 5  # ignored on 500


def test_parse_retry_after() -> None:
    now = time.time()
    assert parse_retry_after("30", now) == 30
    assert parse_retry_after(formatdate(now + 90, usegmt=True), now) == pytest.approx(90, abs=1)
    assert parse_retry_after("soon", now) is None and parse_retry_after(None, now) is None


@pytest.mark.parametrize(
    ("address", "category"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.10", "private"),
        ("169.254.169.254", "link-local"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "not-global"),
        ("93.184.216.34", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_forbidden_categories(address: str, category: str | None) -> None:
    assert forbidden_category(ipaddress.ip_address(address)) == category


def test_any_forbidden_address_refuses_unless_allowed() -> None:
    mixed = [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("10.0.0.5")]
    with pytest.raises(SsrfBlocked, match=r"10\.0\.0\.5"):
        choose_address("rebind.example", mixed, allow_private=False)
    assert str(choose_address("rebind.example", mixed, allow_private=True)) == "93.184.216.34"
    public = [ipaddress.ip_address("93.184.216.34")]
    assert str(choose_address("ok.example", public, allow_private=False)) == "93.184.216.34"


def test_vet_resolves_at_send_time() -> None:
    with pytest.raises(SsrfBlocked, match="loopback"):
        vet("http://localhost:8080/hook", allow_private=False)
    target = vet("http://127.0.0.1:8080/hook", allow_private=True)
    assert (target.host, target.port, target.address) == ("127.0.0.1", 8080, "127.0.0.1")


def test_signed_headers_verify_with_standardwebhooks() -> None:
    one, two = new_secret(), new_secret()
    body = b'{"id":"evt_1","type":"message.received","data":{"text":"\xc3\xa9"}}'
    headers = signed_headers("evt_1", int(time.time()), body, [one, two])
    assert headers["webhook-id"] == "evt_1"
    for secret in (one, two):
        Webhook(secret).verify(body, headers)
    with pytest.raises(Exception, match="signature"):
        Webhook(one).verify(body + b" ", headers)
