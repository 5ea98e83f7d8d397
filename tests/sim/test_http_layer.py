"""The HTTP layer a real server's IIS puts around UCWA: persistent connections and their faults,
compression, https (CreateAnApplication.md traces: "Connection: Keep-Alive", "Accept-Encoding:
gzip, deflate", "Vary: Accept-Encoding"; RootURL.md for the http → https redirect)."""

from __future__ import annotations

import gzip
import http.client
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tests.sim.conftest import FAST, Client, default_users
from ucwasim import SimConfig, Simulator


def sim_api(sim: Simulator, method: str, path: str, **kw: Any) -> requests.Response:
    return requests.request(method, f"{sim.base_url}/_sim/{path}", timeout=5, **kw)


def raw_connection(sim: Simulator) -> http.client.HTTPConnection:
    url = urlsplit(sim.base_url)
    return http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)


def raw_get(
    conn: http.client.HTTPConnection, path: str, headers: dict[str, str] | None = None
) -> tuple[http.client.HTTPResponse, bytes]:
    conn.request("GET", path, headers=headers or {})
    reply = conn.getresponse()
    return reply, reply.read()


def app_path(bot: Client) -> str:
    return urlsplit(bot.app_url).path


def logged_connections(sim: Simulator, kind: str) -> list[int]:
    entries = sim_api(sim, "GET", "requests").json()["requests"]
    return [e["connection"] for e in entries if e["kind"] == kind]


# -- persistent connections ---------------------------------------------------------------------


def test_two_requests_share_one_tcp_connection(sim, bot: Client) -> None:
    bot.start(available=False)
    conn = raw_connection(sim)
    auth = {"Authorization": f"Bearer {bot.token}", "Accept": "application/json"}
    first, _ = raw_get(conn, app_path(bot), auth)
    sock = conn.sock
    second, _ = raw_get(conn, app_path(bot), auth)
    assert first.status == second.status == 200
    assert conn.sock is sock  # http.client reused its socket: the server kept it open
    assert first.getheader("Connection") == "Keep-Alive"
    numbers = logged_connections(sim, "application")
    assert len(numbers) == 2 and numbers[0] == numbers[1]
    conn.close()


def test_pooled_session_opens_one_connection_for_a_whole_flow(sim, bot: Client) -> None:
    before = sim_api(sim, "GET", "http").json()["connections_accepted"]
    bot.start()  # discovery, challenge, token, user, application, makeMeAvailable, GET app
    stats = sim_api(sim, "GET", "http").json()
    # the session's one connection, plus the one this control request came on
    assert stats["connections_accepted"] - before == 2
    numbers = {e["connection"] for e in sim_api(sim, "GET", "requests").json()["requests"]}
    assert len(numbers) == 1


def test_idle_kept_alive_connection_is_closed_after_the_idle_timeout(make_sim) -> None:
    sim = make_sim(http_idle_timeout=0.6)
    conn = raw_connection(sim)
    reply, _ = raw_get(conn, "/Autodiscover/AutodiscoverService.svc/root")
    assert reply.status == 200 and reply.getheader("Connection") == "Keep-Alive"
    sock = conn.sock
    assert sock is not None
    time.sleep(0.2)
    again, _ = raw_get(conn, "/Autodiscover/AutodiscoverService.svc/root")
    assert again.status == 200 and conn.sock is sock  # within the idle time: reused
    time.sleep(1.2)
    sock.settimeout(2)
    assert sock.recv(1) == b""  # the server closed it (FIN) while it sat idle
    conn.close()


def test_idle_timeout_can_be_changed_at_run_time(sim) -> None:
    assert sim_api(sim, "GET", "http").json()["idle_timeout"] == 120.0
    changed = sim_api(sim, "PATCH", "http", json={"idle_timeout": 0.5}).json()
    assert changed["idle_timeout"] == 0.5
    assert sim_api(sim, "PATCH", "http", json={"idle_timeout": -1}).status_code == 400
    conn = raw_connection(sim)
    raw_get(conn, "/Autodiscover/AutodiscoverService.svc/root")
    assert conn.sock is not None
    sock = conn.sock
    time.sleep(1.2)
    sock.settimeout(2)
    assert sock.recv(1) == b""


def test_reset_on_a_reused_connection(sim, bot: Client) -> None:
    bot.start(available=False)
    fault = {
        "match": {"rel": "application", "connection": "reused"},
        "reset_connection": True,
        "times": 1,
    }
    assert sim_api(sim, "POST", "faults", json=fault).status_code == 201
    auth = {"Authorization": f"Bearer {bot.token}"}
    conn = raw_connection(sim)
    first, _ = raw_get(conn, app_path(bot), auth)  # a fresh connection: not affected
    assert first.status == 200
    with pytest.raises(ConnectionResetError):
        raw_get(conn, app_path(bot), auth)
    conn.close()
    assert sim_api(sim, "GET", "faults").json() == []
    assert bot.get(bot.app["_links"]["self"]["href"]).status_code == 200


