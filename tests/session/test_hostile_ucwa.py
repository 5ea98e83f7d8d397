"""The UCWA client against real hostile servers: the token and password stay on the session's
hosts, every request ends within its deadline, bodies are capped, TLS is verified by default.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import trustme

from bridge.config.settings import ConfigError, Settings
from bridge.session import transport as transport_module
from bridge.session.bootstrap import Bootstrap
from bridge.session.client import UcwaClient
from bridge.session.transport import DeliveryUnknown, NotSent, TransportOptions, UcwaTransport
from bridge.ucwa import errors as ue
from bridge.ucwa.auth import Credentials
from tests.integration.hostile_server import (
    HostileServer,
    endless_body,
    reply,
    trickle,
)

PASSWORD = "pw-never-leaves"
TOKEN = "cwt=session-token"
CREDENTIALS = Credentials("bot@contoso.com", PASSWORD)


@pytest.fixture()
def ucwa() -> Iterator[HostileServer]:
    with HostileServer("127.0.0.1") as server:
        yield server


@pytest.fixture()
def elsewhere() -> Iterator[HostileServer]:
    """A second host that records whether anything, an Authorization header above all, arrived."""
    with HostileServer("127.0.0.2", default=reply(200, {"ok": True})) as server:
        yield server


def client_for(server: HostileServer, **options: object) -> UcwaClient:
    transport = UcwaTransport(options=TransportOptions(**options))  # type: ignore[arg-type]
    client = UcwaClient(CREDENTIALS, transport)
    client.adopt(server.url("/ucwa/oauth/v1/applications/1"), TOKEN, time.time() + 3600)
    return client


def challenge(token_url: str) -> dict[str, str]:
    return {"WWW-Authenticate": f'MsRtcOAuth href="{token_url}",grant_type="password"'}


# -- token confinement --------------------------------------------------------------------------


def test_a_link_to_another_host_is_refused_and_gets_no_token(
    ucwa: HostileServer, elsewhere: HostileServer
) -> None:
    ucwa.routes["/ucwa/oauth/v1/applications/1"] = reply(
        200, {"_links": {"self": {"href": "/ucwa/oauth/v1/applications/1"}}}
    )
    client = client_for(ucwa)
    assert client.get_json("/ucwa/oauth/v1/applications/1") is not None
    assert ucwa.seen[-1].headers["authorization"] == f"Bearer {TOKEN}"

    for href in (elsewhere.url("/steal"), f"https://127.0.0.1:{ucwa.port}/x"):
        with pytest.raises(ue.UntrustedLink, match="not a host of this UCWA session"):
            client.request("GET", href)
    other_port = HostileServer("127.0.0.1")
    with other_port, pytest.raises(ue.UntrustedLink):
        client.request("POST", other_port.url("/ucwa/x"))
    assert elsewhere.seen == [] and other_port.seen == []


def test_a_redirect_to_another_host_is_not_followed(
    ucwa: HostileServer, elsewhere: HostileServer
) -> None:
    ucwa.routes["/moved"] = reply(302, headers={"Location": elsewhere.url("/steal")})
    client = client_for(ucwa)
    with pytest.raises(ue.UcwaError) as raised:
        client.request("GET", "/moved")
    assert raised.value.status == 302
    assert elsewhere.seen == []


def test_a_challenge_naming_a_foreign_token_endpoint_gets_no_password(
    ucwa: HostileServer, elsewhere: HostileServer
) -> None:
    ucwa.routes["/ucwa/x"] = reply(401, "", challenge(elsewhere.url("/WebTicket/oauthtoken")))
    client = client_for(ucwa)
    client.oauth.forget("127.0.0.1")  # no token: the 401 challenge starts a grant
    with pytest.raises(ue.UntrustedLink, match="password grant"):
        client.request("GET", "/ucwa/x")
    assert elsewhere.seen == []


def test_a_configured_token_host_is_allowed(ucwa: HostileServer, elsewhere: HostileServer) -> None:
    ucwa.routes["/ucwa/x"] = reply(401, "", challenge(elsewhere.url("/WebTicket/oauthtoken")))
    elsewhere.default = reply(200, {"access_token": "cwt=other", "expires_in": 60})
    client = client_for(ucwa, trusted_hosts=("127.0.0.2",))
    client.trust.allow_http = True  # the test servers speak plain http
    client.oauth.forget("127.0.0.1")
    with pytest.raises(ue.CredentialsRejected):  # the replay gets the same 401 again
        client.request("GET", "/ucwa/x")
    [grant] = elsewhere.seen
    assert parse_qs(grant.body.decode())["password"] == [PASSWORD]
    assert "authorization" not in grant.headers


def test_bootstrap_refuses_an_application_whose_self_link_leaves_the_session(
    ucwa: HostileServer, elsewhere: HostileServer
) -> None:
    """Discovery, grant and POST applications go to the UCWA host; the application's self link
    names another host, which would become the session's base: refused before any request."""
    root, user, apps, token = "/Autodiscover/root", "/root/oauth/user", "/ucwa/apps", "/WebTicket"
    ucwa.routes[root] = reply(200, {"_links": {"user": {"href": ucwa.url(user)}}})
    tokens_issued: list[str] = []

    def user_resource(conn: object) -> None:
        authorized = ucwa.seen[-1].headers.get("authorization")
        if authorized is None:
            reply(401, "", challenge(ucwa.url(token)))(conn)  # type: ignore[arg-type]
        else:
            reply(200, {"_links": {"applications": {"href": ucwa.url(apps)}}})(conn)  # type: ignore[arg-type]

    def grant(conn: object) -> None:
        tokens_issued.append(TOKEN)
        reply(200, {"access_token": TOKEN, "expires_in": 3600})(conn)  # type: ignore[arg-type]

    ucwa.routes[user] = user_resource
    ucwa.routes[token] = grant
    ucwa.routes[apps] = reply(
        201, {"_links": {"self": {"href": elsewhere.url("/ucwa/apps/1")}, "events": {"href": "/e"}}}
    )
    client = UcwaClient(CREDENTIALS, UcwaTransport())
    with pytest.raises(ue.UntrustedLink, match="application link"):
        Bootstrap(client, "sip:bot@contoso.com", ucwa.url(root)).run()
    assert tokens_issued == [TOKEN]
    assert [s.path for s in ucwa.seen] == [root, user, token, user, apps]
    assert elsewhere.seen == []


