"""UCWA traffic honours the process's proxy variables (``HTTP_PROXY``/``HTTPS_PROXY`` and
``NO_PROXY``), read once per origin rather than on every request, and nothing else of the
environment (a ``.netrc`` entry for the UCWA host never replaces the bearer token).

A real forward proxy on an ephemeral port, in front of a real HTTP server standing in for UCWA.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bridge.session.client import UcwaClient
from bridge.ucwa.auth import Credentials
from tests.http_threads import serving
from tests.outbound.fake_ucwa import APP, Ucwa, running_ucwa

SEND = f"{APP}/communication/conversations/7/messaging/sendMessage"


class ForwardProxy(ThreadingHTTPServer):
    """An HTTP forward proxy: takes absolute-form request lines and relays them upstream."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Relay)
        self.seen: list[tuple[str, str, str]] = []  # (method, absolute URL, Authorization)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Relay(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self._relay()

    def do_GET(self) -> None:
        self._relay()

    def _relay(self) -> None:
        assert isinstance(self.server, ForwardProxy)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append((self.command, self.path, self.headers.get("Authorization") or ""))
        target = urlsplit(self.path)
        upstream = http.client.HTTPConnection(target.hostname or "", target.port, timeout=5)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "proxy-connection"}
        upstream.request(self.command, target.path, body=body or None, headers=headers)
        answer = upstream.getresponse()
        payload = answer.read()
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        upstream.close()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def proxy() -> Iterator[ForwardProxy]:
    with serving(ForwardProxy()) as server:
        yield server


@pytest.fixture()
def ucwa() -> Iterator[Ucwa]:
    with running_ucwa() as server:
        yield server


def client_for(ucwa: Ucwa) -> UcwaClient:
    client = UcwaClient(Credentials("sip:bot@contoso.com", "pw"))
    client.adopt(ucwa.base, "the-token", 4_102_444_800.0)
    return client


def send(client: UcwaClient, text: str) -> int:
    response = client.request(
        "POST", SEND, content=text, content_type="text/plain", kind="sendMessage"
    )
    return response.status


def clear_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def test_requests_go_through_the_proxy_the_environment_names(
    monkeypatch: pytest.MonkeyPatch, proxy: ForwardProxy, ucwa: Ucwa
) -> None:
    clear_proxy_variables(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    client = client_for(ucwa)

    assert [send(client, f"hello {n}") for n in range(3)] == [201, 201, 201]

    assert [(m, url) for m, url, _ in proxy.seen] == [("POST", ucwa.base + SEND)] * 3
    assert {auth for _, _, auth in proxy.seen} == {"Bearer the-token"}
    assert ucwa.paths == [SEND] * 3


def test_no_proxy_sends_the_host_direct(
    monkeypatch: pytest.MonkeyPatch, proxy: ForwardProxy, ucwa: Ucwa
) -> None:
    clear_proxy_variables(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    client = client_for(ucwa)

    assert send(client, "direct") == 201

    assert proxy.seen == []
    assert ucwa.paths == [SEND]


def test_without_proxy_variables_requests_go_direct(
    monkeypatch: pytest.MonkeyPatch, proxy: ForwardProxy, ucwa: Ucwa
) -> None:
    clear_proxy_variables(monkeypatch)
    client = client_for(ucwa)

    assert send(client, "direct") == 201

    assert proxy.seen == []
    assert ucwa.paths == [SEND]


def test_a_netrc_entry_for_the_ucwa_host_never_replaces_the_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, proxy: ForwardProxy, ucwa: Ucwa
) -> None:
    clear_proxy_variables(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)  # the proxy shows what was sent
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine 127.0.0.1 login someone password hunter2\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    client = client_for(ucwa)

    assert send(client, "hello") == 201

    assert [auth for _, _, auth in proxy.seen] == ["Bearer the-token"]
