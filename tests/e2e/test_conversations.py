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


def test_the_bot_shows_typing_then_ends_the_conversation_through_a_worker(
    make_bridge: MakeBridge,
) -> None:
    bridge = make_bridge()
    opening = bridge.send(BOB, "hello")
    conversation = bridge.wait_final(opening)[opening]["conversation"]

    def posted(kind: str) -> list[dict[str, Any]]:
        return [r for r in bridge.ucwa_requests() if r["kind"] == kind]

    typing = bridge.api("POST", f"/conversations/{conversation}/typing")
    assert typing.status_code == 202, typing.text
    assert (
        typing.json()["action"] == "typing" and typing.json()["conversation"]["id"] == conversation
    )
    wait_for(lambda: bool(posted("setIsTyping")), 15, "setIsTyping at UCWA", bridge.logs)
    [shown] = posted("setIsTyping")
    assert shown["method"] == "POST" and shown["status"] < 300, shown

    ended = bridge.api("POST", f"/conversations/{conversation}/end")
    assert ended.status_code == 202, ended.text
    wait_for(
        lambda: bridge.api_get(f"/conversations/{conversation}")["active"] is False,
        15,
        "the conversation to end",
        bridge.logs,
    )
    [stopped] = posted("stopMessaging")
    assert stopped["status"] < 300, stopped
    assert bridge.api_get("/conversations?state=active")["items"] == []

    for action in ("end", "typing"):  # nothing left to act on
        again = bridge.api("POST", f"/conversations/{conversation}/{action}")
        assert again.status_code == 409, again.text
        assert again.json()["type"].endswith("conversation-not-live")
    assert bridge.api("POST", "/conversations/conv_" + "1" * 24 + "/end").status_code == 404

    # A message to the same person afterwards opens a new conversation and is delivered.
    after = bridge.send(BOB, "still there?")
    final = bridge.wait_final(after)[after]
    assert final["status"] == "delivered" and final["conversation"] != conversation
    assert bridge.texts(BOB) == ["hello", "still there?"]
