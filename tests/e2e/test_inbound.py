"""Inbound IMs and status events to signed webhooks, end to end, with a real HTTP receiver."""

from __future__ import annotations

import base64
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from standardwebhooks import Webhook

from tests.e2e.conftest import BOT, Bridge, wait_for
from tests.webhooks.receiver import WebhookReceiver

ALICE = "sip:alice@contoso.com"
BOB = "sip:bob@contoso.com"
SECRET = "whsec_" + base64.b64encode(b"e2e-webhook-secret-0123456789ab").decode()

MakeBridge = Callable[..., Bridge]


@pytest.fixture()
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


def webhook_env(receiver: WebhookReceiver, **extra: str) -> dict[str, str]:
    return {
        "BRIDGE_WEBHOOK_URL": receiver.url(),
        "BRIDGE_WEBHOOK_SECRET": SECRET,
        "BRIDGE_WEBHOOK_ALLOW_PRIVATE": "true",
        "BRIDGE_WEBHOOK_SCHEDULE_S": "0,1,1,1,1",
        **extra,
    }


def events(receiver: WebhookReceiver, kind: str | None = None) -> list[dict[str, Any]]:
    """Verified event bodies, one per webhook-id (retries of one event count once)."""
    seen: dict[str, dict[str, Any]] = {}
    for request in receiver.received:
        if not 200 <= _status_for(receiver, request) < 300:
            continue
        body = Webhook(SECRET).verify(request.body, request.headers)
        seen.setdefault(request.headers["webhook-id"], body)
    found = list(seen.values())
    return [e for e in found if kind is None or e["type"] == kind]


def _status_for(receiver: WebhookReceiver, request: Any) -> int:
    return int(getattr(request, "status", 200))


def sim_says(bridge: Bridge, sip: str, **body: str) -> None:
    bridge.sim_call("POST", f"/_sim/users/{sip}/messages", {"to": BOT, **body})


def test_inbound_im_arrives_signed_once_and_the_reply_goes_back(
    make_bridge: MakeBridge, receiver: WebhookReceiver
) -> None:
    bridge = make_bridge(env=webhook_env(receiver))
    sim_says(bridge, ALICE, text="Is the build green?")
    wait_for(
        lambda: len(events(receiver, "message.received")) >= 1,
        15,
        "the first inbound event",
        bridge.logs,
    )
    sim_says(bridge, ALICE, text="Second question")
    wait_for(
        lambda: len(events(receiver, "message.received")) >= 2,
        15,
        "the second inbound event",
        bridge.logs,
    )
    received = events(receiver, "message.received")
    assert [e["data"]["text"] for e in received] == ["Is the build green?", "Second question"]
    first = received[0]["data"]
    assert first["from"]["uri"] == ALICE
    assert first["html"] is None
    conversation = first["conversation"]
    assert conversation == received[1]["data"]["conversation"]

    reply = bridge.post({"conversation": conversation, "text": "Yes, all green"})
    assert reply.status_code == 202, reply.text
    message_id = reply.json()["id"]
    assert bridge.wait_final(message_id)[message_id]["status"] == "delivered"
    assert [m["text"] for m in bridge.inbox(ALICE)] == ["Yes, all green"]
    wait_for(
        lambda: any(
            e["data"]["message_id"] == message_id for e in events(receiver, "message.delivered")
        ),
        15,
        "the delivered status event",
        bridge.logs,
    )
    # the documented duplicate of the first message was dropped: still exactly two
    assert len(events(receiver, "message.received")) == 2


def test_failed_send_produces_a_failed_event(
    make_bridge: MakeBridge, receiver: WebhookReceiver
) -> None:
    bridge = make_bridge(env=webhook_env(receiver))
    message_id = bridge.send("sip:decliner@contoso.com", "hello?")
    assert bridge.wait_final(message_id)[message_id]["status"] == "failed"
    wait_for(lambda: len(events(receiver, "message.failed")) == 1, 15, "the failed event")
    data = events(receiver, "message.failed")[0]["data"]
    assert data["message_id"] == message_id
    assert data["error"]["code"] == "declined"


def test_html_is_sanitised(make_bridge: MakeBridge, receiver: WebhookReceiver) -> None:
    bridge = make_bridge(env=webhook_env(receiver))
    sim_says(
        bridge,
        ALICE,
        html='<b>Hi</b><script>alert(1)</script><a href="javascript:x()" onclick="y()">l</a>',
    )
    wait_for(
        lambda: len(events(receiver, "message.received")) >= 1, 15, "the html event", bridge.logs
    )
    data = events(receiver, "message.received")[0]["data"]
    assert "<b>Hi</b>" in data["html"]
    assert "script" not in data["html"] and "javascript" not in data["html"]
    assert "onclick" not in data["html"]
    assert data["text"].startswith("Hi")


def test_messages_typed_before_the_bot_answers_arrive_once_each_in_order(
    make_bridge: MakeBridge, receiver: WebhookReceiver
) -> None:
    bridge = make_bridge(env=webhook_env(receiver))
    for text in ("first", "second", "third"):
        sim_says(bridge, ALICE, text=text)  # back to back: the invitation is still ringing
    wait_for(
        lambda: len(events(receiver, "message.received")) >= 3, 15, "three events", bridge.logs
    )
    time.sleep(1)  # anything repeated would have arrived by now
    received = events(receiver, "message.received")
    assert [e["data"]["text"] for e in received] == ["first", "second", "third"]
    assert len({e["data"]["conversation"] for e in received}) == 1
    sent = bridge.sim_call("GET", f"/_sim/users/{ALICE}/sent")
    assert [s["status"] for s in sent] == ["delivered"] * 3


def test_poller_killed_between_events_loses_and_repeats_nothing(
    make_bridge: MakeBridge, receiver: WebhookReceiver
) -> None:
    bridge = make_bridge(env=webhook_env(receiver))
    active = bridge.procs["poller"][0]
    bridge.start_poller(wait=False)  # the standby
    sim_says(bridge, ALICE, text="before the crash")
    wait_for(lambda: len(events(receiver, "message.received")) >= 1, 15, "event 1", bridge.logs)

    active.send_signal(signal.SIGKILL)
    active.wait(timeout=5)
    sim_says(bridge, ALICE, text="during the failover")
    wait_for(lambda: len(events(receiver, "message.received")) >= 2, 30, "event 2", bridge.logs)
    sim_says(bridge, BOB, text="after the failover")
    wait_for(lambda: len(events(receiver, "message.received")) >= 3, 15, "event 3", bridge.logs)
    time.sleep(1)
    texts = [e["data"]["text"] for e in events(receiver, "message.received")]
    assert texts == ["before the crash", "during the failover", "after the failover"]
