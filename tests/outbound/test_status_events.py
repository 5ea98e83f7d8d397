"""Status events for final outbound messages: payloads, and staging through the on_final hook."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest
import redis
from rq import Queue

from bridge.outbound.messages import MessageError, MessageRecord, MessageStatus, UcwaFault
from bridge.outbound.status_events import status_event, status_hook
from bridge.session.conversations import conversation_id
from bridge.webhooks.endpoints import WebhookEndpoint
from bridge.webhooks.jobs import QUEUE_NAME
from bridge.webhooks.log import Keys

NOW = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123").decode()
ACCOUNT = "toshm@contoso.com"
CONV_HREF = (
    "https://lyncweb.contoso.com/ucwa/oauth/v1/applications/103/communication/conversations/9"
)


def record(status: MessageStatus, **fields: object) -> MessageRecord:
    base = MessageRecord.new(
        to="sip:lenea@contoso.com", text="hello", validity_s=300, message_id="msg_1", now=0.0
    )
    history = {**base.history, "sending": "1970-01-01T00:00:01.000Z"}
    if status.is_terminal:
        history[status.value] = "1970-01-01T00:00:02.000Z"
    return replace(base, status=status, history=history, attempts=1, **fields)  # type: ignore[arg-type]


def test_delivered_payload() -> None:
    event = status_event(record(MessageStatus.DELIVERED), NOW)
    assert event is not None
    assert event["type"] == "message.delivered"
    assert event["timestamp"] == "2024-05-06T07:08:09.123Z"
    assert event["data"] == {
        "message_id": "msg_1",
        "status": "delivered",
        "to": "sip:lenea@contoso.com",
        "conversation": None,
        "error": None,
        "history": {
            "queued": "1970-01-01T00:00:00.000Z",
            "sending": "1970-01-01T00:00:01.000Z",
            "delivered": "1970-01-01T00:00:02.000Z",
        },
        "attempts": 1,
        "account": "default",
    }


def test_failed_payload_carries_the_ucwa_error() -> None:
    error = MessageError(
        "recipient_offline",
        "The person is offline",
        UcwaFault("Forbidden", "TemporarilyUnavailable", "User is offline"),
    )
    event = status_event(record(MessageStatus.FAILED, error=error), NOW)
    assert event is not None and event["type"] == "message.failed"
    assert event["data"]["error"] == {
        "code": "recipient_offline",
        "message": "The person is offline",
        "ucwa": {
            "code": "Forbidden",
            "subcode": "TemporarilyUnavailable",
            "message": "User is offline",
            "diagnostics": None,
        },
    }
    json.dumps(event)  # the envelope must serialise as is


def test_expired_payload_and_stable_ids() -> None:
    error = MessageError("expired", "validity elapsed before delivery")
    first = status_event(record(MessageStatus.EXPIRED, error=error), NOW)
    second = status_event(record(MessageStatus.EXPIRED, error=error), NOW)
    assert first is not None and second is not None
    assert first["type"] == "message.expired"
    assert first["data"]["error"] == {
        "code": "expired",
        "message": "validity elapsed before delivery",
        "ucwa": None,
    }
    assert first["id"] == second["id"]
    delivered = status_event(record(MessageStatus.DELIVERED), NOW)
    assert delivered is not None and delivered["id"] != first["id"]


@pytest.mark.parametrize("status", [MessageStatus.QUEUED, MessageStatus.SENDING])
def test_no_event_before_the_end(status: MessageStatus) -> None:
    assert status_event(record(status), NOW) is None


def test_conversation_of_a_send_by_address_with_the_account() -> None:
    rec = record(MessageStatus.DELIVERED, conversation_href=CONV_HREF)
    assert status_event(rec, NOW)["data"]["conversation"] is None  # type: ignore[index]
    with_account = status_event(rec, NOW, ACCOUNT)
    assert with_account is not None
    assert with_account["data"]["conversation"] == conversation_id(ACCOUNT, CONV_HREF)


def test_hook_stages_on_the_callers_transaction(redis_client: redis.Redis) -> None:
    endpoints = [
        WebhookEndpoint("all", "https://a.example/hook", [SECRET]),
        WebhookEndpoint(
            "received", "https://b.example/hook", [SECRET], frozenset({"message.received"})
        ),
    ]
    on_final = status_hook(endpoints, clock=lambda: NOW)
    with redis_client.pipeline() as pipe:
        on_final(pipe, record(MessageStatus.SENDING))  # not final: nothing
        on_final(pipe, record(MessageStatus.DELIVERED))
        pipe.reset()  # discarded: nothing
    assert redis_client.keys("*") == []

    with redis_client.pipeline() as pipe:
        on_final(pipe, record(MessageStatus.DELIVERED))
        pipe.execute()
    queue = Queue(QUEUE_NAME, connection=redis_client)
    assert queue.count == 1  # only the endpoint that wants message.delivered
    assert redis_client.zcard(Keys.by_type("message.delivered")) == 1
    [body_key] = redis_client.keys(Keys.event("*"))
    body = json.loads(redis_client.get(body_key) or b"{}")
    assert body["type"] == "message.delivered" and body["data"]["message_id"] == "msg_1"
