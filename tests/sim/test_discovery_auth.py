"""Discovery, the MsRtcOAuth challenge and the token endpoint (CreateAnApplication.md steps 1-8)."""

from __future__ import annotations

import time

import requests

from tests.sim.conftest import Client, default_users
from ucwasim import SimConfig, Simulator


def test_root_user_and_xframe_links_are_absolute(sim, bot: Client) -> None:
    reply = requests.get(sim.discovery_url, timeout=5)
    assert reply.status_code == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    links = reply.json()["_links"]
    assert set(links) == {"self", "user", "xframe"}
    assert all(link["href"].startswith(sim.base_url) for link in links.values())
    for header in ("X-MS-Server-Fqdn", "X-MS-UcwaVersion"):
        assert reply.headers[header]
    assert reply.headers["Cache-Control"] == "no-cache"


def test_redirect_mode_points_to_another_root(make_sim) -> None:
    sim = make_sim(redirect=True)
    first = requests.get(sim.discovery_url, timeout=5).json()["_links"]
    assert "user" not in first
    second = requests.get(first["redirect"]["href"], timeout=5).json()["_links"]
    assert second["user"]["href"].startswith(sim.base_url)
    client = Client(sim, "sip:bot@contoso.com", "secret")
    client.sign_in()
    assert client.applications_url


def test_user_without_token_is_challenged_with_both_schemes(sim, bot: Client) -> None:
    reply = requests.get(bot.discover(), timeout=5)
    assert reply.status_code == 401
    assert reply.headers["Content-Type"].startswith("text/html")
    challenges = reply.raw.headers.getlist("WWW-Authenticate")
    assert len(challenges) == 2
    bearer, oauth = challenges
    assert bearer.startswith("Bearer trusted_issuers=") and "client_id=" in bearer
    assert oauth == (
        f'MsRtcOAuth href="{sim.base_url}/WebTicket/oauthtoken",'
        'grant_type="urn:microsoft.rtc:windows,urn:microsoft.rtc:anonmeeting,password"'
    )


def test_token_grant_and_user_resource(sim, bot: Client) -> None:
    bot.sign_in()
    assert bot.token and bot.token.startswith("cwt=")
    user = requests.get(bot.discover(), headers=bot.headers(), timeout=5).json()
    assert set(user["_links"]) == {"self", "applications", "xframe"}
    assert user["_links"]["applications"]["href"].startswith(sim.base_url)


def _token(sim, data: dict[str, str]) -> requests.Response:
    return requests.post(f"{sim.base_url}/WebTicket/oauthtoken", data=data, timeout=5)


def test_token_response_headers_and_fields(sim) -> None:
    reply = _token(
        sim, {"grant_type": "password", "username": "bot@contoso.com", "password": "secret"}
    )
    body = reply.json()
    assert body["token_type"] == "Bearer" and body["ms_rtc_identityscope"] == "local"
    assert isinstance(body["expires_in"], int) and body["expires_in"] > 0
    assert reply.headers["Cache-Control"] == "no-store" and reply.headers["Pragma"] == "no-cache"


def test_token_errors(sim) -> None:
    bad = _token(sim, {"grant_type": "password", "username": "bot@contoso.com", "password": "x"})
    assert (bad.status_code, bad.json()) == (400, {"error": "invalid_grant"})
    windows = _token(sim, {"grant_type": "urn:microsoft.rtc:windows"})
    assert (windows.status_code, windows.json()) == (400, {"error": "unsupported_grant_type"})
    assert windows.headers["X-Ms-diagnostics"].startswith("28029;")
    missing = _token(sim, {"grant_type": "password", "username": "bot@contoso.com"})
    assert (missing.status_code, missing.json()) == (400, {"error": "invalid_request"})
    empty = _token(sim, {})
    assert empty.json() == {"error": "invalid_request"}


def test_expired_token_gets_the_challenge_everywhere(make_sim) -> None:
    sim = make_sim(token_lifetime=20)  # 0.2 s at time_scale 0.01
    client = Client(sim, "sip:bot@contoso.com", "secret").start()
    time.sleep(0.3)
    for href in (client.app["_links"]["self"]["href"], client.next_events):
        reply = client.get(href)
        assert reply.status_code == 401
        assert any(
            h.startswith("MsRtcOAuth") for h in reply.raw.headers.getlist("WWW-Authenticate")
        )
    client.sign_in()
    assert client.get(client.app["_links"]["self"]["href"]).status_code == 200


def test_forced_token_expiry_through_control_api(sim, bot: Client) -> None:
    bot.start()
    requests.post(f"{sim.base_url}/_sim/expire", json={"user": bot.sip, "what": "token"}, timeout=5)
    assert bot.get(bot.app["_links"]["self"]["href"]).status_code == 401


def test_public_url_is_written_into_links_while_listening_on_every_interface() -> None:
    sim = Simulator(SimConfig(users=default_users())).start(
        "0.0.0.0", 0, public_url=f"http://sim.example:{8090}/"
    )
    try:
        root = requests.get(
            f"http://127.0.0.1:{sim.port}/Autodiscover/AutodiscoverService.svc/root"
            "?originalDomain=contoso.com",
            timeout=5,
        ).json()
        assert root["_links"]["user"]["href"].startswith("http://sim.example:8090/")
        assert sim.discovery_url.startswith("http://sim.example:8090/")
    finally:
        sim.stop()
