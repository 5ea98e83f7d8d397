"""POST /messages with send_at: scheduled until then, validity from then, cancellable,
listed by status; a time too far ahead, in the past or not RFC 3339 is a problem naming it."""

from __future__ import annotations

import time

import pytest
from flask.testing import FlaskClient

from bridge.api.schemas import parse_rfc3339
from bridge.outbound.messages import format_time
from tests.api.conftest import bearer, get_ok

ALICE = "sip:alice@contoso.com"


def post(client: FlaskClient, **body: object) -> tuple[int, dict[str, object]]:
    answer = client.post("/messages", json={"to": ALICE, "text": "hi", **body}, headers=bearer())
    return answer.status_code, answer.get_json()


def test_a_message_with_send_at_is_scheduled_and_valid_from_then(client: FlaskClient) -> None:
    send_at = format_time(time.time() + 3600)
    status, body = post(client, send_at=send_at, validity=120)

    assert status == 202, body
    assert body["status"] == "scheduled" and body["send_at"] == send_at
    assert parse_rfc3339(str(body["expires_at"])) == pytest.approx(parse_rfc3339(send_at) + 120)
    assert list(body["history"]) == ["scheduled"]  # type: ignore[call-overload]
    assert get_ok(client, f"/messages/{body['id']}") == body
    listed = get_ok(client, "/messages?status=scheduled")["items"]
    assert [m["id"] for m in listed] == [body["id"]]


def test_a_scheduled_message_is_cancelled(client: FlaskClient) -> None:
    _, body = post(client, send_at=format_time(time.time() + 600))
    answer = client.post(f"/messages/{body['id']}/cancel", headers=bearer())
    assert answer.status_code == 200
    assert answer.get_json()["status"] == "cancelled"
    assert list(answer.get_json()["history"]) == ["scheduled", "cancelled"]


def test_any_offset_names_the_same_moment(client: FlaskClient) -> None:
    moment = time.time() + 7200
    local = time.strftime("%Y-%m-%dT%H:%M:%S+02:00", time.gmtime(moment + 7200))
    _, body = post(client, send_at=local)
    assert body["status"] == "scheduled"
    assert parse_rfc3339(str(body["send_at"])) == pytest.approx(int(moment), abs=1)


@pytest.mark.parametrize(
    ("send_at", "code"),
    [
        (lambda: format_time(time.time() - 3600), "in_the_past"),
        (lambda: format_time(time.time() + 7 * 86_400 + 60), "too_far_ahead"),
        (lambda: "2026-05-01 12:00:00", "invalid_date_time"),
        (lambda: "2026-05-01T12:00:00", "invalid_date_time"),
        (lambda: "tomorrow", "invalid_date_time"),
        (lambda: 1767225600, "string_type"),
    ],
    ids=["past", "too-far", "space", "no-offset", "words", "number"],
)
def test_a_bad_send_at_is_a_problem_naming_it(
    client: FlaskClient, send_at: object, code: str
) -> None:
    status, body = post(client, send_at=send_at())  # type: ignore[operator]
    assert status == 422, body
    assert [(e["field"], e["code"]) for e in body["errors"]] == [("send_at", code)]  # type: ignore[union-attr, index]
