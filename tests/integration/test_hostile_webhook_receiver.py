"""Webhook deliveries against real hostile receivers: trickled or endless answers end within the
deadline, only the excerpt is read, redirects are not followed, TLS is verified, and the SSRF
guard refuses internal addresses however they are spelled.
"""

from __future__ import annotations

import base64
import os
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import trustme

from bridge.webhooks import transport
from bridge.webhooks.errors import SsrfBlocked, WebhookConfigError
from bridge.webhooks.settings import WebhookSettings
from bridge.webhooks.ssrf import vet
from tests.integration.hostile_server import HostileServer, endless_body, reply, trickle
from tests.webhooks.harness import attempts, configure, new_secret, publish, record, run_deliveries

BODY = b'{"id":"evt_1","type":"message.received"}'


@pytest.fixture()
def receiver() -> Iterator[HostileServer]:
    with HostileServer("127.0.0.1", default=reply(204)) as server:
        yield server


def post(server: HostileServer, timeout_s: float = 1.0, **extra: object) -> transport.HttpResult:
    return transport.post(
        server.url("/hook"),
        BODY,
        {"Content-Type": "application/json"},
        pinned_address="127.0.0.1",
        timeout_s=timeout_s,
        **extra,  # type: ignore[arg-type]
    )


def test_trickled_headers_end_at_the_deadline_as_a_timeout(receiver: HostileServer) -> None:
    receiver.default = trickle(b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 500, every_s=0.05)
    started = time.monotonic()
    result = post(receiver, timeout_s=1.0)
    assert time.monotonic() - started < 1.8
    assert result.status_code is None
    assert result.error is not None and result.error.startswith("timeout")


def test_a_trickled_body_keeps_the_status_and_what_arrived_in_time(receiver: HostileServer) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"
    receiver.default = trickle(head, every_s=0.0, then=iter(lambda: b"z", None))
    started = time.monotonic()
    result = post(receiver, timeout_s=1.0)
    assert time.monotonic() - started < 1.8
    assert result.status_code == 200 and result.error is None
    assert set(result.excerpt) <= {"z"}


def test_an_endless_body_is_not_drained(receiver: HostileServer) -> None:
    receiver.default = endless_body(b"y" * 65536)
    started = time.monotonic()
    result = post(receiver, timeout_s=5.0, excerpt_bytes=1024)
    assert time.monotonic() - started < 1.0
    assert result.status_code == 200 and result.excerpt == "y" * 1024


@pytest.mark.parametrize(
    ("userinfo", "authorization"),
    [
        ("hook%40ops:p%3Ass", "Basic " + base64.b64encode(b"hook@ops:p:ss").decode()),
        (":secret", "Basic " + base64.b64encode(b":secret").decode()),
        ("token", None),  # no password: nothing to send, as ``requests`` sends nothing
        (":", None),
    ],
)
def test_url_credentials_go_as_basic_authentication_and_nowhere_else(
    receiver: HostileServer, userinfo: str, authorization: str | None
) -> None:
    url = receiver.url("/hook?channel=7").replace("://", f"://{userinfo}@")
    result = transport.post(url, BODY, {}, pinned_address="127.0.0.1", timeout_s=2.0)
    assert (result.status_code, result.error) == (204, None)
    [seen] = receiver.seen
    assert seen.headers.get("authorization") == authorization
    assert (seen.path, seen.headers["host"]) == ("/hook?channel=7", f"127.0.0.1:{receiver.port}")


def test_a_refused_connection_names_the_path_it_asked_for() -> None:
    with socket.socket() as bound:  # bound, not listening: every connect is refused
        bound.bind(("127.0.0.1", 0))
        url = f"http://ops:pw@127.0.0.1:{bound.getsockname()[1]}/hook?channel=7"
        result = transport.post(url, BODY, {}, pinned_address="127.0.0.1", timeout_s=2.0)
    assert result.status_code is None
    assert result.error == (
        "connection_error: Failed to establish a new connection: [Errno 111] Connection refused"
        " (POST /hook?channel=7)"
    )


def test_a_redirect_to_another_host_is_not_followed(receiver: HostileServer) -> None:
    with HostileServer("127.0.0.2", default=reply(200)) as elsewhere:
        receiver.default = reply(307, headers={"Location": elsewhere.url("/internal")})
        result = post(receiver)
        assert result.status_code == 307
        assert elsewhere.seen == []


