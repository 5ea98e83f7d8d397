"""The operator API over a real delivery log: listing, detail, retry, replay, endpoints."""

from __future__ import annotations

import json
import os
import string
from datetime import UTC, datetime, timedelta

import pytest
import redis
from flask import Flask, Response, request
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from bridge.api import create_app, models
from bridge.api.webhooks import blueprint, init_app
from bridge.config.embedded_redis import free_port
from bridge.config.settings import Settings
from bridge.observability.logging import redact
from bridge.webhooks.admin import WebhookAdmin, redact_url, scrub, url_secrets
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


# The published answer model of each operation (the OpenAPI document's schemas).
ANSWER_MODELS: dict[str, type[BaseModel]] = {
    "webhooks.list_deliveries": models.DeliveryPage,
    "webhooks.get_delivery": models.DeliveryDetail,
    "webhooks.retry_delivery": models.Delivery,
    "webhooks.replay": models.ReplayResult,
    "webhooks.list_endpoints": models.EndpointList,
    "webhooks.enable_endpoint": models.Endpoint,
}


def check_published_shape(response: Response) -> Response:
    """Every successful answer any test here gets is checked against its published model."""
    if 200 <= response.status_code < 300 and request.endpoint in ANSWER_MODELS:
        ANSWER_MODELS[request.endpoint].model_validate(response.get_json())
    return response


@pytest.fixture()
def client(redis_client: redis.Redis, endpoints: list[WebhookEndpoint]) -> FlaskClient:
    app = Flask(__name__)
    app.config["PROPAGATE_EXCEPTIONS"] = True
    init_app(app, WebhookAdmin(redis_client, WebhookSettings.from_env(os.environ), endpoints))
    app.register_blueprint(blueprint)
    app.after_request(check_published_shape)
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


# -- URL credentials: never shown, never logged ------------------------------------------------

PASSWORD = "pw-0f3a9c2b7d"
TOKEN = "tok-5e8d1c4a9b"


def credential_url(base: str) -> str:
    """``base`` (http://host:port/path) with a password and a token in the query."""
    scheme, _, rest = base.partition("://")
    return f"{scheme}://ops:{PASSWORD}@{rest}?channel=7&token={TOKEN}"


def admin_client(redis_client: redis.Redis, endpoints: list[WebhookEndpoint]) -> FlaskClient:
    app = Flask(__name__)
    init_app(app, WebhookAdmin(redis_client, WebhookSettings.from_env(os.environ), endpoints))
    app.register_blueprint(blueprint)
    return app.test_client()


