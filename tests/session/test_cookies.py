"""A cookie the UCWA server sets (a load balancer's affinity cookie, say) goes back with the
next requests, as a browser would send it. A real HTTP server on an ephemeral port."""

from __future__ import annotations

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bridge.session.client import UcwaClient
from bridge.ucwa.auth import Credentials
from tests.http_threads import serving


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    cookies: list[str]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        assert isinstance(self.server, _Server)
        self.server.cookies.append(self.headers.get("Cookie") or "")
        self.send_response(200)
        if len(self.server.cookies) == 1:
            self.send_header("Set-Cookie", "affinity=pool-a; Path=/; HttpOnly")
        body = b"{}"
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[_Server]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.cookies = []
    with serving(httpd):
        yield httpd


def test_a_cookie_the_server_set_goes_back_with_the_next_requests(server: _Server) -> None:
    client = UcwaClient(Credentials("sip:bot@contoso.com", "pw"))
    client.adopt(f"http://127.0.0.1:{server.server_address[1]}", "token", 4_102_444_800.0)

    for _ in range(3):
        client.get_json("/ucwa/oauth/v1/applications/1")

    assert server.cookies == ["", "affinity=pool-a", "affinity=pool-a"]
