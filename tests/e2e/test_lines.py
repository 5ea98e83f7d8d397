"""One line per remote person, end to end: the first (cold) message names the conversation it
opened, so the reply can be matched to it, and a reply by ``conversation`` waits behind an
earlier message by ``to`` to the same person.
"""

from __future__ import annotations

from tests.e2e.conftest import ALICE, BOT, MakeBridge, events, wait_for, webhook_env
from tests.fault.test_late_server import hold_once
from tests.rewriting_proxy import RewritingProxy
from tests.webhooks.receiver import WebhookReceiver


def test_the_cold_message_names_its_conversation_and_replies_keep_the_persons_order(
    make_bridge: MakeBridge, receiver: WebhookReceiver
) -> None:
    proxy = RewritingProxy().start()
    bridge = make_bridge(env=webhook_env(receiver), proxy=proxy)
    bridge.start_worker()  # two workers: separate lines would run side by side

    opening = bridge.send(ALICE, "opening")
    first = bridge.wait_final(opening)[opening]
    assert first["status"] == "delivered"
    conversation = first["conversation"]
    assert conversation and conversation.startswith("conv_"), first
    wait_for(lambda: bool(events(receiver, "message.delivered")), 15, "the delivered event")
    [delivered] = events(receiver, "message.delivered")
    assert delivered["data"]["conversation"] == conversation

    bridge.sim_call("POST", f"/_sim/users/{ALICE}/messages", {"to": BOT, "text": "ack?"})
    wait_for(lambda: bool(events(receiver, "message.received")), 15, "the reply", bridge.logs)
    [reply] = events(receiver, "message.received")
    assert reply["data"]["conversation"] == conversation

    # The warm send by ``to`` is slow at the server; the reply by ``conversation`` must wait.
    proxy.hold = hold_once("sendMessage", 1.5)
    by_to = bridge.send(ALICE, "first, by to")
    by_conversation = bridge.post({"conversation": conversation, "text": "second, by conversation"})
    assert by_conversation.status_code == 202, by_conversation.text
    second = by_conversation.json()["id"]
    finals = bridge.wait_final(by_to, second)
    assert {m["status"] for m in finals.values()} == {"delivered"}, finals
    assert bridge.texts(ALICE) == ["opening", "first, by to", "second, by conversation"]