def test_reset_after_processing_leaves_the_request_carried_out(sim, bot: Client) -> None:
    bot.start(available=False)
    fault = {
        "match": {"method": "DELETE", "rel": "application"},
        "reset_connection": True,
        "after_processing": True,
        "times": 1,
    }
    sim_api(sim, "POST", "faults", json=fault)
    with pytest.raises(requests.ConnectionError):
        bot.delete(bot.app["_links"]["self"]["href"])
    gone = bot.get(bot.app["_links"]["self"]["href"])
    assert gone.status_code == 404 and gone.json()["subcode"] == "ApplicationNotFound"


def test_connection_fault_spec_is_validated(sim) -> None:
    bad = [
        {"match": {"connection": "sometimes"}, "reset_connection": True},
        {"after_processing": True, "status": 500},
        {"status": 500, "diagnostics": 28032},
    ]
    for spec in bad:
        assert sim_api(sim, "POST", "faults", json=spec).status_code == 400, spec


# -- compression ------------------------------------------------------------------------------


def test_answers_are_gzipped_when_the_client_accepts_it(sim, bot: Client) -> None:
    bot.start(available=False)
    reply = bot.get(bot.app["_links"]["self"]["href"])  # requests sends gzip, deflate
    assert reply.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in reply.headers["Vary"]
    assert reply.json()["rel"] == "application"
    conn = raw_connection(sim)
    auth = {"Authorization": f"Bearer {bot.token}"}
    zipped, body = raw_get(conn, app_path(bot), {**auth, "Accept-Encoding": "gzip"})
    assert zipped.getheader("Content-Encoding") == "gzip"
    assert int(zipped.getheader("Content-Length") or 0) == len(body)
    assert json.loads(gzip.decompress(body))["rel"] == "application"
    plain, body = raw_get(conn, app_path(bot), auth)
    assert plain.getheader("Content-Encoding") is None
    assert json.loads(body)["rel"] == "application"
    conn.close()


def test_compression_can_be_switched_off(make_sim) -> None:
    sim = make_sim(gzip=False)
    reply = requests.get(sim.discovery_url, headers={"Accept-Encoding": "gzip"}, timeout=5)
    assert "Content-Encoding" not in reply.headers
    sim_api(sim, "PATCH", "http", json={"gzip": True})
    reply = requests.get(sim.discovery_url, headers={"Accept-Encoding": "gzip"}, timeout=5)
    assert reply.headers["Content-Encoding"] == "gzip"


# -- https ------------------------------------------------------------------------------------


@pytest.fixture()
def tls_sim(tmp_path) -> Iterator[Simulator]:
    sim = Simulator(SimConfig(users=default_users(), **FAST))
    sim.start(tls=True, ca_path=tmp_path / "ca.pem")
    yield sim
    sim.stop()


def test_https_end_to_end_with_the_written_ca(tls_sim: Simulator, tmp_path) -> None:
    assert tls_sim.base_url.startswith("https://")
    assert tls_sim.ca_path == tmp_path / "ca.pem"
    assert tls_sim.ca_path.read_text().startswith("-----BEGIN CERTIFICATE-----")
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(tls_sim.discovery_url, timeout=5)  # not trusted without the CA
    bot = Client(tls_sim, "sip:bot@contoso.com", "secret")
    bot.http.verify = str(tls_sim.ca_path)
    bot.http.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment wins
    bot.start()
    assert bot.applications_url and bot.applications_url.startswith("https://")
    reply = bot.post(bot.link("communication", "startMessaging"), {"to": "sip:alice@contoso.com"})
    assert reply.status_code == 201


def test_plain_http_autodiscovery_redirects_to_https(tls_sim: Simulator) -> None:
    assert tls_sim.plain_url and tls_sim.plain_url.startswith("http://")
    root = "/Autodiscover/AutodiscoverService.svc/root?originalDomain=contoso.com"
    reply = requests.get(tls_sim.plain_url + root, allow_redirects=False, timeout=5)
    assert reply.status_code == 302
    assert reply.headers["Location"] == tls_sim.base_url + root
    followed = requests.get(tls_sim.plain_url + root, verify=str(tls_sim.ca_path), timeout=5).json()
    assert followed["_links"]["user"]["href"].startswith("https://")
    other = requests.get(tls_sim.plain_url + "/ucwa/oauth/v1/applications", timeout=5)
    assert other.status_code == 404
