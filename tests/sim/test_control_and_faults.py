"""The /_sim/ control API, fault injection, the request log and hostile input."""

from __future__ import annotations

import re

import pytest
import requests

from tests.sim.conftest import Client, is_event


def sim_api(sim, method: str, path: str, **kw) -> requests.Response:
    return requests.request(method, f"{sim.base_url}/_sim/{path}", timeout=5, **kw)


def test_users_can_be_added_listed_and_patched(sim) -> None:
    reply = sim_api(
        sim,
        "POST",
        "users",
        json={"sip": "sip:carol@contoso.com", "password": "pw", "behaviour": "decline"},
    )
    assert reply.status_code == 201
    assert (
        sim_api(
            sim, "POST", "users", json={"sip": "sip:carol@contoso.com", "password": "pw"}
        ).status_code
        == 409
    )
    patched = sim_api(sim, "PATCH", "users/sip:carol@contoso.com", json={"behaviour": "echo"})
    assert patched.json()["behaviour"] == "echo"
    bad = sim_api(sim, "PATCH", "users/sip:carol@contoso.com", json={"behaviour": "dance"})
    assert bad.status_code == 400
    sips = [u["sip"] for u in sim_api(sim, "GET", "users").json()]
    assert "sip:carol@contoso.com" in sips
    client = Client(sim, "sip:carol@contoso.com", "pw")
    client.sign_in()
    assert client.token


def test_behaviour_change_takes_effect(sim, bot: Client) -> None:
    bot.start()
    sim_api(sim, "PATCH", "users/alice@contoso.com", json={"behaviour": "decline"})
    bot.post(bot.link("communication", "startMessaging"), {"to": "sip:alice@contoso.com"})
    _, ev = bot.wait_for(is_event("messagingInvitation", "completed"))
    assert ev["reason"]["subcode"] == "Declined"


def test_fault_status_times_and_log(sim, bot: Client) -> None:
    bot.start()
    fault = sim_api(
        sim,
        "POST",
        "faults",
        json={"match": {"rel": "events"}, "status": 503, "retry_after": 7, "times": 1},
    ).json()
    assert sim_api(sim, "GET", "faults").json()[0]["id"] == fault["id"]
    reply = bot.poll()
    assert reply.status_code == 503 and reply.headers["Retry-After"] == "7"
    assert reply.json()["code"] == "ServiceUnavailable"
    assert bot.poll().status_code == 200
    assert sim_api(sim, "GET", "faults").json() == []
    log = sim_api(sim, "GET", "requests").json()
    kinds = [r["kind"] for r in log["requests"]]
    assert kinds[:5] == ["root", "user", "token", "user", "applications"]
    assert log["counts"]["events"] == 2
    assert log["requests"][-2]["status"] == 503 and log["requests"][-1]["user"] == bot.sip
    sim_api(sim, "DELETE", "requests")
    assert sim_api(sim, "GET", "requests").json()["requests"] == []


def test_fault_with_code_subcode_and_path(sim, bot: Client) -> None:
    bot.start()
    made = sim_api(
        sim,
        "POST",
        "faults",
        json={
            "match": {"method": "POST", "path": "messagingInvitations$"},
            "status": 500,
            "code": "ServiceFailure",
            "subcode": "CallbackChannelError",
        },
    ).json()
    reply = bot.post(bot.link("communication", "startMessaging"), {"to": "sip:alice@contoso.com"})
    assert reply.status_code == 500 and reply.json()["subcode"] == "CallbackChannelError"
    assert sim_api(sim, "DELETE", f"faults/{made['id']}").status_code == 200
    assert sim_api(sim, "DELETE", f"faults/{made['id']}").status_code == 404


def test_drop_connection(sim, bot: Client) -> None:
    bot.start()
    sim_api(
        sim,
        "POST",
        "faults",
        json={"match": {"rel": "application"}, "drop_connection": True, "times": 1},
    )
    with pytest.raises(requests.ConnectionError):
        requests.get(bot.url(bot.app["_links"]["self"]["href"]), headers=bot.headers(), timeout=5)
    assert bot.get(bot.app["_links"]["self"]["href"]).status_code == 200


def test_401_fault_challenges_revokes_the_token_and_spares_a_fresh_one(sim, bot: Client) -> None:
    bot.start()
    me = bot.app["_embedded"]["me"]["_links"]["self"]["href"]
    sim_api(sim, "POST", "faults", json={"match": {"rel": "me"}, "status": 401, "rate": 1})
    refused = bot.get(me)
    assert refused.status_code == 401
    challenges = ", ".join(refused.raw.headers.getlist("WWW-Authenticate"))
    assert 'MsRtcOAuth href="' in challenges and "grant_type=" in challenges
    assert "Bearer trusted_issuers=" in challenges
    # the token is gone for every request, not only the faulted kind
    assert bot.get(bot.app["_links"]["self"]["href"]).status_code == 401
    token_url = re.search(r'MsRtcOAuth href="([^"]+)"', challenges)
    assert token_url
    grant = {"grant_type": "password", "username": "bot@contoso.com", "password": "secret"}
    bot.token = requests.post(token_url.group(1), data=grant, timeout=5).json()["access_token"]
    assert bot.get(me).status_code == 200  # a fresh token's first use goes through
    assert bot.get(me).status_code == 401  # the storm goes on for tokens already used
    bot.token = None
    assert bot.get(me).status_code == 401  # no token: the ordinary challenge, no fault hit
    hits = sim_api(sim, "GET", "faults").json()[0]["hits"]
    assert hits == 2


