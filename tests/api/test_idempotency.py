"""Idempotency-Key: replay, body mismatch, in-progress duplicates, crash recovery."""

from __future__ import annotations

import threading
import time
from typing import Any

import redis
from flask import Flask
from flask.testing import FlaskClient
from rq import Queue

from bridge.api import create_app
from bridge.api.idempotency import Claim, IdempotencyStore, StoredResponse, fingerprint
from bridge.config.settings import ApiKey
from bridge.outbound.intake import Intake, IntakeConflict
from bridge.outbound.messages import MessageRecord, MessageStore
from tests.api.conftest import SEND_AND_READ_KEY, SEND_ONLY_KEY, MakeSettings, bearer

MESSAGE = {"to": "sip:alice@contoso.com", "text": "deploy done"}


def send(client: FlaskClient, body: Any, key: str, api_key: str = SEND_AND_READ_KEY) -> Any:
    return client.post("/messages", json=body, headers={**bearer(api_key), "Idempotency-Key": key})


def never_render(record: MessageRecord) -> StoredResponse:
    raise AssertionError("not expected to complete")


def test_repeat_returns_the_first_response(client: FlaskClient, redis_client: redis.Redis) -> None:
    first = send(client, MESSAGE, "order-1")
    # Same JSON, other key order and spacing: still the same request.
    again = client.post(
        "/messages",
        data='{ "text": "deploy done",  "to": "sip:alice@contoso.com" }',
        content_type="application/json",
        headers={**bearer(), "Idempotency-Key": "order-1"},
    )

    assert first.status_code == again.status_code == 202
    assert again.get_data() == first.get_data()
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotency-Replayed"] == "true"
    assert "Idempotency-Replayed" not in first.headers
    assert len(redis_client.keys("msg:*")) == 1
    assert Queue("send", connection=redis_client).count == 1


def test_different_body_same_key_is_422(client: FlaskClient, redis_client: redis.Redis) -> None:
    send(client, MESSAGE, "order-2")

    response = send(client, {**MESSAGE, "text": "something else"}, "order-2")

    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert problem["type"] == "urn:ucwa-bridge:problem:idempotency-key-reused"
    assert problem["errors"][0]["field"] == "Idempotency-Key"
    assert len(redis_client.keys("msg:*")) == 1


def test_keys_are_scoped_per_api_key(client: FlaskClient, redis_client: redis.Redis) -> None:
    first = send(client, MESSAGE, "shared", SEND_AND_READ_KEY)
    second = send(client, MESSAGE, "shared", SEND_ONLY_KEY)

    assert second.status_code == 202
    assert "Idempotency-Replayed" not in second.headers
    assert second.get_json()["id"] != first.get_json()["id"]


def test_concurrent_duplicate_is_409(app: Flask, redis_url: str) -> None:
    other = redis.Redis.from_url(redis_url)  # another API process holding the claim
    store = IdempotencyStore(other, ttl_s=86_400, lock_ttl_s=30)
    scope = ApiKey(SEND_AND_READ_KEY).key_id
    held = store.begin(scope, "order-3", fingerprint("POST", "/messages", MESSAGE), never_render)
    assert isinstance(held, Claim)

    response = send(app.test_client(), MESSAGE, "order-3")

    assert response.status_code == 409
    assert response.get_json()["type"] == "urn:ucwa-bridge:problem:idempotency-in-progress"
    assert response.headers["Retry-After"] == "1"
    assert other.keys("msg:*") == []
    other.close()


def test_parallel_requests_create_one_message(app: Flask, redis_client: redis.Redis) -> None:
    statuses: list[int] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        client = app.test_client()
        barrier.wait()
        statuses.append(send(client, MESSAGE, "order-4").status_code)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(redis_client.keys("msg:*")) == 1
    assert set(statuses) <= {202, 409} and 202 in statuses


def test_abandoned_claim_expires(make_settings: MakeSettings, redis_client: redis.Redis) -> None:
    settings = make_settings(idempotency_lock_ttl_s="1")
    client = create_app(settings, redis_client).test_client()
    store = IdempotencyStore(redis_client, ttl_s=86_400, lock_ttl_s=1)
    scope = ApiKey(SEND_AND_READ_KEY).key_id
    # A process that claimed the key and died before storing anything.
    store.begin(scope, "order-5", fingerprint("POST", "/messages", MESSAGE), never_render)
    assert send(client, MESSAGE, "order-5").status_code == 409

    time.sleep(1.2)

    assert send(client, MESSAGE, "order-5").status_code == 202


def test_completed_response_lives_for_the_ttl(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    send(client, MESSAGE, "order-6")

    (key,) = redis_client.keys("idem:*")
    assert 86_000 < redis_client.ttl(key) <= 86_400


def test_failed_intake_releases_the_claim(redis_client: redis.Redis) -> None:
    store = IdempotencyStore(redis_client, ttl_s=60, lock_ttl_s=30)
    claim = store.begin("scope", "k", "fp", never_render)
    assert isinstance(claim, Claim)

    claim.release()

    assert redis_client.keys("idem:*") == []


def test_lost_claim_aborts_the_intake(redis_client: redis.Redis) -> None:
    store = IdempotencyStore(redis_client, ttl_s=60, lock_ttl_s=30)
    claim = store.begin("scope", "k", "fp", never_render)
    assert isinstance(claim, Claim)
    # The claim expired and another request took the key.
    redis_client.set(claim.key, '{"state": "processing", "token": "other", "fingerprint": "fp"}')
    intake = Intake(redis_client, MessageStore(redis_client))
    record = MessageRecord.new(to="sip:a@b.com", text="x", validity_s=60)

    try:
        intake.submit(record, claim)
    except IntakeConflict:
        pass
    else:
        raise AssertionError("submit succeeded without owning the claim")

    assert redis_client.keys("msg:*") == []
    assert Queue("send", connection=redis_client).count == 0


def test_invalid_idempotency_key_is_400(client: FlaskClient) -> None:
    response = send(client, MESSAGE, "x" * 256)

    assert response.status_code == 400
    assert response.get_json()["errors"][0]["field"] == "Idempotency-Key"
