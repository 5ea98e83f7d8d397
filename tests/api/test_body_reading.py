"""Bodies that cannot be read whole, through a real gunicorn on raw sockets: a bad chunk size,
a chunk without its CRLF, a connection that ends mid-body, a Content-Length larger than what
arrives. Each is a 400 problem+json on both JSON endpoints, never a 500."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
import redis

from tests.api.conftest import SEND_AND_READ_KEY

PROBLEM = "application/problem+json"
ENDPOINTS = ["/messages", "/webhooks/replay"]
MESSAGE = b'{"to": "sip:a@b.com", "text": "hello", "since": "2026-01-01T00:00:00Z"}'
CHUNKED = "Transfer-Encoding: chunked\r\n"


def exchange(port: int, path: str, framing: str, body: bytes, *, end_early: bool) -> Any:
    """Send a POST with these framing headers and body bytes; ``end_early`` closes our side
    right after, as a client that went away mid-body does. Returns status, headers, body."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {SEND_AND_READ_KEY}\r\n"
        f"Content-Type: application/json\r\n{framing}\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
        conn.sendall(head.encode("latin-1") + body)
        if end_early:
            conn.shutdown(socket.SHUT_WR)
        answer = b""
        while b"\r\n\r\n" not in answer or not _complete(answer):
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
    head_text, _, payload = answer.partition(b"\r\n\r\n")
    status_line, *lines = head_text.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, payload


def _complete(answer: bytes) -> bool:
    head, _, payload = answer.partition(b"\r\n\r\n")
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.lower() == "content-length":
            return len(payload) >= int(value)
    return False


CASES = {
    "bad chunk size": (CHUNKED, b"zz\r\n" + MESSAGE + b"\r\n0\r\n\r\n", False),
    "chunk without its CRLF": (CHUNKED, b'5\r\n{"to"XX0\r\n\r\n', False),
    "ends inside a chunk": (CHUNKED, b"40\r\n" + MESSAGE[:20], True),
    "ends before the last chunk": (CHUNKED, b"%x\r\n" % len(MESSAGE) + MESSAGE + b"\r\n", True),
    "ends before Content-Length": ("Content-Length: 500\r\n", MESSAGE, True),
    "ends with no body at all": ("Content-Length: 70\r\n", b"", True),
}


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("case", list(CASES))
def test_a_body_that_cannot_be_read_whole_is_a_400_problem(
    gunicorn_api: int, redis_client: redis.Redis, path: str, case: str
) -> None:
    framing, body, end_early = CASES[case]

    status, headers, payload = exchange(gunicorn_api, path, framing, body, end_early=end_early)

    assert status == 400, payload
    assert headers["content-type"] == PROBLEM
    problem = json.loads(payload)
    assert problem["status"] == 400
    assert problem["type"] == "urn:ucwa-bridge:problem:bad-request"
    assert problem["errors"][0]["field"] == "body"
    assert not list(redis_client.scan_iter("msg:*"))


def test_a_whole_chunked_body_is_still_accepted(gunicorn_api: int) -> None:
    message = b'{"to": "sip:a@b.com", "text": "hello"}'
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(message), message)

    status, _, payload = exchange(gunicorn_api, "/messages", CHUNKED, body, end_early=False)

    assert status == 202, payload