def test_resync_fault_points_the_event_channel_back_at_its_position(sim, bot: Client) -> None:
    bot.start()
    bot.drain()
    sim_api(sim, "POST", "faults", json={"match": {"rel": "events"}, "resync": True, "times": 1})
    position = bot.next_events
    reply = bot.poll()
    assert reply.status_code == 200
    body = reply.json()
    assert set(body["_links"]) == {"resync"} and "sender" not in body
    assert bot.next_events.split("ack=")[1] == position.split("ack=")[1]
    bot.post(bot.link("communication", "startMessaging"), {"to": "sip:alice@contoso.com"})
    bot.wait_for(is_event("messagingInvitation", "started"))  # nothing was lost
    assert sim_api(sim, "GET", "faults").json() == []


def test_fault_validation(sim) -> None:
    assert sim_api(sim, "POST", "faults", json={"match": {}}).status_code == 400
    assert sim_api(sim, "POST", "faults", json={"status": 200}).status_code == 400
    assert sim_api(sim, "POST", "faults", json={"status": 500, "rate": 2}).status_code == 400
    assert sim_api(sim, "POST", "faults", data="nope").status_code == 400
    assert sim_api(sim, "GET", "nothing").status_code == 404


def test_reset_returns_to_the_initial_state(sim, bot: Client) -> None:
    bot.start()
    sim_api(sim, "POST", "users", json={"sip": "sip:dan@contoso.com", "password": "x"})
    assert sim_api(sim, "POST", "reset").status_code == 200
    assert bot.get(bot.app["_links"]["self"]["href"]).status_code == 401
    assert "sip:dan@contoso.com" not in [u["sip"] for u in sim_api(sim, "GET", "users").json()]


def test_expire_application_through_control_api(sim, bot: Client) -> None:
    bot.start()
    sim_api(sim, "POST", "expire", json={"user": bot.sip, "what": "application", "status": 410})
    reply = bot.get(bot.app["_links"]["self"]["href"])
    assert reply.status_code == 410 and reply.json()["subcode"] == "InactiveApplicationExpired"


def test_hostile_input_never_yields_html_or_traces(sim, bot: Client) -> None:
    bot.start()
    app = bot.app["_links"]["self"]["href"]
    attempts = [
        ("GET", app + "/communication/conversations/nope", None, None),
        ("GET", app + "/does/not/exist", None, None),
        ("PATCH", app, b"{}", "application/json"),
        ("POST", app + "/me/makeMeAvailable", b"[1,2]", "application/json"),
        ("POST", app + "/me/makeMeAvailable", b"\xff\xfe", "application/json"),
        ("POST", bot.link("communication", "startMessaging"), b"to=x", "text/plain"),
        ("POST", bot.link("communication", "startMessaging"), b"x" * 2_000_000, "application/json"),
        ("GET", app + "/events?ack=abc", None, None),
        ("GET", app + "/communication/messagingInvitations/zzz", None, None),
        ("POST", app + "/batch", b"junk", "text/plain"),
        ("GET", "/ucwa/oauth/v1/applications/123", None, None),
        ("DELETE", "/nothing/here", None, None),
    ]
    for method, href, data, ctype in attempts:
        headers = bot.headers({"Content-Type": ctype} if ctype else None)
        reply = bot.http.request(method, bot.url(href), data=data, headers=headers, timeout=10)
        assert 400 <= reply.status_code < 500, (method, href, reply.status_code)
        assert reply.headers["Content-Type"].startswith("application/json"), (method, href)
        body = reply.json()
        assert "code" in body and "Traceback" not in reply.text


def test_batch_runs_parts(sim, bot: Client) -> None:
    bot.start()
    boundary = "77f2569d"
    me = bot.link("me", "self")
    parts = "".join(
        f"--{boundary}\r\nContent-Type: application/http; msgtype=request\r\n\r\n"
        f"GET {href} HTTP/1.1\r\nAccept: application/json\r\n\r\n"
        for href in (me, bot.link("communication", "self"))
    )
    reply = bot.post(
        bot.app["_links"]["batch"]["href"],
        data=parts + f"--{boundary}--\r\n",
        headers={"Content-Type": f"multipart/batching;boundary={boundary}"},
    )
    assert reply.status_code == 200 and reply.headers["Content-Type"].startswith(
        "multipart/batching"
    )
    assert reply.text.count("HTTP/1.1 200 OK") == 2 and '"rel": "me"' in reply.text


def test_the_log_says_how_long_the_server_took(sim, bot: Client) -> None:
    """``ms``: from the request's arrival to its answer, a fault's delay included."""
    bot.start()
    sim_api(sim, "DELETE", "requests")
    slow_once = {"match": {"rel": "application"}, "delay_ms": 300, "times": 1}
    sim_api(sim, "POST", "faults", json=slow_once)
    bot.refresh()
    bot.refresh()
    slow, quick = (r for r in sim_api(sim, "GET", "requests").json()["requests"])
    assert slow["kind"] == quick["kind"] == "application"
    assert 300 <= slow["ms"] < 3000
    assert 0 <= quick["ms"] < slow["ms"] - 250
