"""The operator API over a real delivery log: listing, detail, retry, replay, endpoints."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from bridge.api.webhooks import blueprint, init_app
from bridge.webhooks.admin import WebhookAdmin
from bridge.webhooks.endpoints import WebhookEndpoint
from bridge.webhooks.log import DeliveryStatus
from bridge.webhooks.settings import WebhookSettings
from tests.webhooks.harness import configure, new_secret, publish, record, run_deliveries
from tests.webhooks.receiver import Reply, WebhookReceiver

SECRET = new_secret()


@pytest.fixture()
def endpoints(receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch) -> list[WebhookEndpoint]:
    monkeypatch.setenv("BRIDGE_WEBHOOK_SCHEDULE_S", "none")
    return configure(
        monkeypatch,
        {"id": "ops", "url": receiver.url(), "secrets": [SECRET], "allow_private": True},
        {
            "id": "other",
            "url": receiver.url("/other"),
            "secrets": [new_secret()],
            "allow_private": True,
        },
    )


@pytest.fixture()
def client(redis_client: redis.Redis, endpoints: list[WebhookEndpoint]) -> FlaskClient:
    app = Flask(__name__)
    init_app(app, WebhookAdmin(redis_client, WebhookSettings.from_env(os.environ), endpoints))
    app.register_blueprint(blueprint)
    return app.test_client()


def test_list_newest_first_with_filters_and_cursor(
    client: FlaskClient,
    redis_client: redis.Redis,
    endpoints: list[WebhookEndpoint],
    receiver: WebhookReceiver,
) -> None:
    ids = []
    for _ in range(3):
        _, staged = publish(redis_client, endpoints)
        ids.append(staged)
    receiver.script(Reply(500))  # the very first delivery fails for good
    run_deliveries(redis_client)

    page = client.get("/webhooks/deliveries?limit=4").get_json()
    assert len(page["items"]) == 4 and page["next_cursor"]
    rest = client.get(f"/webhooks/deliveries?limit=4&cursor={page['next_cursor']}").get_json()
    listed = [d["id"] for d in page["items"] + rest["items"]]
    assert len(listed) == len(set(listed)) == 6
    assert set(ids[2]) == set(listed[:2]) and set(ids[0]) == set(listed[4:])

    ops = client.get("/webhooks/deliveries?endpoint=ops").get_json()["items"]
    assert [d["id"] for d in ops] == [staged[0] for staged in reversed(ids)]
    dead = client.get("/webhooks/deliveries?status=dead").get_json()["items"]
    assert len(dead) == 1 and dead[0]["reason"] == "retries_exhausted"
    none = client.get("/webhooks/deliveries?type=conversation.ended").get_json()["items"]
    assert none == []


def test_detail_shows_attempts_and_unknown_ids_are_problems(
    client: FlaskClient,
    redis_client: redis.Redis,
    endpoints: list[WebhookEndpoint],
    receiver: WebhookReceiver,
) -> None:
    receiver.script(Reply(503, body=b"busy"))
    _, [ops_id, _] = publish(redis_client, endpoints)
    run_deliveries(redis_client)
    detail = client.get(f"/webhooks/deliveries/{ops_id}").get_json()
    assert detail["status"] == "dead" and detail["attempt_count"] == 1
    [attempt] = detail["attempts"]
    assert attempt["status_code"] == 503 and attempt["response_excerpt"] == "busy"
    assert attempt["at"].endswith("Z")

    missing = client.get("/webhooks/deliveries/dlv_nope")
    assert missing.status_code == 404
    assert missing.mimetype == "application/problem+json"
    assert missing.get_json()["type"].endswith("delivery-not-found")


def test_retry_delivers_the_same_event_again_and_409_while_in_flight(
    client: FlaskClient,
    redis_client: redis.Redis,
    endpoints: list[WebhookEndpoint],
    receiver: WebhookReceiver,
) -> None:
    receiver.script(Reply(500))
    event, [ops_id, _] = publish(redis_client, endpoints)
    run_deliveries(redis_client)
    assert record(redis_client, ops_id).status == DeliveryStatus.DEAD

    accepted = client.post(f"/webhooks/deliveries/{ops_id}/retry")
    assert accepted.status_code == 202 and accepted.get_json()["status"] == "pending"
    busy = client.post(f"/webhooks/deliveries/{ops_id}/retry")
    assert busy.status_code == 409 and busy.mimetype == "application/problem+json"
    run_deliveries(redis_client)

    hook = [r for r in receiver.received if r.path == "/hook"]
    assert len(hook) == 2 and {r.headers["webhook-id"] for r in hook} == {event["id"]}
    assert hook[0].body == hook[1].body
    assert record(redis_client, ops_id).status == DeliveryStatus.SUCCEEDED


def test_replay_requeues_dead_deliveries_since_a_time(
    client: FlaskClient,
    redis_client: redis.Redis,
    endpoints: list[WebhookEndpoint],
    receiver: WebhookReceiver,
) -> None:
    receiver.default = Reply(500)
    events = [publish(redis_client, endpoints)[0] for _ in range(2)]
    run_deliveries(redis_client)
    assert len(receiver.received) == 4
    receiver.default = Reply(200)

    since = (datetime.now(UTC) - timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    replayed = client.post("/webhooks/replay", json={"since": since, "endpoint": "ops"})
    assert replayed.status_code == 202 and replayed.get_json() == {"replayed": 2}
    run_deliveries(redis_client)

    again = [r for r in receiver.received[4:]]
    assert sorted(r.headers["webhook-id"] for r in again) == sorted(e["id"] for e in events)
    assert {r.path for r in again} == {"/hook"}
    future = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    assert client.post("/webhooks/replay", json={"since": future}).get_json() == {"replayed": 0}


def test_replay_validation_problem(client: FlaskClient) -> None:
    response = client.post("/webhooks/replay", json={"endpoint": "ops"})
    assert response.status_code == 422 and response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert problem["errors"] == [
        {"field": "since", "message": "an RFC 3339 timestamp is required", "code": "invalid"}
    ]
    assert problem["status"] == 422 and problem["title"] and problem["detail"]
    assert problem["type"] == "urn:ucwa-bridge:problem:validation-error"  # as for /messages
    for limit in ("0", "²", "١٢", "-1", "1e3"):
        response = client.get(f"/webhooks/deliveries?limit={limit}")
        assert response.status_code == 422, limit
        assert response.get_json()["errors"][0]["field"] == "limit"


def test_endpoints_show_disabled_reason_never_secrets_and_can_be_enabled(
    client: FlaskClient,
    redis_client: redis.Redis,
    endpoints: list[WebhookEndpoint],
    receiver: WebhookReceiver,
) -> None:
    receiver.script(Reply(410))
    publish(redis_client, [endpoints[0]])
    run_deliveries(redis_client)

    response = client.get("/webhooks/endpoints")
    assert SECRET not in response.get_data(as_text=True)
    assert "whsec_" not in response.get_data(as_text=True)
    ops = {e["id"]: e for e in response.get_json()["items"]}["ops"]
    assert ops["active"] is False and ops["disabled"]["reason"] == "410 Gone"

    enabled = client.post("/webhooks/endpoints/ops/enable").get_json()
    assert enabled["active"] is True and enabled["disabled"] is None
    publish(redis_client, [endpoints[0]])
    run_deliveries(redis_client)
    assert len(receiver.received) == 2
    assert client.post("/webhooks/endpoints/nope/enable").status_code == 404
