"""The UCWA transport's two ways of sending send the same bytes: a request with no proxy and no
cookie goes to urllib3's pool itself, skipping ``requests``' session layer; any other through
``requests``. Generated requests against a real server that keeps what arrives, byte for byte."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.session.transport import DeliveryUnknown, TransportOptions, UcwaTransport
from bridge.ucwa.messages import HttpRequest

_BODY = '{"a": "été"}'.encode()
ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
    + f"Content-Length: {len(_BODY)}\r\nConnection: close\r\n\r\n".encode()
    + _BODY
)


class Capture:
    """Keeps each request's bytes as sent (head and body), answers ``ANSWER`` and closes."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(body) < length and (chunk := conn.recv(65536)):
                    body += chunk
                self.requests.append(head + b"\r\n\r\n" + body)
                conn.sendall(ANSWER)

    def close(self) -> None:
        self.sock.close()


class ThroughRequests(UcwaTransport):
    """Takes ``requests``' own path: a proxy setting that names no scheme applies to nothing."""

    def _proxies_for(self, url: str) -> dict[str, str]:
        return {"unused": "http://127.0.0.1:9"}


@pytest.fixture(scope="module")
def capture() -> Iterator[Capture]:
    server = Capture()
    yield server
    server.close()


_SEGMENT = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=6
).filter(lambda s: "/" not in s and "?" not in s and "#" not in s)
_QUERY = st.none() | st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=8
).filter(lambda s: "#" not in s)
_NAME = st.text(
    st.sampled_from("abcdefghijklmnopqrstuvwxyzXYZ0123456789-"), min_size=1, max_size=10
)
_VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20).map(str.strip)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    segments=st.lists(_SEGMENT, max_size=3),
    query=_QUERY,
    headers=st.dictionaries(_NAME, _VALUE, max_size=3),
    body=st.sampled_from(["none", "json", "form", "text"]),
)
def test_both_paths_send_the_same_request(
    capture: Capture,
    method: str,
    segments: list[str],
    query: str | None,
    headers: dict[str, str],
    body: str,
) -> None:
    url = f"http://127.0.0.1:{capture.port}/ucwa/" + "/".join(segments)
    if query is not None:
        url += "?" + query
    extra: dict[str, Any] = {
        "none": {},
        "json": {"json": {"message": "é", "n": 1}},
        "form": {"form": {"grant_type": "password", "username": "a b@c"}},
        "text": {"content": "hello, wörld"},
    }[body]
    request = HttpRequest(method, url, headers=tuple(headers.items()), **extra)
    answers = []
    for transport in (UcwaTransport(), ThroughRequests()):
        try:
            before = len(capture.requests)
            answer = transport.send(request)
            answers.append((answer.status, answer.text, answer.header("Content-Type")))
            assert len(capture.requests) == before + 1
        finally:
            transport.close()
    fast, slow = capture.requests[-2:]
    assert fast == slow
    assert answers[0] == answers[1] == (200, '{"a": "été"}', "application/json; charset=utf-8")


@pytest.mark.parametrize(
    ("url", "verify", "error", "match"),
    [
        ("https://127.0.0.1:9/ucwa", "missing", OSError, "CA certificate bundle"),
        ("http:///ucwa", True, requests.exceptions.InvalidURL, "host"),
    ],
    ids=["missing-ca-bundle", "no-host"],
)
def test_a_request_that_cannot_be_sent_fails_alike_on_both_paths_and_is_not_unknown(
    tmp_path: Path, url: str, verify: bool | str, error: type[Exception], match: str
) -> None:
    options = TransportOptions(
        verify=str(tmp_path / "nowhere.pem") if verify == "missing" else True
    )
    request = HttpRequest("POST", url, content="hello")
    for transport in (UcwaTransport(options=options), ThroughRequests(options=options)):
        try:
            with pytest.raises(error, match=match) as raised:
                transport.send(request)
            assert not isinstance(raised.value, DeliveryUnknown)
        finally:
            transport.close()
