"""Per-key rate limiting: 429 problems with Retry-After and RateLimit fields, shared in Redis."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import requests
from flask import Flask
from flask.testing import FlaskClient
from redis.backoff import NoBackoff
from redis.retry import Retry
from werkzeug.serving import make_server

from bridge.api import create_app
from bridge.config.embedded_redis import free_port
from bridge.config.settings import ConfigError, RateLimit, Settings
from tests.api.conftest import (
    READ_ONLY_KEY,
    SEND_AND_READ_KEY,
    SEND_ONLY_KEY,
    MakeSettings,
    bearer,
)

PROBLEM = "application/problem+json"
MESSAGE = {"to": "sip:alice@contoso.com", "text": "hello"}


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def limited_client(make_settings: MakeSettings, redis_client: redis.Redis, **env: str) -> Any:
    return create_app(make_settings(**env), redis_client).test_client()


def send(client: FlaskClient, key: str = SEND_AND_READ_KEY) -> Any:
    return client.post("/messages", json=MESSAGE, headers=bearer(key))


def test_burst_then_429_problem_with_retry_after_and_ratelimit_fields(
    make_settings: MakeSettings, redis_client: redis.Redis
) -> None:
    client = limited_client(make_settings, redis_client, rate_limit="1/h", rate_limit_burst="3")

    accepted = [send(client) for _ in range(3)]
    refused = send(client)

    assert [r.status_code for r in accepted] == [202, 202, 202]
    assert [r.headers["RateLimit"] for r in accepted] == [
        '"per-key";r=2;t=3600',
        '"per-key";r=1;t=7200',
        '"per-key";r=0;t=10800',
    ]
    assert accepted[0].headers["RateLimit-Policy"] == '"per-key";q=3;w=10800'
    assert refused.status_code == 429
    assert refused.mimetype == PROBLEM
    body = refused.get_json()
    assert body["type"] == "urn:ucwa-bridge:problem:rate-limited"
    assert body["status"] == 429
    assert body["errors"] == [
        {"field": "Authorization", "message": "rate limit of this API key exceeded", "code": "rate"}
    ]
    assert 3590 <= int(refused.headers["Retry-After"]) <= 3600
    assert refused.headers["RateLimit"] == '"per-key";r=0;t=10800'
    assert refused.headers["RateLimit-Policy"] == '"per-key";q=3;w=10800'
    assert "Retry-After" not in accepted[0].headers


def test_reads_count_too_and_each_key_has_its_own_allowance(
    make_settings: MakeSettings, redis_client: redis.Redis
) -> None:
    client = limited_client(make_settings, redis_client, rate_limit="1/h", rate_limit_burst="2")
    message_id = send(client).get_json()["id"]

    read = client.get(f"/messages/{message_id}", headers=bearer())
    assert read.status_code == 200
    assert client.get(f"/messages/{message_id}", headers=bearer()).status_code == 429
    assert client.get("/webhooks/endpoints", headers=bearer()).status_code == 429

    assert send(client, SEND_ONLY_KEY).status_code == 202
    other = client.get(f"/messages/{message_id}", headers=bearer(READ_ONLY_KEY))
    assert other.status_code == 200
    assert other.headers["RateLimit"].startswith('"per-key";r=1;')


def test_refused_bodies_count_too_and_the_429_comes_first(
    make_settings: MakeSettings, redis_client: redis.Redis
) -> None:
    client = limited_client(make_settings, redis_client, rate_limit="1/h", rate_limit_burst="3")
    headers = bearer()

    invalid = client.post("/messages", json={"to": "alice", "text": "hi"}, headers=headers)
    wrong_type = client.post("/messages", data="hi", headers=headers)
    accepted = send(client)
    refused_invalid = client.post("/messages", json={"text": ""}, headers=headers)
    refused = send(client)

    assert [invalid.status_code, wrong_type.status_code, accepted.status_code] == [422, 415, 202]
    assert invalid.headers["RateLimit"] == '"per-key";r=2;t=3600'
    assert accepted.headers["RateLimit"] == '"per-key";r=0;t=10800'
    assert [refused_invalid.status_code, refused.status_code] == [429, 429]
    assert int(redis_client.llen("rq:queue:send")) == 1


def test_idempotent_posts_are_counted_once_each(
    make_settings: MakeSettings, redis_client: redis.Redis
) -> None:
    client = limited_client(make_settings, redis_client, rate_limit="1/h", rate_limit_burst="2")
    headers = {**bearer(), "Idempotency-Key": "rate-1"}

    first = client.post("/messages", json=MESSAGE, headers=headers)
    replay = client.post("/messages", json=MESSAGE, headers=headers)
    refused = client.post("/messages", json=MESSAGE, headers=headers)

    assert [first.status_code, replay.status_code, refused.status_code] == [202, 202, 429]
    assert replay.headers["Idempotency-Replayed"] == "true"
    assert first.headers["RateLimit"] == '"per-key";r=1;t=3600'


def test_unauthenticated_and_probe_requests_are_not_counted(
    make_settings: MakeSettings, redis_client: redis.Redis
) -> None:
    client = limited_client(make_settings, redis_client, rate_limit="1/h", rate_limit_burst="1")

    for _ in range(3):
        assert client.post("/messages", json=MESSAGE).status_code == 401
        assert client.get("/healthz").status_code == 200
    assert "RateLimit" not in client.get("/healthz").headers
    assert send(client).status_code == 202


def test_allowance_comes_back_at_the_configured_rate(
    make_settings: MakeSettings, redis_client: redis.Redis
) -> None:
    client = limited_client(make_settings, redis_client, rate_limit="20/s", rate_limit_burst="1")

    assert send(client).status_code == 202
    refused = send(client)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"  # 50 ms, rounded up to whole seconds
    time.sleep(0.06)
    assert send(client).status_code == 202


def test_per_key_override_and_off(make_settings: MakeSettings, redis_client: redis.Redis) -> None:
    client = limited_client(
        make_settings,
        redis_client,
        rate_limit="1/h",
        rate_limit_burst="1",
        rate_limit_keys=f"{key_id(SEND_AND_READ_KEY)}=off,{key_id(SEND_ONLY_KEY)}=1/h:3",
    )

    unlimited = [send(client) for _ in range(5)]
    assert {r.status_code for r in unlimited} == {202}
    assert "RateLimit" not in unlimited[0].headers
    assert [send(client, SEND_ONLY_KEY).status_code for _ in range(4)] == [202, 202, 202, 429]


def test_limit_is_shared_by_concurrent_requests_across_app_instances(
    make_settings: MakeSettings, redis_url: str, redis_client: redis.Redis
) -> None:
    """Two app instances (as two gunicorn workers or replicas) with their own connections."""
    settings = make_settings(rate_limit="1/h", rate_limit_burst="10")
    urls = []
    servers = []
    for _ in range(2):
        app = create_app(settings, redis.Redis.from_url(redis_url))
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        urls.append(f"http://127.0.0.1:{server.server_port}/messages")
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(12)

    def caller(url: str) -> None:
        with requests.Session() as session:
            start.wait()
            for _ in range(4):
                status = session.post(url, json=MESSAGE, headers=bearer(), timeout=10).status_code
                with lock:
                    statuses[status] += 1

    threads = [threading.Thread(target=caller, args=(urls[n % 2],)) for n in range(12)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for server in servers:
            server.shutdown()

    assert statuses == {202: 10, 429: 38}
    assert int(redis_client.llen("rq:queue:send")) == 10


def test_unreachable_redis_is_still_a_503_problem(settings: Settings) -> None:
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    client = create_app(settings, dead).test_client()

    for response in (send(client), client.get("/messages/msg_" + "0" * 32, headers=bearer())):
        assert response.status_code == 503
        assert response.mimetype == PROBLEM
        assert response.get_json()["type"] == "urn:ucwa-bridge:problem:service-unavailable"


@pytest.fixture()
def app_without_limit(make_settings: MakeSettings, redis_client: redis.Redis) -> Iterator[Flask]:
    yield create_app(make_settings(rate_limit="off"), redis_client)


def test_off_means_no_limit_and_no_fields(app_without_limit: Flask) -> None:
    client = app_without_limit.test_client()
    responses = [send(client) for _ in range(120)]
    assert {r.status_code for r in responses} == {202}
    assert "RateLimit" not in responses[-1].headers


def test_settings_default_is_on_and_bad_values_name_the_variable(redis_url: str) -> None:
    base = {"BRIDGE_REDIS_URL": redis_url, "BRIDGE_API_KEYS": SEND_AND_READ_KEY}
    assert Settings.from_env("api", base).rate_limit == RateLimit(10, 1, 100)
    assert Settings.from_env("api", {**base, "BRIDGE_RATE_LIMIT": "600/min"}).rate_limit == (
        RateLimit(600, 60, 100)
    )
    for variable, value in [
        ("BRIDGE_RATE_LIMIT", "10 per second"),
        ("BRIDGE_RATE_LIMIT", "0/s"),
        ("BRIDGE_RATE_LIMIT_BURST", "0"),
        ("BRIDGE_RATE_LIMIT_KEYS", "0123456789abcdef=1/s"),
        ("BRIDGE_RATE_LIMIT_KEYS", f"{key_id(SEND_AND_READ_KEY)}=1/s:many"),
    ]:
        with pytest.raises(ConfigError) as caught:
            Settings.from_env("api", {**base, variable: value})
        assert str(caught.value).startswith(variable)
        assert SEND_AND_READ_KEY not in str(caught.value)
