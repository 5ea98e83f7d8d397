"""Inbound IMs and status events to signed webhooks, end to end, with a real HTTP receiver."""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime

from standardwebhooks import Webhook

from tests.e2e.conftest import (
    ALICE,
    BOB,
    BOT,
    SECRET,
    Bridge,
    MakeBridge,
    events,
    wait_for,
    webhook_env,
)
from tests.webhooks.receiver import Reply, WebhookReceiver


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
    assert bridge.texts(ALICE) == ["Yes, all green"]
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


def test_receiver_down_for_a_while_then_up_gets_every_event_once(
    make_bridge: MakeBridge,
) -> None:
    first = WebhookReceiver().__enter__()
    port = first.port
    first.__exit__(None, None, None)  # the receiver is down: connections are refused
    bridge = make_bridge(
        env={
            "BRIDGE_WEBHOOK_URL": f"http://127.0.0.1:{port}/hook",
            "BRIDGE_WEBHOOK_SECRET": SECRET,
            "BRIDGE_WEBHOOK_ALLOW_PRIVATE": "true",
            "BRIDGE_WEBHOOK_SCHEDULE_S": "0,1,2,2,2,2,2",
        }
    )
    for text in ("one", "two"):
        sim_says(bridge, ALICE, text=text)
    sent = bridge.send(BOB, "status event too")
    assert bridge.wait_final(sent)[sent]["status"] == "delivered"
    wait_for(
        lambda: _attempted_deliveries(bridge) >= 3, 15, "failed attempts while down", bridge.logs
    )
    with WebhookReceiver(port=port) as receiver:
        wait_for(lambda: len(events(receiver)) >= 3, 30, "every event after the receiver is up")
        time.sleep(1)
        received = events(receiver)
        assert sorted(e["type"] for e in received) == [
            "message.delivered",
            "message.received",
            "message.received",
        ]
        ids = [r.headers["webhook-id"] for r in receiver.received if r.status == 200]
        assert len(ids) == len(set(ids)) == 3  # each once: nothing sent twice after success
    items = bridge.api_get("/webhooks/deliveries?limit=10")["items"]
    assert {i["status"] for i in items} == {"succeeded"}
    detail = bridge.api_get(f"/webhooks/deliveries/{items[0]['id']}")
    assert detail["attempts"][0]["error"] and detail["attempts"][-1]["status_code"] == 200


def _attempted_deliveries(bridge: Bridge) -> int:
    items = bridge.api_get("/webhooks/deliveries?limit=10")["items"]
    return sum(1 for i in items if i["status"] == "failed")


def test_500_429_and_slow_answers_are_retried_with_the_same_webhook_id(
    make_bridge: MakeBridge, receiver: WebhookReceiver
) -> None:
    receiver.script(
        Reply(500),
        Reply(429, headers={"Retry-After": "2"}),
        Reply(200, delay_s=3),  # slower than the 1 s timeout
    )
    bridge = make_bridge(
        env=webhook_env(
            receiver, BRIDGE_WEBHOOK_TIMEOUT_S="1", BRIDGE_WEBHOOK_SCHEDULE_S="0,0.5,0.5,0.5,0.5"
        )
    )
    sim_says(bridge, ALICE, text="are you there?")
    wait_for(lambda: len(receiver.received) >= 4, 30, "four tries", bridge.logs)
    time.sleep(1)
    tries = receiver.received
    assert len(tries) == 4, [t.status for t in tries]
    assert len({t.headers["webhook-id"] for t in tries}) == 1
    assert len({t.body for t in tries}) == 1  # the same event, byte for byte
    for attempt in tries:
        assert Webhook(SECRET).verify(attempt.body, attempt.headers)["data"]["text"] == (
            "are you there?"
        )
    assert tries[2].at - tries[1].at >= 1.9  # Retry-After honoured over the 0.5 s schedule
    (item,) = bridge.api_get("/webhooks/deliveries?type=message.received")["items"]
    detail = bridge.api_get(f"/webhooks/deliveries/{item['id']}")
    assert detail["status"] == "succeeded"
    assert [a["status_code"] for a in detail["attempts"]] == [500, 429, None, 200]
    assert "timed out" in detail["attempts"][2]["error"].lower()