# -- deadlines and body caps --------------------------------------------------------------------


def test_a_server_trickling_its_headers_cannot_hold_a_request_past_the_deadline(
    ucwa: HostileServer,
) -> None:
    ucwa.routes["/slow"] = trickle(b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * 1000, every_s=0.05)
    client = client_for(ucwa, timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(DeliveryUnknown, match=r"within the 1s deadline"):
        client.request("GET", "/slow")
    assert time.monotonic() - started < 2.0


def test_a_trickled_endless_body_ends_at_the_long_poll_deadline(ucwa: HostileServer) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n"
    ucwa.routes["/events"] = trickle(head, every_s=0.0, then=iter(lambda: b" ", None))
    transport = UcwaTransport(connect_timeout=0.5, options=TransportOptions(timeout_s=30))
    client = UcwaClient(CREDENTIALS, transport)
    client.adopt(ucwa.url("/"), TOKEN, time.time() + 3600)
    started = time.monotonic()
    with pytest.raises(DeliveryUnknown, match=r"1\.5s deadline"):
        client.request("GET", "/events", read_timeout=1.0)  # deadline: read + connect timeout
    assert time.monotonic() - started < 2.5


def test_a_trickled_tls_handshake_ends_at_the_deadline() -> None:
    # A TLS record header promising a long ServerHello, then one byte at a time.
    greeting = trickle(b"\x16\x03\x03\x40\x00" + b"\x02" * 2000, every_s=0.05)
    with HostileServer("127.0.0.1", greeting=greeting) as server:
        transport = UcwaTransport(connect_timeout=5, options=TransportOptions(timeout_s=1.0))
        client = UcwaClient(CREDENTIALS, transport)
        client.adopt(f"https://127.0.0.1:{server.port}/", TOKEN, time.time() + 3600)
        started = time.monotonic()
        with pytest.raises(DeliveryUnknown, match="deadline"):
            client.request("GET", "/ucwa")
        assert time.monotonic() - started < 2.0


def test_a_declared_oversized_body_is_refused_without_reading_it(ucwa: HostileServer) -> None:
    ucwa.routes["/big"] = trickle(
        b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n",
        every_s=0.0,
        then=iter(lambda: b"{" * 1024, None),
    )
    client = client_for(ucwa, max_body_bytes=64 * 1024)
    started = time.monotonic()
    with pytest.raises(ue.ResponseTooLarge, match="over 65536 bytes"):
        client.request("GET", "/big")
    assert time.monotonic() - started < 1.0


def test_an_endless_body_is_cut_at_the_cap(ucwa: HostileServer) -> None:
    ucwa.routes["/endless"] = endless_body()
    client = client_for(ucwa, max_body_bytes=256 * 1024, timeout_s=5.0)
    started = time.monotonic()
    with pytest.raises(ue.ResponseTooLarge):
        client.request("GET", "/endless")
    assert time.monotonic() - started < 2.0


def test_a_well_behaved_answer_within_the_caps_is_read_whole(ucwa: HostileServer) -> None:
    body = {"_links": {"self": {"href": "/x"}}, "pad": "p" * 50_000}
    ucwa.routes["/ok"] = reply(200, body)
    client = client_for(ucwa, max_body_bytes=64 * 1024, timeout_s=2.0)
    assert client.get_json("/ok") == body


# -- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture()
def tls_ucwa(ca: trustme.CA) -> Iterator[HostileServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with HostileServer("127.0.0.1", tls=context, default=reply(200, {"ok": True})) as server:
        yield server


@pytest.fixture()
def ca_bundle(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def env(**extra: str) -> dict[str, str]:
    return {
        "BRIDGE_REDIS_URL": "redis://127.0.0.1:1/0",
        "BRIDGE_UCWA_DISCOVERY_URL": "https://lyncdiscover.contoso.com",
        "BRIDGE_UCWA_USERNAME": "bot@contoso.com",
        "BRIDGE_UCWA_PASSWORD": PASSWORD,
        **{f"BRIDGE_{k}": v for k, v in extra.items()},
    }


def test_tls_is_verified_by_default_and_an_unknown_ca_is_refused(tls_ucwa: HostileServer) -> None:
    options = TransportOptions.from_settings(Settings.from_env("worker", env()))
    assert options.verify is True
    client = client_for(tls_ucwa, verify=options.verify)
    with pytest.raises(NotSent, match="CERTIFICATE_VERIFY_FAILED"):
        client.request("GET", "/ucwa")
    assert tls_ucwa.seen == []  # no request, so no token, went over the unverified connection


def test_tls_with_the_configured_ca_bundle(tls_ucwa: HostileServer, ca_bundle: str) -> None:
    options = TransportOptions.from_settings(
        Settings.from_env("worker", env(UCWA_CA_BUNDLE=ca_bundle))
    )
    assert options.verify == ca_bundle
    client = client_for(tls_ucwa, verify=options.verify)
    assert client.get_json("/ucwa") == {"ok": True}
    assert tls_ucwa.seen[0].headers["authorization"] == f"Bearer {TOKEN}"


def test_turning_verification_off_is_explicit_and_warned_once(
    tls_ucwa: HostileServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport_module, "_warned_insecure", False)
    settings = Settings.from_env("worker", env(UCWA_TLS_VERIFY="false"))
    with caplog.at_level(logging.WARNING, logger="ucwa_bridge.transport"):
        options = TransportOptions.from_settings(settings)
        TransportOptions.from_settings(settings)
    warnings = [r for r in caplog.records if "verification" in r.getMessage()]
    assert len(warnings) == 1 and "BRIDGE_UCWA_TLS_VERIFY=false" in warnings[0].getMessage()
    assert options.verify is False
    assert client_for(tls_ucwa, verify=options.verify).get_json("/ucwa") == {"ok": True}


def test_tls_settings_are_validated_at_start_up(ca_bundle: str) -> None:
    with pytest.raises(ConfigError, match="BRIDGE_UCWA_CA_BUNDLE: no such file"):
        Settings.from_env("worker", env(UCWA_CA_BUNDLE="/nonexistent/ca.pem"))
    with pytest.raises(ConfigError, match="BRIDGE_UCWA_CA_BUNDLE: is set but"):
        Settings.from_env("worker", env(UCWA_CA_BUNDLE=ca_bundle, UCWA_TLS_VERIFY="false"))
    with pytest.raises(ConfigError, match="BRIDGE_UCWA_TLS_VERIFY"):
        Settings.from_env("worker", env(UCWA_TLS_VERIFY="maybe"))
    with pytest.raises(ConfigError, match="BRIDGE_UCWA_TRUSTED_HOSTS"):
        Settings.from_env("worker", env(UCWA_TRUSTED_HOSTS="https://evil.example/"))
    settings = Settings.from_env("worker", env(UCWA_TRUSTED_HOSTS="WebTicket.Contoso.com, x.y"))
    assert settings.ucwa_trusted_hosts == ("webticket.contoso.com", "x.y")
