"""Several accounts in one deployment, end to end: each message goes out from the account it
names, replies come back tagged with the account that received them and go back from it, and a
key bound to one account cannot send from another."""

from __future__ import annotations

import json
from typing import Any

from tests.e2e.conftest import (
    ALERTS,
    ALERTS_PASSWORD,
    ALICE,
    API_KEY,
    BOB,
    BOT,
    BOT_PASSWORD,
    Bridge,
    MakeBridge,
    events,
    wait_for,
    webhook_env,
)
from tests.webhooks.receiver import WebhookReceiver

ALERTS_KEY = "alerts-only-key-0123456789abcdef"
ACCOUNTS = [
    {"id": "bot", "username": BOT, "password": BOT_PASSWORD, "default": True},
    {"id": "alerts", "username": ALERTS, "password": ALERTS_PASSWORD},
]


def accounts_env(receiver: WebhookReceiver) -> dict[str, str]:
    return {
        **webhook_env(receiver),
        "BRIDGE_ACCOUNTS": json.dumps(ACCOUNTS),
        "BRIDGE_UCWA_USERNAME": "",  # blank: unset, the list names every account
        "BRIDGE_UCWA_PASSWORD": "",
        "BRIDGE_API_KEYS": f"{API_KEY},{ALERTS_KEY}@alerts",
    }


def both_ready(bridge: Bridge) -> bool:
    states = [bridge.redis().hget(f"session:{sip}", "state") for sip in (BOT, ALERTS)]
    return states == [b"ready", b"ready"]


def start(make_bridge: MakeBridge, receiver: WebhookReceiver) -> Bridge:
    bridge = make_bridge(start=False, env=accounts_env(receiver))
    bridge.start_api()
    bridge.start_poller(wait=False)
    bridge.start_worker()
    wait_for(lambda: both_ready(bridge), 30, "both accounts' sessions", bridge.logs)
    return bridge


def inbox_from(bridge: Bridge, sip: str) -> list[tuple[str, str]]:
    return [(m["from"], m["text"]) for m in bridge.inbox(sip)]


def test_each_message_goes_from_its_account_and_replies_come_back_tagged(
    make_bridge: MakeBridge, receiver: WebhookReceiver
) -> None:
    bridge = start(make_bridge, receiver)
    ids = {
        "bot": bridge.send(ALICE, "from the bot"),
        "alerts": bridge.send(ALICE, "disk full", **{"from": "alerts"}),
        "alerts to bob": bridge.send(BOB, "disk full too", **{"from": "alerts"}),
    }
    final = bridge.wait_final(*ids.values())
    assert {m["status"] for m in final.values()} == {"delivered"}, final
    assert final[ids["alerts"]]["from"] == "alerts" and final[ids["bot"]]["from"] == "bot"
    assert sorted(inbox_from(bridge, ALICE)) == [(ALERTS, "disk full"), (BOT, "from the bot")]
    assert inbox_from(bridge, BOB) == [(ALERTS, "disk full too")]

    # Status events name the account each message went from.
    def delivered() -> dict[str, Any]:
        return {e["data"]["message_id"]: e["data"] for e in events(receiver, "message.delivered")}

    wait_for(lambda: set(ids.values()) <= set(delivered()), 15, "status events", bridge.logs)
    assert {delivered()[i]["account"] for i in (ids["alerts"], ids["alerts to bob"])} == {"alerts"}
    assert delivered()[ids["bot"]]["account"] == "bot"

    # Alice answers each account; each reply is tagged with the account that received it.
    bridge.sim_call("POST", f"/_sim/users/{ALICE}/messages", {"to": ALERTS, "text": "which disk?"})
    bridge.sim_call("POST", f"/_sim/users/{ALICE}/messages", {"to": BOT, "text": "thanks bot"})
    wait_for(lambda: len(events(receiver, "message.received")) >= 2, 20, "two replies", bridge.logs)
    received = {e["data"]["text"]: e["data"] for e in events(receiver, "message.received")}
    assert received["which disk?"]["account"] == "alerts"
    assert received["thanks bot"]["account"] == "bot"

    # Answering into a conversation goes from that conversation's account, without saying so.
    answer = bridge.post({"conversation": received["which disk?"]["conversation"], "text": "/var"})
    assert answer.status_code == 202, answer.text
    assert answer.json()["from"] == "alerts"
    message_id = answer.json()["id"]
    assert bridge.wait_final(message_id)[message_id]["status"] == "delivered"
    assert inbox_from(bridge, ALICE)[-1] == (ALERTS, "/var")

    # A key bound to alerts cannot send as the bot; nothing of it is stored or sent.
    refused = bridge.api(
        "POST",
        "/messages",
        {"to": ALICE, "text": "as the bot", "from": "bot"},
        headers={"Authorization": f"Bearer {ALERTS_KEY}"},
    )
    assert refused.status_code == 403
    assert refused.json()["errors"][0]["field"] == "from"
    ready = bridge.api("GET", "/readyz").json()
    assert ready["status"] == "ready"
    assert "as the bot" not in [text for _, text in inbox_from(bridge, ALICE)]
