"""Slow clients and gunicorn's own refusals, on a real gunicorn with real Redis.

Clients that trickle headers or bodies cannot hold up /healthz or POST /messages, and are cut off
with a 408 problem at the header or body deadline; every refusal gunicorn writes itself is a
problem+json naming what was wrong.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from gunicorn.http import errors

from bridge.config.embedded_redis import free_port
from tests.api.conftest import API_KEYS, bearer, served_api

PROBLEM = "application/problem+json"
HEADER_TIMEOUT_S = 3
BODY_TIMEOUT_S = 4
SLOW_CLIENTS = 100
PROMPT_S = 5.0

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api_port(redis_url: str) -> Iterator[int]:
    """One gunicorn worker, as ``ucwa-bridge api`` starts it, with short read deadlines."""
    with served_api(
        redis_url,
        RATE_LIMIT="off",
        API_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S),
        API_BODY_TIMEOUT_S=str(BODY_TIMEOUT_S),
        API_LIMIT_REQUEST_LINE="200",
        API_LIMIT_REQUEST_FIELDS="12",
        LOG_LEVEL="ERROR",
    ) as port:
        yield port


def read_answer(sock: socket.socket, timeout: float) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of the answer on ``sock``, read to close."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    head, _, body = data.partition(b"\r\n\r\n")
    if not head:
        return 0, {}, b""
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def raw_answer(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        return read_answer(sock, 5)


class Tricklers:
    """``count`` connections that send ``preamble`` at once, then ``trickle`` a byte a second
    for ``seconds`` (short of the deadline), then hold the connection open, unfinished."""

    def __init__(self, port: int, count: int, preamble: bytes, trickle: bytes, seconds: int):
        self.socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
        self.preamble, self.trickle, self.seconds = preamble, trickle, seconds
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for sock in self.socks:
            if self.preamble:
                sock.sendall(self.preamble)
        for byte in self.trickle[: self.seconds]:
            for sock in self.socks:
                with contextlib.suppress(OSError):
                    sock.send(bytes([byte]))
            time.sleep(1)

    def answers(self, timeout: float) -> list[int]:
        try:
            return [read_answer(sock, timeout)[0] for sock in self.socks]
        finally:
            for sock in self.socks:
                sock.close()


def prompt_answers(port: int) -> tuple[int, int]:
    """Status of /healthz and of POST /messages, each refused if it takes over PROMPT_S."""
    base = f"http://127.0.0.1:{port}"
    health = requests.get(f"{base}/healthz", timeout=PROMPT_S)
    sent = requests.post(
        f"{base}/messages",
        json={"to": "sip:alice@contoso.com", "text": "past the slow ones"},
        headers=bearer(),
        timeout=PROMPT_S,
    )
    return health.status_code, sent.status_code


def test_trickling_headers_neither_delay_the_api_nor_outlive_the_header_deadline(
    api_port: int,
) -> None:
    slow = Tricklers(api_port, SLOW_CLIENTS, b"", b"POST /messages HTTP/1.1\r\nHost: x\r\n", 2)
    time.sleep(1)

    assert prompt_answers(api_port) == (200, 202)

    statuses = slow.answers(timeout=HEADER_TIMEOUT_S + 5)
    assert statuses == [408] * SLOW_CLIENTS
    assert time.monotonic() - slow.started < HEADER_TIMEOUT_S + 5


def test_trickling_bodies_neither_delay_the_api_nor_outlive_the_body_deadline(
    api_port: int,
) -> None:
    head = (
        b"POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + bearer()["Authorization"].split()[1].encode() + b"\r\n"
        b"Content-Length: 1000\r\n\r\n"
    )
    slow = Tricklers(api_port, SLOW_CLIENTS, head, b'{"to": "sip:a@b.c"', 2)
    time.sleep(1)

    assert prompt_answers(api_port) == (200, 202)

    statuses = slow.answers(timeout=BODY_TIMEOUT_S + 5)
    assert statuses == [408] * SLOW_CLIENTS
    assert time.monotonic() - slow.started < BODY_TIMEOUT_S + 5


def test_a_timed_out_request_is_a_problem_naming_the_part_that_was_late(api_port: int) -> None:
    with socket.create_connection(("127.0.0.1", api_port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        status, headers, body = read_answer(sock, HEADER_TIMEOUT_S + 5)

    assert status == 408
    assert headers["content-type"] == PROBLEM
    problem = json.loads(body)
    assert problem["type"] == "urn:ucwa-bridge:problem:request-timeout"
    assert problem["errors"][0]["field"] == "headers"


def test_a_client_expecting_100_continue_gets_it_before_sending_the_body(api_port: int) -> None:
    body = b'{"to": "sip:alice@contoso.com", "text": "after the interim answer"}'
    head = (
        b"POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: " + bearer()["Authorization"].encode() + b"\r\n"
        b"Expect: 100-continue\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    )
    with socket.create_connection(("127.0.0.1", api_port), timeout=5) as sock:
        sock.sendall(head)
        assert sock.recv(25) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        status, _, _ = read_answer(sock, 5)

    assert status == 202


@pytest.mark.parametrize(("name", "value"), [("HEADER_TIMEOUT_S", "0"), ("BODY_TIMEOUT_S", "soon")])
def test_an_invalid_read_deadline_is_refused_at_start_up(
    redis_url: str, name: str, value: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update(
        BRIDGE_REDIS_URL=redis_url, BRIDGE_API_KEYS=API_KEYS, **{f"BRIDGE_API_{name}": value}
    )

    done = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "api", "--bind", f"127.0.0.1:{free_port()}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert done.returncode == 78
    assert f"BRIDGE_API_{name}" in done.stderr


_POST = b"POST /messages HTTP/1.1\r\nHost: x\r\n"
_CHUNKED = (
    _POST
    + b"Authorization: "
    + bearer()["Authorization"].encode()
    + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
)
# A raw request for each error class gunicorn's parser raises on a client's request; the
# status, the problem type and the field the answer must carry.
REFUSALS: dict[str, tuple[bytes, int, str, str]] = {
    "InvalidRequestLine": (b"GET\r\n\r\n", 400, "malformed-request", "request-line"),
    "InvalidRequestLine-8bit": (
        b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n",
        400,
        "malformed-request",
        "request-line",
    ),
    "InvalidRequestMethod": (b"G@T / HTTP/1.1\r\n\r\n", 400, "malformed-request", "method"),
    "InvalidHTTPVersion": (b"GET / HTTP/9.9\r\n\r\n", 400, "malformed-request", "http-version"),
    "InvalidHeader": (
        _POST + b"Content-Length: abc\r\n\r\n",
        400,
        "malformed-request",
        "headers",
    ),
    "InvalidHeader-length-and-chunked": (
        _POST + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
        "malformed-request",
        "headers",
    ),
    "InvalidHeaderName": (
        b"GET / HTTP/1.1\r\nBad Name: y\r\n\r\n",
        400,
        "malformed-request",
        "header-name",
    ),
    "ObsoleteFolding": (
        b"GET / HTTP/1.1\r\nX-A: y\r\n  z\r\n\r\n",
        400,
        "malformed-request",
        "headers",
    ),
    "UnsupportedTransferCoding": (
        _POST + b"Transfer-Encoding: bogus, chunked\r\n\r\n",
        501,
        "unsupported-transfer-coding",
        "transfer-encoding",
    ),
    # Errors in the body reach the app, which answers them with its own problem.
    "InvalidChunkSize": (_CHUNKED + b"zz\r\n", 400, "bad-request", "body"),
    "ChunkMissingTerminator": (_CHUNKED + b"3\r\nabcXX", 400, "bad-request", "body"),
    "InvalidChunkExtension": (
        _CHUNKED + b"3;\x01\r\nabc\r\n0\r\n\r\n",
        400,
        "bad-request",
        "body",
    ),
    "ExpectationFailed": (
        _POST + b"Expect: foo\r\nContent-Length: 0\r\n\r\n",
        417,
        "expectation-failed",
        "expect",
    ),
    "InvalidSchemeHeaders": (
        b"GET / HTTP/1.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\n\r\n",
        400,
        "malformed-request",
        "headers",
    ),
    "LimitRequestLine": (
        b"GET /" + b"a" * 300 + b" HTTP/1.1\r\n\r\n",
        414,
        "request-line-too-long",
        "request-line",
    ),
    "LimitRequestHeaders": (
        b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(20)) + b"\r\n",
        431,
        "headers-too-large",
        "headers",
    ),
}
# Classes no request to this deployment can raise: proxy protocol and HTTP/2 prior knowledge are
# off, a configuration problem is the server's, a response header the app's, and NoMoreData is a
# client that went away (nobody to answer).
UNREACHABLE = {
    "ParseException",
    "NoMoreData",
    "ConfigurationProblem",
    "InvalidProxyLine",
    "InvalidProxyHeader",
    "ForbiddenProxyRequest",
    "InvalidH2CPreface",
    "InvalidResponseHeader",
    "InvalidResponseHeaderName",
}


def test_every_gunicorn_http_error_class_is_either_exercised_or_named_unreachable() -> None:
    classes = {
        name
        for name, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, Exception) and cls.__module__ == errors.__name__
    }
    exercised = {name.split("-")[0] for name in REFUSALS}

    assert classes - UNREACHABLE == exercised


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_gunicorn_refusals_are_problem_json(api_port: int, name: str) -> None:
    request, status, slug, field = REFUSALS[name]

    answer_status, headers, body = raw_answer(api_port, request)

    assert answer_status == status
    assert headers["content-type"] == PROBLEM
    problem: dict[str, Any] = json.loads(body)
    assert problem["type"] == f"urn:ucwa-bridge:problem:{slug}"
    assert problem["status"] == status
    assert [error["field"] for error in problem["errors"]] == [field]
