"""The API over real HTTP: a werkzeug server in a thread, ``requests`` as the client."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import redis
import requests
from flask import Flask
from werkzeug.serving import make_server

from bridge.outbound.messages import MessageStore
from tests.api.conftest import bearer


@pytest.fixture()
def base_url(app: Flask) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)


def test_send_then_read_over_http(base_url: str, redis_client: redis.Redis) -> None:
    with requests.Session() as session:
        sent = session.post(
            f"{base_url}/messages",
            json={"to": "sip:alice@contoso.com", "text": "over the wire"},
            headers={**bearer(), "Idempotency-Key": "wire-1"},
            timeout=10,
        )
        assert sent.status_code == 202
        message_id = sent.json()["id"]
        assert MessageStore(redis_client).get(message_id).text == "over the wire"

        read = session.get(f"{base_url}{sent.headers['Location']}", headers=bearer(), timeout=10)
        assert read.status_code == 200
        assert read.json()["status"] == "queued"

        replay = session.post(
            f"{base_url}/messages",
            json={"to": "sip:alice@contoso.com", "text": "over the wire"},
            headers={**bearer(), "Idempotency-Key": "wire-1"},
            timeout=10,
        )
        assert replay.content == sent.content
        assert replay.headers["Idempotency-Replayed"] == "true"


def test_errors_over_http_are_problems(base_url: str) -> None:
    unauthorized = requests.post(f"{base_url}/messages", json={}, timeout=10)
    assert unauthorized.status_code == 401
    assert unauthorized.headers["Content-Type"] == "application/problem+json"
    assert unauthorized.headers["WWW-Authenticate"].startswith("Bearer")

    too_large = requests.post(
        f"{base_url}/messages",
        data=b'{"text": "' + b"x" * 8000 + b'"}',
        headers={**bearer(), "Content-Type": "application/json"},
        timeout=10,
    )
    assert too_large.status_code == 413
    assert too_large.headers["Content-Type"] == "application/problem+json"

    wrong_type = requests.post(
        f"{base_url}/messages", data="hi", headers={**bearer(), "Content-Type": "text/plain"},
        timeout=10,
    )  # fmt: skip
    assert wrong_type.status_code == 415