def test_410_disables_the_endpoint_and_the_replay_api_delivers_what_was_dead_lettered(
    make_bridge: MakeBridge, receiver: WebhookReceiver
) -> None:
    receiver.script(Reply(410))
    bridge = make_bridge(env=webhook_env(receiver))
    since = datetime.now(UTC).isoformat()
    sim_says(bridge, ALICE, text="gone?")
    wait_for(lambda: len(receiver.received) >= 1, 15, "the 410", bridge.logs)
    wait_for(
        lambda: not bridge.api_get("/webhooks/endpoints")["items"][0]["active"],
        15,
        "the endpoint to be disabled",
    )
    sim_says(bridge, ALICE, text="after the 410")
    wait_for(
        lambda: len(bridge.api_get("/webhooks/deliveries?status=dead")["items"]) == 2,
        15,
        "the second event dead-lettered",
        bridge.logs,
    )
    assert len(receiver.received) == 1  # nothing is sent to a disabled endpoint
    dead = bridge.api_get("/webhooks/deliveries?status=dead")["items"]
    assert {d["reason"] for d in dead} == {"endpoint_gone", "endpoint_disabled"}

    assert bridge.api("POST", "/webhooks/endpoints/default/enable").status_code == 200
    replayed = bridge.api("POST", "/webhooks/replay", {"since": since})
    assert replayed.status_code == 202 and replayed.json() == {"replayed": 2}
    wait_for(lambda: len(events(receiver, "message.received")) == 2, 15, "the replayed events")
    texts = sorted(e["data"]["text"] for e in events(receiver, "message.received"))
    assert texts == ["after the 410", "gone?"]
    first_try = receiver.received[0].headers["webhook-id"]
    assert first_try in {r.headers["webhook-id"] for r in receiver.received[1:]}  # same event
    bad = bridge.api("POST", "/webhooks/replay", {"since": "yesterday"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "since"


def test_typing_and_ended_events_when_enabled(
    make_bridge: MakeBridge, receiver: WebhookReceiver
) -> None:
    bridge = make_bridge(
        env=webhook_env(
            receiver,
            BRIDGE_WEBHOOK_EVENTS="message.received,conversation.typing,conversation.ended",
            BRIDGE_WEBHOOK_TYPING_EVENTS="true",
            BRIDGE_WEBHOOK_ENDED_EVENTS="true",
        )
    )
    sim_says(bridge, ALICE, text="hello")
    wait_for(lambda: len(events(receiver, "message.received")) == 1, 15, "the message")
    conversation = events(receiver, "message.received")[0]["data"]["conversation"]
    bridge.sim_call("POST", f"/_sim/users/{ALICE}/typing", {"to": BOT})
    wait_for(lambda: len(events(receiver, "conversation.typing")) >= 2, 15, "typing on and off")
    typing = events(receiver, "conversation.typing")
    assert [e["data"]["typing"] for e in typing[:2]] == [True, False]
    assert typing[0]["data"]["participant"]["uri"] == ALICE
    assert typing[0]["data"]["conversation"] == conversation
    bridge.sim_call("POST", f"/_sim/users/{ALICE}/leave", {"peer": BOT})
    wait_for(lambda: len(events(receiver, "conversation.ended")) == 1, 15, "the ended event")
    ended = events(receiver, "conversation.ended")[0]["data"]
    assert ended["conversation"] == conversation and ended["remote"]["uri"] == ALICE


def test_typing_and_ended_are_off_by_default(
    make_bridge: MakeBridge, receiver: WebhookReceiver
) -> None:
    bridge = make_bridge(env=webhook_env(receiver))
    sim_says(bridge, ALICE, text="hello")
    wait_for(lambda: len(events(receiver, "message.received")) == 1, 15, "the message")
    bridge.sim_call("POST", f"/_sim/users/{ALICE}/typing", {"to": BOT})
    bridge.sim_call("POST", f"/_sim/users/{ALICE}/leave", {"peer": BOT})
    bridge.send(ALICE, "a status event arrives after anything typing or ended would have")
    wait_for(lambda: len(events(receiver, "message.delivered")) == 1, 15, "the status event")
    assert {e["type"] for e in events(receiver)} == {"message.received", "message.delivered"}


def test_a_reply_reopens_messaging_the_remote_stopped(
    make_bridge: MakeBridge, receiver: WebhookReceiver
) -> None:
    bridge = make_bridge(env=webhook_env(receiver))
    sim_says(bridge, ALICE, text="bye for now")
    wait_for(lambda: len(events(receiver, "message.received")) == 1, 15, "the message")
    conversation = events(receiver, "message.received")[0]["data"]["conversation"]
    bridge.sim_call("POST", f"/_sim/users/{ALICE}/stop", {"peer": BOT})

    def disconnected() -> bool:
        raw = bridge.redis().get(f"conv:{conversation}")
        return raw is not None and json.loads(raw)["messaging_state"] == "Disconnected"

    wait_for(disconnected, 15, "the poller to see messaging stopped", bridge.logs)
    reply = bridge.post({"conversation": conversation, "text": "one more thing"})
    assert reply.status_code == 202, reply.text
    message_id = reply.json()["id"]
    assert bridge.wait_final(message_id)[message_id]["status"] == "delivered"
    assert bridge.texts(ALICE) == ["one more thing"]
    assert bridge.request_counts().get("addMessaging") == 1
    sim_says(bridge, ALICE, text="go on")  # and she can answer in the same conversation
    wait_for(lambda: len(events(receiver, "message.received")) == 2, 15, "her answer")
    assert events(receiver, "message.received")[1]["data"]["conversation"] == conversation


def test_inbound_ims_and_replies_need_no_conversation_update_after_a_message(
    make_bridge: MakeBridge, receiver: WebhookReceiver
) -> None:
    """Some servers send no ``conversation updated`` after an incoming message: the bridge
    hears every message once and its replies go warm into the same conversation."""
    bridge = make_bridge(env=webhook_env(receiver), conversation_updated_after_message=False)
    asked = ["Is the build green?", "And the deploy?", "Thanks"]
    replies = ["Yes, all green", "Deployed at noon"]
    conversation = None
    for n, text in enumerate(asked):
        sim_says(bridge, ALICE, text=text)
        wait_for(
            lambda n=n: len(events(receiver, "message.received")) >= n + 1,
            15,
            f"inbound event {n + 1}",
            bridge.logs,
        )
        conversation = events(receiver, "message.received")[-1]["data"]["conversation"]
        if n < len(replies):
            response = bridge.post({"conversation": conversation, "text": replies[n]})
            assert response.status_code == 202, response.text
            message_id = response.json()["id"]
            assert bridge.wait_final(message_id)[message_id]["status"] == "delivered"
    received = events(receiver, "message.received")
    assert [e["data"]["text"] for e in received] == asked
    assert {e["data"]["conversation"] for e in received} == {conversation}
    assert bridge.texts(ALICE) == replies
    assert len({m["conversation"] for m in bridge.inbox(ALICE)}) == 1
    counts = bridge.request_counts()
    assert counts.get("sendMessage") == 2 and "startMessaging" not in counts