def test_endpoint_urls_are_shown_without_credentials(
    redis_client: redis.Redis, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = credential_url(receiver.url())
    endpoints = configure(
        monkeypatch, {"id": "ops", "url": url, "secrets": [SECRET], "allow_private": True}
    )
    client = admin_client(redis_client, endpoints)

    for response in (
        client.get("/webhooks/endpoints"),
        client.post("/webhooks/endpoints/ops/enable"),
    ):
        text = response.get_data(as_text=True)
        assert PASSWORD not in text and TOKEN not in text and "ops:" not in text
    [shown] = client.get("/webhooks/endpoints").get_json()["items"]
    assert (
        shown["url"]
        == f"http://[REDACTED]@127.0.0.1:{receiver.port}/hook?channel=7&token=[REDACTED]"
    )


def test_attempt_errors_never_quote_url_credentials(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens: the error names the URL
    endpoints = configure(
        monkeypatch,
        {"id": "ops", "url": credential_url(closed), "secrets": [SECRET], "allow_private": True},
    )
    _, [delivery_id] = publish(redis_client, endpoints)
    run_deliveries(redis_client)
    client = admin_client(redis_client, endpoints)

    detail = client.get(f"/webhooks/deliveries/{delivery_id}")

    attempts = detail.get_json()["attempts"]
    assert attempts and all(a["error"].startswith("connection_error") for a in attempts)
    assert "token=[REDACTED]" in attempts[0]["error"]  # the URL is quoted, its token is not
    assert PASSWORD not in detail.get_data(as_text=True)
    assert TOKEN not in detail.get_data(as_text=True)
    listed = client.get("/webhooks/deliveries").get_data(as_text=True)
    assert PASSWORD not in listed and TOKEN not in listed


def test_url_credentials_are_known_to_the_log_redactor(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(
        monkeypatch,
        {"id": "ops", "url": credential_url("https://hooks.example.com/in"), "secrets": [SECRET]},
    )
    settings = Settings.from_env(
        "api", {"BRIDGE_REDIS_URL": redis_url, "BRIDGE_API_KEYS": "k" * 20}
    )
    create_app(settings, redis_client)

    line = redact(f"failed: sig {TOKEN} and password {PASSWORD} in the text")

    assert TOKEN not in line and PASSWORD not in line


SECRET_NAMES = ["token", "key", "secret", "sig", "password", "api_key", "access_token", "apikey"]
URL_VALUES = st.text(
    alphabet=string.ascii_letters + string.digits + "-._~", min_size=8, max_size=30
)


@given(
    user=URL_VALUES,
    password=URL_VALUES,
    name=st.sampled_from(SECRET_NAMES).map(lambda n: n.upper() if len(n) % 2 else n),
    value=URL_VALUES,
)
def test_redacted_urls_keep_everything_but_credentials(
    user: str, password: str, name: str, value: str
) -> None:
    url = f"https://{user}:{password}@hooks.example.com:8443/in/x?page=2&{name}={value}#top"

    shown = redact_url(url)

    assert user not in shown and password not in shown and value not in shown
    assert shown == f"https://[REDACTED]@hooks.example.com:8443/in/x?page=2&{name}=[REDACTED]#top"
    assert {password, value} <= url_secrets(url)
    error = f"HTTPSConnectionPool(host='hooks.example.com', port=8443): url: /in/x?{name}={value}"
    assert value not in (scrub(error) or "")


def test_plain_urls_and_look_alike_names_are_shown_as_they_are() -> None:
    for url in [
        "https://hooks.example.com/in",
        "http://10.0.0.1:8080/a?monkey=1&keyboard=2&tokens_left=3",
    ]:
        assert redact_url(url) == url
        assert url_secrets(url) == set()


@pytest.mark.parametrize(
    "cursor", ["1" + "0" * 400 + ".dlv_a", "١٢.dlv_a", "1_0.dlv_a", "-1.dlv_a", "12.dlv_a b"]
)
def test_a_cursor_this_api_never_returned_is_422_not_a_storage_error(
    client: FlaskClient, cursor: str
) -> None:
    response = client.get("/webhooks/deliveries", query_string={"cursor": cursor})

    assert response.status_code == 422
    assert response.get_json()["errors"][0]["field"] == "cursor"


def test_detail_shows_the_payload_that_was_signed_and_sent(
    client: FlaskClient,
    redis_client: redis.Redis,
    endpoints: list[WebhookEndpoint],
    receiver: WebhookReceiver,
) -> None:
    event, [ops_id, _] = publish(redis_client, endpoints)
    run_deliveries(redis_client)
    detail = client.get(f"/webhooks/deliveries/{ops_id}").get_json()
    [sent] = [r for r in receiver.received if r.path == "/hook"]
    assert detail["payload"] == json.loads(sent.body)
    assert detail["payload"]["id"] == event["id"]


def test_endpoints_show_the_effective_allow_private(
    redis_client: redis.Redis, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = WebhookEndpoint("own", receiver.url(), [SECRET], allow_private=True)
    inherits = WebhookEndpoint("inherits", receiver.url("/x"), [SECRET])
    for global_flag, expected in (
        ("false", {"own": True, "inherits": False}),
        ("true", {"own": True, "inherits": True}),
    ):
        monkeypatch.setenv("BRIDGE_WEBHOOK_ALLOW_PRIVATE", global_flag)
        items = (
            admin_client(redis_client, [own, inherits])
            .get("/webhooks/endpoints")
            .get_json()["items"]
        )
        assert {e["id"]: e["allow_private"] for e in items} == expected
