"""A broadcast against real sends: gunicorn API, RQ worker, poller and the simulator on real
Redis, with a webhook receiver. Every recipient gets the message once, its status events carry
the broadcast id, and the broadcast's counts end all delivered."""

from __future__ import annotations

from tests.e2e.conftest import (
    ALICE,
    BOB,
    MakeBridge,
    WebhookReceiver,
    events,
    wait_for,
    webhook_env,
)


def test_a_broadcast_reaches_everyone_once_and_its_events_name_it(
    make_bridge: MakeBridge, receiver: WebhookReceiver
) -> None:
    bridge = make_bridge(env=webhook_env(receiver, BRIDGE_RATE_LIMIT="off"))
    before = bridge.send(ALICE, "before the broadcast")
    answer = bridge.api(
        "POST", "/broadcasts", {"to": [ALICE, BOB, ALICE.upper()], "text": "all hands at 3"}
    )
    assert answer.status_code == 202, answer.text
    broadcast = answer.json()
    ids = [m["id"] for m in broadcast["messages"]]
    assert len(ids) == 2

    results = bridge.wait_final(before, *ids, timeout=40)

    assert all(results[i]["status"] == "delivered" for i in ids)
    assert bridge.texts(ALICE) == ["before the broadcast", "all hands at 3"]
    assert bridge.texts(BOB) == ["all hands at 3"]
    counts = bridge.api_get(f"/broadcasts/{broadcast['id']}")["counts"]
    assert counts["delivered"] == 2 and sum(counts.values()) == 2
    listed = bridge.api_get(f"/messages?broadcast={broadcast['id']}&status=delivered")
    assert sorted(m["id"] for m in listed["items"]) == sorted(ids)
    to_alice = bridge.api_get(f"/messages?to={ALICE}&limit=1")["items"]
    assert [m["id"] for m in to_alice] == [ids[0]]  # newest first
    wait_for(lambda: len(events(receiver, "message.delivered")) >= 3, 20, "the status events")
    tagged = {
        e["data"]["message_id"]: e["data"].get("broadcast")
        for e in events(receiver, "message.delivered")
    }
    assert tagged == {before: None, ids[0]: broadcast["id"], ids[1]: broadcast["id"]}
