"""POST /messages and GET /messages/<id> through the Flask test client against real Redis."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from rq import Queue
from rq.job import Job
from werkzeug.exceptions import abort

from bridge.api import create_app
from bridge.config.embedded_redis import free_port
from bridge.config.settings import Settings
from bridge.outbound.messages import MessageError, MessageStatus, MessageStore, UcwaFault
from tests.api.conftest import bearer

PROBLEM = "application/problem+json"
VALIDATION = "urn:ucwa-bridge:problem:validation-error"


def post(client: FlaskClient, body: Any, **headers: str) -> Any:
    return client.post("/messages", json=body, headers={**bearer(), **headers})


def fields_of(response: Any) -> dict[str, str]:
    return {error["field"]: error["code"] for error in response.get_json()["errors"]}


def test_accepts_message_and_stores_record_and_job(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    response = post(
        client,
        {"to": "sip:alice@contoso.com", "text": "disk full", "subject": "ops", "validity": 60},
    )

    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "queued"
    assert body["id"].startswith("msg_") and len(body["id"]) <= 50
    assert response.headers["Location"] == f"/messages/{body['id']}"
    assert body["to"] == "sip:alice@contoso.com"
    assert body["text"] == "disk full"
    assert body["subject"] == "ops"
    assert body["importance"] == "Normal"
    assert body["validity"] == 60
    assert body["history"] == {"queued": body["created_at"]}
    assert body["attempts"] == 0 and body["error"] is None
    for internal in ("step", "sequence", "invitation_href", "message_href", "conversation_href"):
        assert internal not in body

    stored = MessageStore(redis_client).get(body["id"])
    assert stored.status is MessageStatus.QUEUED
    assert stored.sequence == 1

    job = Job.fetch(f"send-{body['id']}", connection=redis_client)
    assert job.func_name == "workers.send.send_message"
    assert job.args == (body["id"],)
    assert job.kwargs == {}
    assert job.origin == "send"
    assert job.result_ttl is not None and job.failure_ttl is not None
    assert job.retries_left is None
    assert Queue("send", connection=redis_client).job_ids == [f"send-{body['id']}"]


def test_default_validity_and_urgent_html(client: FlaskClient, settings: Settings) -> None:
    response = post(
        client, {"to": "sip:bob@contoso.com", "html": "<b>x</b>", "importance": "Urgent"}
    )

    assert response.status_code == 202
    body = response.get_json()
    assert body["validity"] == settings.default_validity_s
    assert body["html"] == "<b>x</b>" and "text" not in body
    assert body["importance"] == "Urgent"


def test_reply_into_conversation_is_stored(client: FlaskClient, redis_client: redis.Redis) -> None:
    conv = "conv_" + "42" * 12
    response = post(client, {"conversation": conv, "text": "ack"})

    assert response.status_code == 202
    body = response.get_json()
    assert body["conversation"] == conv and body["to"] is None
    # a conversation the registry does not know keeps a line of its own
    assert redis_client.lrange(f"rcpt:conv:{conv}:fifo", 0, -1) == [body["id"].encode()]


@pytest.mark.parametrize(
    "conversation",
    ["active", "href:x", "remote:sip:a@b.com", "conv_" + "0" * 23, "CONV_" + "a" * 24],
)
def test_a_conversation_id_the_bridge_never_issues_is_refused(
    client: FlaskClient, redis_client: redis.Redis, conversation: str
) -> None:
    response = post(client, {"conversation": conversation, "text": "x"})

    assert response.status_code == 422
    [error] = response.get_json()["errors"]
    assert error["field"] == "conversation"
    assert redis_client.keys("msg:*") == []


def test_get_returns_status_history_attempts_and_error(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    message_id = post(client, {"to": "sip:alice@contoso.com", "text": "hi"}).get_json()["id"]
    store = MessageStore(redis_client)
    store.transition(message_id, MessageStatus.SENDING, attempts=1, step="invited")
    store.transition(
        message_id,
        MessageStatus.FAILED,
        error=MessageError("declined", "recipient declined", UcwaFault("Forbidden", "Declined")),
    )

    response = client.get(f"/messages/{message_id}", headers=bearer())

    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "failed"
    assert list(body["history"]) == ["queued", "sending", "failed"]
    assert body["attempts"] == 1
    assert body["error"] == {
        "code": "declined",
        "message": "recipient declined",
        "ucwa": {
            "code": "Forbidden",
            "subcode": "Declined",
            "message": None,
            "diagnostics": None,
        },
    }
    assert "step" not in body


@pytest.mark.parametrize("message_id", ["msg_" + "0" * 32, "nope", "msg_..%25"])
def test_unknown_message_is_404_problem(client: FlaskClient, message_id: str) -> None:
    response = client.get(f"/messages/{message_id}", headers=bearer())

    assert response.status_code == 404
    assert response.mimetype == PROBLEM
    assert response.get_json()["type"] == "urn:ucwa-bridge:problem:message-not-found"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"to": "alice@contoso.com", "text": "x"}, {"to": "invalid_sip_uri"}),
        ({"to": "sip:alice", "text": "x"}, {"to": "invalid_sip_uri"}),
        ({"to": "sip:a@b.com", "text": ""}, {"text": "blank"}),
        ({"to": "sip:a@b.com", "text": " \n\t "}, {"text": "blank"}),
        ({"to": "sip:a@b.com", "html": "   "}, {"html": "blank"}),
        ({"to": "sip:a@b.com", "text": "x", "html": "y"}, {"html": "conflict"}),
        ({"to": "sip:a@b.com"}, {"text": "missing"}),
        ({"text": "x"}, {"to": "missing"}),
        (
            {"to": "sip:a@b.com", "conversation": "conv_" + "c1" * 12, "text": "x"},
            {"conversation": "conflict"},
        ),
        ({"to": "sip:a@b.com", "text": "x", "cc": "sip:b@b.com"}, {"cc": "unknown_field"}),
        ({"to": "sip:a@b.com", "text": 5}, {"text": "string_type"}),
        ({"to": ["sip:a@b.com"], "text": "x"}, {"to": "string_type"}),
        ({"to": "sip:a@b.com", "text": "x", "validity": "60"}, {"validity": "int_type"}),
        ({"to": "sip:a@b.com", "text": "x", "validity": 1.5}, {"validity": "int_type"}),
        ({"to": "sip:a@b.com", "text": "x", "validity": True}, {"validity": "int_type"}),
        ({"to": "sip:a@b.com", "text": "x", "validity": 0}, {"validity": "greater_than"}),
        ({"to": "sip:a@b.com", "text": "x", "validity": 10**9}, {"validity": "less_than_equal"}),
        ({"to": "sip:a@b.com", "text": "x", "importance": "High"}, {"importance": "literal_error"}),
        ({"to": "sip:a@b.com", "text": "x", "subject": "s" * 251}, {"subject": "string_too_long"}),
        ({"to": "sip:" + "a" * 241 + "@b.com", "text": "x"}, {"to": "string_too_long"}),
        ({"conversation": "bad id!", "text": "x"}, {"conversation": "invalid_conversation_id"}),
        ([{"to": "sip:a@b.com"}], {"body": "type"}),
    ],
)
def test_validation_errors_name_each_field(
    client: FlaskClient, redis_client: redis.Redis, body: Any, expected: dict[str, str]
) -> None:
    response = post(client, body)

    assert response.status_code == 422
    assert response.mimetype == PROBLEM
    problem = response.get_json()
    assert problem["type"] == VALIDATION
    assert problem["status"] == 422
    assert problem["title"] and problem["detail"]
    assert fields_of(response) == expected
    assert redis_client.keys("msg:*") == []


def test_several_bad_fields_are_all_reported(client: FlaskClient) -> None:
    response = post(client, {"to": "nobody", "text": " ", "extra": 1, "validity": -1})

    assert response.status_code == 422
    assert set(fields_of(response)) == {"to", "text", "extra", "validity"}


def test_message_over_field_limit_is_413_naming_the_field(client: FlaskClient) -> None:
    response = post(client, {"to": "sip:a@b.com", "text": "x" * 1001})

    assert response.status_code == 413
    assert response.mimetype == PROBLEM
    assert fields_of(response) == {"text": "too_long"}


def test_body_over_limit_is_413(client: FlaskClient, redis_client: redis.Redis) -> None:
    raw = json.dumps({"to": "sip:a@b.com", "text": "x" * 900, "subject": "y" * 4000})
    response = client.post("/messages", data=raw, content_type="application/json", headers=bearer())

    assert response.status_code == 413
    assert response.get_json()["type"] == "urn:ucwa-bridge:problem:payload-too-large"
    assert redis_client.keys("msg:*") == []


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_415(client: FlaskClient, content_type: str | None) -> None:
    response = client.post(
        "/messages",
        data='{"to": "sip:a@b.com", "text": "x"}',
        content_type=content_type,
        headers=bearer(),
    )

    assert response.status_code == 415
    assert response.mimetype == PROBLEM
    assert response.headers["Accept-Post"] == "application/json"


@pytest.mark.parametrize("raw", [b"{", b"", b'{"to": NaN}', b"\xff\xfe{}", b'{"a":1}x'])
def test_malformed_json_is_400(client: FlaskClient, raw: bytes) -> None:
    response = client.post("/messages", data=raw, content_type="application/json", headers=bearer())

    assert response.status_code == 400
    assert response.mimetype == PROBLEM
    assert response.get_json()["type"] == "urn:ucwa-bridge:problem:malformed-json"


def test_wrong_method_is_405_with_allow(client: FlaskClient) -> None:
    response = client.delete("/messages", headers=bearer())

    assert response.status_code == 405
    assert response.mimetype == PROBLEM
    assert "POST" in response.headers["Allow"]


def test_unknown_route_is_404_problem(client: FlaskClient) -> None:
    response = client.get("/nowhere")

    assert response.status_code == 404
    assert response.mimetype == PROBLEM
    assert response.get_json()["type"] == "urn:ucwa-bridge:problem:not-found"


def test_unreachable_redis_is_503_problem_without_internals(settings: Settings) -> None:
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.5)
    client = create_app(settings, dead).test_client()

    response = post(client, {"to": "sip:a@b.com", "text": "x"})

    assert response.status_code == 503
    assert response.mimetype == PROBLEM
    assert "Traceback" not in response.get_data(as_text=True)
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["reasons"][0].startswith("redis:")


def test_unexpected_error_is_500_problem_without_trace(app: Flask) -> None:
    def boom() -> str:
        raise RuntimeError("secret internals")

    app.add_url_rule("/boom", "boom", boom)

    response = app.test_client().get("/boom")

    assert response.status_code == 500
    assert response.mimetype == PROBLEM
    assert "secret internals" not in response.get_data(as_text=True)


def test_probes(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json() == {"status": "ready"}


def test_other_protocol_errors_are_problems(app: Flask) -> None:
    def teapot() -> str:
        abort(418)

    app.add_url_rule("/teapot", "teapot", teapot)

    response = app.test_client().get("/teapot")

    assert response.status_code == 418
    assert response.mimetype == PROBLEM
    assert response.get_json()["type"] == "urn:ucwa-bridge:problem:http-error"


def test_the_longest_accepted_recipient_is_one_ucwa_accepts(client: FlaskClient) -> None:
    """What the API accepts, the simulator's startMessaging accepts too (else: accepted, then
    failed); both hold UCWA's documented longest contact URI."""
    from ucwasim.im_api import MAX_TO_CHARS

    longest = "sip:" + "a" * (MAX_TO_CHARS - len("sip:@b.com")) + "@b.com"
    assert post(client, {"to": longest, "text": "x"}).status_code == 202
    assert post(client, {"to": longest[:4] + "a" + longest[4:], "text": "x"}).status_code == 422
