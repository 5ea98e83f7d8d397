"""Every API log line carries the request id, which is echoed in the X-Request-ID header."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from bridge.observability.logging import JsonFormatter
from tests.api.conftest import bearer


@pytest.fixture()
def lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("bridge.api")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def logged(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_the_callers_request_id_is_logged_and_echoed(
    client: FlaskClient, lines: io.StringIO
) -> None:
    response = client.post(
        "/messages",
        json={"to": "sip:alice@contoso.com", "text": "hi"},
        headers={**bearer(), "X-Request-ID": "trace-4711"},
    )
    assert response.status_code == 202
    assert response.headers["X-Request-ID"] == "trace-4711"
    (accepted,) = [e for e in logged(lines) if e["message"] == "message accepted"]
    assert accepted["request_id"] == "trace-4711"
    assert accepted["message_id"] == response.get_json()["id"]


def test_a_fresh_id_when_none_or_a_malformed_one_is_given(
    client: FlaskClient, lines: io.StringIO
) -> None:
    first = client.post("/messages", json={"to": "sip:a@b.c", "text": "x"}, headers=bearer())
    second = client.post(
        "/messages",
        json={"to": "sip:a@b.c", "text": "y"},
        headers={**bearer(), "X-Request-ID": "bad id; with spaces"},
    )
    ids = [first.headers["X-Request-ID"], second.headers["X-Request-ID"]]
    assert all(i.startswith("req_") for i in ids) and ids[0] != ids[1]
    assert [e["request_id"] for e in logged(lines) if e["message"] == "message accepted"] == ids


def test_errors_carry_the_id_too_and_nothing_leaks_between_requests(
    client: FlaskClient, lines: io.StringIO
) -> None:
    bad = client.post("/messages", json={"to": "nope"}, headers={**bearer(), "X-Request-ID": "r1"})
    assert bad.status_code == 422 and bad.headers["X-Request-ID"] == "r1"
    assert client.get("/healthz").headers["X-Request-ID"].startswith("req_")
