"""The UCWA client on kept-alive connections, against the simulator's HTTP layer: requests share
connections, an idle-closed connection is replaced before a request goes out, a GET that lost
a kept-alive connection (reset, closed, or closed as the request crossed the close) is repeated
once, a POST never is; gzip, vnd+json and X-Ms-diagnostics.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from bridge.session.bootstrap import Application, Bootstrap
from bridge.session.client import UcwaClient
from bridge.session.transport import ConnectionLost, TransportOptions, UcwaTransport
from bridge.ucwa import errors as ue
from bridge.ucwa.auth import Credentials
from tests.fault.closing_proxy import ClosingProxy
from tests.integration.hostile_server import HostileServer, reply
from tests.session.conftest import BOT, PASSWORD
from ucwasim import SimConfig, Simulator, SimUser


def control(sim: Simulator, method: str, path: str, body: Any = None) -> Any:
    # A separate short-lived connection: the client's own pool is what is under test.
    response = requests.request(
        method, sim.base_url + path, json=body, timeout=5, headers={"Connection": "close"}
    )
    assert response.status_code < 400, response.text
    return response.json() if response.content else None


def signed_in(sim: Simulator, **options: Any) -> tuple[UcwaClient, Application]:
    client = UcwaClient(
        Credentials(BOT, PASSWORD), UcwaTransport(options=TransportOptions(**options))
    )
    app = Bootstrap(client, BOT, sim.discovery_url).run()
    client.base_url = app.base_url
    return client, app


def logged(sim: Simulator, kind: str) -> list[dict[str, Any]]:
    return [r for r in control(sim, "GET", "/_sim/requests")["requests"] if r["kind"] == kind]


def add_fault(sim: Simulator, **spec: Any) -> None:
    control(sim, "POST", "/_sim/faults", spec)


# -- reuse ----------------------------------------------------------------------------------------


def test_sign_in_and_requests_after_it_share_kept_alive_connections(sim: Simulator) -> None:
    client, app = signed_in(sim)
    for _ in range(5):
        client.get_json(app.href, kind="application")
    client.request("POST", app.links["reportMyActivity"], kind="reportMyActivity")
    entries = control(sim, "GET", "/_sim/requests")["requests"]
    per_connection = Counter(e["connection"] for e in entries)
    # discovery (two GETs), the grant, user, POST applications, makeMeAvailable, GET
    # application, five GETs and a POST: one connection for the lot.
    assert len(entries) >= 12
    assert len(per_connection) == 1, per_connection


def test_a_connection_the_server_closed_idle_is_replaced_before_the_post(sim: Simulator) -> None:
    client, app = signed_in(sim)
    control(sim, "PATCH", "/_sim/http", {"idle_timeout": 0.5})
    client.get_json(app.href, kind="application")
    before = {e["connection"] for e in logged(sim, "application")}
    time.sleep(1.2)  # the server closes the kept-alive connection after 0.5 s
    response = client.request("POST", app.links["reportMyActivity"], kind="reportMyActivity")
    assert response.status == 204
    [post] = logged(sim, "reportMyActivity")
    assert post["status"] == 204 and post["connection"] not in before


def test_a_connection_idle_longer_than_the_client_allows_is_not_reused(sim: Simulator) -> None:
    client, app = signed_in(sim, max_idle_s=0.3)  # the server would keep it for 120 s
    client.get_json(app.href, kind="application")
    client.get_json(app.href, kind="application")
    time.sleep(0.6)
    client.request("POST", app.links["reportMyActivity"], kind="reportMyActivity")
    [first, second] = [e["connection"] for e in logged(sim, "application")][-2:]
    [post] = logged(sim, "reportMyActivity")
    assert first == second  # reused while fresh
    assert post["connection"] != second and post["status"] == 204


# -- a kept-alive connection lost under a request --------------------------------------------------


def test_a_get_that_lost_a_kept_alive_connection_is_repeated_once(sim: Simulator) -> None:
    client, app = signed_in(sim)
    add_fault(
        sim,
        match={"method": "GET", "rel": "application", "connection": "reused"},
        reset_connection=True,
        times=1,
    )
    resource = client.get_json(app.href, kind="application")
    assert resource["_links"]["self"]["href"]
    reset, repeated = logged(sim, "application")[-2:]
    assert reset["status"] == 0 and repeated["status"] == 200
    assert repeated["connection"] != reset["connection"]


@pytest.mark.parametrize(
    "fault",
    [
        {"reset_connection": True},  # before the server acted on it
        {"reset_connection": True, "after_processing": True},  # after: the answer is lost
        {"drop_connection": True},  # FIN instead of RST, before the server acted on it
        {"drop_connection": True, "after_processing": True},  # FIN, after
    ],
    ids=["reset-before", "reset-after", "close-before", "close-after"],
)
def test_a_post_that_lost_a_kept_alive_connection_is_never_repeated(
    sim: Simulator, fault: dict[str, Any]
) -> None:
    client, app = signed_in(sim)
    add_fault(sim, match={"rel": "reportMyActivity", "connection": "reused"}, times=1, **fault)
    with pytest.raises(ConnectionLost) as lost:
        client.request("POST", app.links["reportMyActivity"], kind="reportMyActivity")
    assert lost.value.reused
    assert "kept-alive connection" in str(lost.value)
    assert len(logged(sim, "reportMyActivity")) == 1  # the server saw it once, and only once
    # The pool starts afresh: the next request goes out and is answered.
    assert client.request("POST", app.links["reportMyActivity"]).status == 204


@pytest.fixture()
def behind_closing_proxy() -> Iterator[tuple[Simulator, ClosingProxy]]:
    """The simulator behind a proxy that holds back its close of an idle connection that
    carried an application GET or a reportMyActivity POST, until the client's next request."""
    proxy = ClosingProxy(re.compile(rb"^(GET /ucwa/oauth/v1/applications/\d+ |POST \S*/report)"))
    proxy.start()
    simulator = Simulator(SimConfig(users=[SimUser(BOT, PASSWORD)], time_scale=0.05))
    simulator.start(public_url=proxy.url)
    proxy.upstream = f"http://127.0.0.1:{simulator.port}"
    try:
        yield simulator, proxy
    finally:
        simulator.stop()
        proxy.stop()


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_server_close_that_crosses_the_request_on_a_reused_connection(
    behind_closing_proxy: tuple[Simulator, ClosingProxy], method: str
) -> None:
    """The server's idle close reaches the client only as its next request is written (the
    bridge would reuse the connection: 30 s allowed idle, the server's is 0.3 s). A GET is
    repeated once on a new connection; a POST never is, and here it never reached the server."""
    sim, proxy = behind_closing_proxy
    client, app = signed_in(sim)
    kind = "application" if method == "GET" else "reportMyActivity"
    href = app.href if method == "GET" else app.links["reportMyActivity"]
    assert client.request(method, href, kind=kind).status in (200, 204)
    control(sim, "PATCH", "/_sim/http", {"idle_timeout": 0.3})
    time.sleep(1.0)
    before = len(logged(sim, kind))
    if method == "GET":
        assert client.request("GET", href, kind=kind).status == 200
        assert len(logged(sim, kind)) == before + 1  # the repeat; the crossed GET never arrived
    else:
        with pytest.raises(ConnectionLost) as lost:
            client.request("POST", href, kind=kind)
        assert lost.value.reused
        assert len(logged(sim, kind)) == before  # not sent again, and never arrived
        assert client.request("POST", href, kind=kind).status == 204  # a new connection
    [crossed] = proxy.crossed
    assert crossed.startswith(f"{method} ")


