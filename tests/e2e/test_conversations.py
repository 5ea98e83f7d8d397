"""GET /conversations end to end: a receiver that has no webhooks (or lost them) finds the
conversation a cold send opened and reads its messages both ways, in order, with statuses."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import ALICE, BOB, BOT, MakeBridge, wait_for


def test_a_conversation_shows_its_messages_both_ways_without_any_webhook(
    make_bridge: MakeBridge,
) -> None:
    bridge = make_bridge()  # no BRIDGE_WEBHOOKS: the log must not depend on them
    opening = bridge.send(ALICE, "opening")
    first = bridge.wait_final(opening)[opening]
    assert first["status"] == "delivered"
    conversation = first["conversation"]

    bridge.sim_call("POST", f"/_sim/users/{ALICE}/messages", {"to": BOT, "text": "got it <3"})

    def detail() -> dict[str, Any]:
        found: dict[str, Any] = bridge.api_get(f"/conversations/{conversation}")
        return found

    wait_for(lambda: len(detail()["messages"]) == 2, 15, "the reply in the log", bridge.logs)
    view = detail()
    assert (view["id"], view["remote"], view["active"]) == (conversation, ALICE, True)
    assert view["started_at"] and view["last_activity_at"] >= view["started_at"]
    sent, received = view["messages"]
    assert sent == {
        "direction": "outbound",
        "message_id": opening,
        "at": first["created_at"],
        "status": "delivered",
        "text": "opening",
        "html": None,
        "error": None,
    }
    assert (received["direction"], received["text"]) == ("inbound", "got it <3")
    assert received["from"]["uri"] == ALICE
    assert received["from"]["name"]
    assert view["remote_name"] == received["from"]["name"]  # learned from the reply

    # A second, warm message joins the same log once final.
    warm = bridge.send(ALICE, "and again")
    assert bridge.wait_final(warm)[warm]["status"] == "delivered"
    wait_for(lambda: len(detail()["messages"]) == 3, 15, "the warm send in the log")
    assert [m["text"] for m in detail()["messages"]] == ["opening", "got it <3", "and again"]

    # The listing has it, by person and by state; the other person has none.
    listed = bridge.api_get("/conversations")
    assert [c["id"] for c in listed["items"]] == [conversation]
    assert listed["next_cursor"] is None
    assert [c["id"] for c in bridge.api_get(f"/conversations?remote={ALICE}")["items"]] == [
        conversation
    ]
    assert bridge.api_get(f"/conversations?remote={BOB}")["items"] == []
    assert [c["id"] for c in bridge.api_get("/conversations?state=active")["items"]] == [
        conversation
    ]

    missing = bridge.api("GET", "/conversations/conv_" + "0" * 24)
    assert missing.status_code == 404
    assert missing.headers["Content-Type"] == "application/problem+json"
    assert missing.json()["type"].endswith("conversation-not-found")
