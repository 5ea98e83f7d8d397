"""``POST /messages/{id}/cancel``: 200 with the record (again when repeated), 404, 409 with the
message's status once it is with UCWA or final, the send scope, and the optional reason."""

from __future__ import annotations

from dataclasses import replace

import pytest
import redis
from flask.testing import FlaskClient

from bridge.outbound.messages import MessageStatus, MessageStore, record_key
from tests.api.conftest import READ_ONLY_KEY, SEND_ONLY_KEY, bearer


def accept(client: FlaskClient, text: str = "hi") -> str:
    response = client.post(
        "/messages", json={"to": "sip:alice@contoso.com", "text": text}, headers=bearer()
    )
    assert response.status_code == 202
    return str(response.get_json()["id"])


def test_a_queued_message_is_cancelled_and_shows_why(client: FlaskClient) -> None:
    message_id = accept(client)

    response = client.post(f"/messages/{message_id}/cancel", headers=bearer(SEND_ONLY_KEY))

    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "cancelled"
    assert body["error"] == {
        "code": "cancelled_by_caller",
        "message": "cancelled by the caller",
        "ucwa": None,
    }
    assert list(body["history"]) == ["queued", "cancelled"]
    assert client.get(f"/messages/{message_id}", headers=bearer()).get_json() == body


def test_the_caller_may_give_a_reason(client: FlaskClient) -> None:
    message_id = accept(client)

    response = client.post(
        f"/messages/{message_id}/cancel",
        json={"reason": "sent to the wrong person"},
        headers=bearer(),
    )

    assert response.status_code == 200
    assert response.get_json()["error"]["message"] == "sent to the wrong person"


def test_cancelling_twice_answers_the_same_record(client: FlaskClient) -> None:
    message_id = accept(client)
    first = client.post(f"/messages/{message_id}/cancel", headers=bearer())

    again = client.post(f"/messages/{message_id}/cancel", json={"reason": "x"}, headers=bearer())

    assert again.status_code == 200
    assert again.get_json() == first.get_json()


@pytest.mark.parametrize(
    ("status", "step"),
    [
        (MessageStatus.SENDING, "posting_cold"),
        (MessageStatus.SENDING, "invited"),
        (MessageStatus.DELIVERED, "posted"),
        (MessageStatus.FAILED, "queued"),
        (MessageStatus.EXPIRED, "queued"),
    ],
)
def test_a_message_with_ucwa_or_final_answers_409_with_its_status(
    client: FlaskClient, redis_client: redis.Redis, status: MessageStatus, step: str
) -> None:
    message_id = accept(client)
    record = replace(MessageStore(redis_client).get(message_id), status=status, step=step)
    redis_client.set(record_key(message_id), record.to_json())

    response = client.post(f"/messages/{message_id}/cancel", headers=bearer())

    assert response.status_code == 409
    assert response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert problem["type"] == "urn:ucwa-bridge:problem:message-not-cancellable"
    assert problem["message_status"] == status.value
    assert status.value in problem["detail"]
    assert MessageStore(redis_client).get(message_id) == record


@pytest.mark.parametrize("message_id", ["msg_" + "0" * 32, "nope", "msg_XYZ"])
def test_an_unknown_message_is_404(client: FlaskClient, message_id: str) -> None:
    response = client.post(f"/messages/{message_id}/cancel", headers=bearer())

    assert response.status_code == 404
    assert response.get_json()["type"] == "urn:ucwa-bridge:problem:message-not-found"


def test_cancelling_needs_the_send_scope(client: FlaskClient) -> None:
    message_id = accept(client)

    assert client.post(f"/messages/{message_id}/cancel").status_code == 401
    refused = client.post(f"/messages/{message_id}/cancel", headers=bearer(READ_ONLY_KEY))
    assert refused.status_code == 403
    assert client.get(f"/messages/{message_id}", headers=bearer()).get_json()["status"] == "queued"


@pytest.mark.parametrize(
    ("body", "field"),
    [({"reason": ""}, "reason"), ({"reason": 3}, "reason"), ({"why": "x"}, "why"), ([], "body")],
)
def test_a_bad_body_is_422_naming_the_field(client: FlaskClient, body: object, field: str) -> None:
    message_id = accept(client)

    response = client.post(f"/messages/{message_id}/cancel", json=body, headers=bearer())

    assert response.status_code == 422
    assert [e["field"] for e in response.get_json()["errors"]] == [field]
    assert client.get(f"/messages/{message_id}", headers=bearer()).get_json()["status"] == "queued"


def test_a_body_that_is_not_json_is_415(client: FlaskClient) -> None:
    message_id = accept(client)

    response = client.post(
        f"/messages/{message_id}/cancel",
        data="stop",
        headers={**bearer(), "Content-Type": "text/plain"},
    )

    assert response.status_code == 415


def test_the_operation_is_documented(client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    operation = document["paths"]["/messages/{message_id}/cancel"]["post"]

    assert operation["operationId"] == "cancelMessage"
    assert operation["tags"] == ["messages"]
    assert {"200", "404", "409"} <= set(operation["responses"])
    statuses = document["components"]["schemas"]["Message"]["properties"]["status"]["enum"]
    assert "cancelled" in statuses
    assert "message.cancelled" in document["webhooks"]