def test_a_trickling_receiver_cannot_hold_a_delivery_job(
    redis_client: redis.Redis, receiver: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("BRIDGE_WEBHOOK")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("BRIDGE_WEBHOOK_TIMEOUT_S", "1")
    monkeypatch.setenv("BRIDGE_WEBHOOK_SCHEDULE_S", "none")
    receiver.default = trickle(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 1000, every_s=0.02)
    endpoints = configure(
        monkeypatch,
        {
            "id": "slow",
            "url": receiver.url("/hook"),
            "secrets": [new_secret()],
            "allow_private": True,
        },
    )
    _, [delivery_id] = publish(redis_client, endpoints)
    run_deliveries(redis_client)

    [attempt] = attempts(redis_client, delivery_id)
    assert attempt["status_code"] is None and attempt["error"].startswith("timeout")
    assert attempt["latency_ms"] < 1800
    assert record(redis_client, delivery_id).status == "dead"


# -- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture()
def tls_receiver(ca: trustme.CA) -> Iterator[HostileServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("hooks.example.test").configure_cert(context)
    with HostileServer("127.0.0.1", tls=context, default=reply(204)) as server:
        yield server


def tls_post(server: HostileServer, **extra: object) -> transport.HttpResult:
    # The URL names the certificate's host; the pinned address is where it really listens.
    return transport.post(
        f"https://hooks.example.test:{server.port}/hook",
        BODY,
        {},
        pinned_address="127.0.0.1",
        **{"timeout_s": 2.0, **extra},  # type: ignore[arg-type]
    )


def test_a_trickled_tls_handshake_ends_at_the_deadline() -> None:
    greeting = trickle(b"\x16\x03\x03\x40\x00" + b"\x02" * 2000, every_s=0.05)
    with HostileServer("127.0.0.1", greeting=greeting) as server:
        started = time.monotonic()
        result = tls_post(server, timeout_s=1.0)
        assert time.monotonic() - started < 1.8
        assert result.status_code is None and (result.error or "").startswith("timeout")


def test_an_untrusted_certificate_is_refused_by_default(tls_receiver: HostileServer) -> None:
    result = tls_post(tls_receiver)
    assert result.status_code is None and "CERTIFICATE_VERIFY_FAILED" in (result.error or "")
    assert tls_receiver.seen == []


def test_a_ca_bundle_verifies_the_pinned_connection_by_host_name(
    tls_receiver: HostileServer, ca: trustme.CA, tmp_path: Path
) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    result = tls_post(tls_receiver, verify=str(bundle))
    assert (result.status_code, result.error) == (204, None)
    assert tls_receiver.seen[0].headers["host"] == f"hooks.example.test:{tls_receiver.port}"


@pytest.fixture()
def tls_ip_receiver(ca: trustme.CA) -> Iterator[HostileServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with HostileServer("127.0.0.1", tls=context, default=reply(204)) as server:
        yield server


@pytest.mark.parametrize(
    ("settings", "outcome"),
    [
        ({}, "dead"),
        ({"BRIDGE_WEBHOOK_CA_BUNDLE": "{bundle}"}, "succeeded"),
        ({"BRIDGE_WEBHOOK_TLS_VERIFY": "false"}, "succeeded"),
    ],
    ids=["verified-by-default", "ca-bundle", "verify-off"],
)
def test_webhook_tls_settings_reach_the_delivery(
    redis_client: redis.Redis,
    tls_ip_receiver: HostileServer,
    ca: trustme.CA,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    settings: dict[str, str],
    outcome: str,
) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    for name in [n for n in os.environ if n.startswith(("BRIDGE_WEBHOOK", "REQUESTS_CA"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("BRIDGE_WEBHOOK_SCHEDULE_S", "none")
    for name, value in settings.items():
        monkeypatch.setenv(name, value.format(bundle=bundle))
    endpoints = configure(
        monkeypatch,
        {
            "id": "tls",
            "url": f"https://127.0.0.1:{tls_ip_receiver.port}/hook",
            "secrets": [new_secret()],
            "allow_private": True,
        },
    )
    _, [delivery_id] = publish(redis_client, endpoints)
    run_deliveries(redis_client)

    assert record(redis_client, delivery_id).status == outcome
    [attempt] = attempts(redis_client, delivery_id)
    if outcome == "dead":
        assert "CERTIFICATE_VERIFY_FAILED" in attempt["error"]
        assert tls_ip_receiver.seen == []
    else:
        assert attempt["status_code"] == 204


def test_webhook_tls_settings_are_checked_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(WebhookConfigError, match="BRIDGE_WEBHOOK_CA_BUNDLE: no such file"):
        WebhookSettings.from_env({"BRIDGE_WEBHOOK_CA_BUNDLE": str(tmp_path / "missing.pem")})
    with pytest.raises(WebhookConfigError, match="BRIDGE_WEBHOOK_TLS_VERIFY=false"):
        WebhookSettings.from_env(
            {"BRIDGE_WEBHOOK_CA_BUNDLE": __file__, "BRIDGE_WEBHOOK_TLS_VERIFY": "false"}
        )
    with pytest.raises(WebhookConfigError, match="BRIDGE_WEBHOOK_TLS_VERIFY: must be true"):
        WebhookSettings.from_env({"BRIDGE_WEBHOOK_TLS_VERIFY": "maybe"})


# -- SSRF guard ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://2130706433/",  # 127.0.0.1 as one decimal number
        "http://0x7f.1/",  # and in hex shorthand
        "http://127.1/",
        "http://localhost/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:169.254.169.254]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://[2002:a9fe:a9fe::1]/",  # 6to4 wrapping of the metadata address
        "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 wrapping of it
        "http://192.0.0.192/",  # Oracle Cloud metadata
        "http://100.100.100.200/",  # Alibaba Cloud metadata
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://[fe80::1]/",
        "http://0.0.0.0/",
    ],
)
def test_ssrf_guard_refuses_internal_targets_however_spelled(url: str) -> None:
    with pytest.raises(SsrfBlocked):
        vet(url, allow_private=False)
    assert vet(url, allow_private=True).address  # allowed explicitly, still pinned


def test_an_ssrf_refusal_makes_no_connection(
    redis_client: redis.Redis, receiver: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("BRIDGE_WEBHOOK")]:
        monkeypatch.delenv(name)
    endpoints = configure(
        monkeypatch,
        {
            "id": "internal",
            "url": f"http://127.0.0.1:{receiver.port}/hook",
            "secrets": [new_secret()],
        },
    )
    _, [delivery_id] = publish(redis_client, endpoints)
    run_deliveries(redis_client)
    rec = record(redis_client, delivery_id)
    assert (rec.status, rec.reason) == ("dead", "ssrf_blocked")
    assert receiver.seen == []