# -- what the answers carry -----------------------------------------------------------------------


def test_gzip_answers_are_read(sim: Simulator) -> None:
    client, app = signed_in(sim)
    response = client.request("GET", app.href, kind="application")
    assert response.header("Content-Encoding") == "gzip"
    assert response.json()["_links"]["self"]["href"]


def test_x_ms_diagnostics_reach_the_error_and_the_log(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    client, app = signed_in(sim)
    diagnostics = '28032;source="pool2.contoso.com";reason="The web ticket is invalid."'
    add_fault(sim, match={"rel": "reportMyActivity"}, status=403, diagnostics=diagnostics, times=1)
    with (
        caplog.at_level(logging.INFO, "ucwa_bridge.transport"),
        pytest.raises(ue.Forbidden) as raised,
    ):
        client.request("POST", app.links["reportMyActivity"], kind="reportMyActivity")
    assert raised.value.diagnostics == diagnostics
    [line] = [r for r in caplog.records if "X-Ms-diagnostics" in r.getMessage()]
    assert diagnostics in line.getMessage() and "reportMyActivity" in line.getMessage()


# -- hostile answers ------------------------------------------------------------------------------


@pytest.fixture()
def ucwa() -> Iterator[HostileServer]:
    with HostileServer("127.0.0.1") as server:
        yield server


def client_for(server: HostileServer, **options: Any) -> UcwaClient:
    client = UcwaClient(
        Credentials("bot@contoso.com", "pw"), UcwaTransport(options=TransportOptions(**options))
    )
    client.adopt(server.url("/ucwa/oauth/v1/applications/1"), "cwt=token", time.time() + 3600)
    return client


def gzipped(status: int, body: bytes, content_type: str = "application/json") -> Any:
    return reply(
        status, gzip.compress(body), {"Content-Encoding": "gzip", "Content-Type": content_type}
    )


def test_a_gzip_bomb_stops_at_the_decoded_cap(ucwa: HostileServer) -> None:
    ucwa.routes["/bomb"] = gzipped(200, b"{" + b" " * (200 * 1024 * 1024))  # 200 MiB inflated
    client = client_for(ucwa, max_body_bytes=1024 * 1024)
    started = time.monotonic()
    with pytest.raises(ue.ResponseTooLarge, match="over 1048576 bytes"):
        client.request("GET", "/bomb")
    assert time.monotonic() - started < 2.0


def test_the_cap_counts_decoded_bytes_not_the_compressed_length(ucwa: HostileServer) -> None:
    # Random bytes do not compress: gzipped they are longer than the cap, yet they fit it.
    body = os.urandom(4000)
    assert len(gzip.compress(body)) > len(body)
    ucwa.routes["/dense"] = gzipped(200, body, "text/plain; charset=latin-1")
    client = client_for(ucwa, max_body_bytes=len(body))
    assert client.request("GET", "/dense").text.encode("latin-1") == body


def test_the_vnd_media_type_is_read_as_json_and_every_request_asks_for_json(
    ucwa: HostileServer,
) -> None:
    body = '{"name": "Zoë Ångström", "_links": {"self": {"href": "/x"}}}'.encode()
    ucwa.routes["/me"] = gzipped(
        200, body, "application/vnd.microsoft.com.ucwa+json; charset=utf-8"
    )
    ucwa.routes["/act"] = reply(204, b"")
    client = client_for(ucwa)
    assert client.get_json("/me")["name"] == "Zoë Ångström"
    client.request("POST", "/act", json={"a": 1})
    for seen in ucwa.seen:
        assert seen.headers["accept"] == "application/json"
        assert seen.headers["accept-encoding"] == "gzip, deflate"


def test_a_credential_in_x_ms_diagnostics_never_reaches_the_error(ucwa: HostileServer) -> None:
    ucwa.routes["/x"] = reply(
        500,
        {"code": "ServiceFailure"},
        {"X-Ms-diagnostics": '1000;reason="echo";token=cwt=AAEBsecret; Bearer cwt=AAEB2'},
    )
    client = client_for(ucwa)
    with pytest.raises(ue.ServiceFailure) as raised:
        client.request("GET", "/x")
    assert raised.value.diagnostics is not None
    assert "AAEB" not in raised.value.diagnostics
    assert raised.value.diagnostics.startswith('1000;reason="echo";token=[REDACTED]')


def test_connection_idle_0_from_the_environment_opens_a_connection_per_request(
    sim: Simulator,
) -> None:
    from bridge.config.settings import Settings

    settings = Settings.from_env(
        "worker",
        {
            "BRIDGE_REDIS_URL": "redis://127.0.0.1:1/0",
            "BRIDGE_UCWA_DISCOVERY_URL": sim.discovery_url,
            "BRIDGE_UCWA_USERNAME": BOT,
            "BRIDGE_UCWA_PASSWORD": PASSWORD,
            "BRIDGE_UCWA_CONNECTION_IDLE_S": "0",
        },
    )
    options = TransportOptions.from_settings(settings)
    assert options.max_idle_s == 0.0
    client = UcwaClient(Credentials(BOT, PASSWORD), UcwaTransport(options=options))
    app = Bootstrap(client, BOT, sim.discovery_url).run()
    client.base_url = app.base_url
    control(sim, "DELETE", "/_sim/requests")
    for _ in range(4):
        time.sleep(0.01)  # idle for longer than 0 s
        client.get_json(app.href, kind="application")
    entries = control(sim, "GET", "/_sim/requests")["requests"]
    assert len(entries) == 4
    assert len({e["connection"] for e in entries}) == 4
