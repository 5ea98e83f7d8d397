"""A UCWA server that carries out a send after the bridge gave up waiting for its answer.

A proxy between the bridge and the simulator holds the POST (startMessaging for a cold send,
sendMessage for a warm one) for longer than the bridge's UCWA timeout, then lets the server act
on it. Whatever the delay, relative to the read timeout, the grace and the outcome window, the
recipient gets the text exactly once and the message ends delivered: at once when the outcome
arrives within the window, or first ``outcome_unknown`` and then delivered when it arrives
later. It is never sent twice, and never reported expired "before sending".
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.e2e.conftest import ALICE, BOB, FINAL, MakeBridge, events, wait_for, webhook_env
from tests.fault.conftest import FAULT_ENV, Report
from tests.rewriting_proxy import RewritingProxy
from tests.webhooks.receiver import WebhookReceiver

# UCWA timeout 1 s, grace 1 s; outcome windows: 5 s (invitation), 3 s (message).
LATE_ENV = {
    **FAULT_ENV,
    "BRIDGE_UCWA_TIMEOUT_S": "1",
    "BRIDGE_AMBIGUITY_GRACE_S": "1",
    "BRIDGE_INVITATION_TIMEOUT_S": "5",
    "BRIDGE_MESSAGE_TIMEOUT_S": "3",
}


def hold_once(kind: str, seconds: float) -> Callable[[str, str], float]:
    """Hold the first POST whose path names ``kind``'s resource for ``seconds``."""
    marker = {"startMessaging": "/messagingInvitations", "sendMessage": "/messages"}[kind]
    done: list[bool] = []

    def hold(method: str, path: str) -> float:
        if method == "POST" and path.split("?")[0].endswith(marker) and not done:
            done.append(True)
            return seconds
        return 0.0

    return hold


@pytest.mark.parametrize(
    ("kind", "late_s", "first_final"),
    [
        # acts after the read timeout and the grace, inside the outcome window
        ("startMessaging", 3.0, "delivered"),
        ("sendMessage", 2.5, "delivered"),
        # acts after the outcome window: unknown first, delivered when UCWA says so
        ("startMessaging", 8.0, "failed"),
        ("sendMessage", 6.0, "failed"),
    ],
)
def test_a_send_the_server_carries_out_late_arrives_once_and_ends_delivered(
    make_bridge: MakeBridge,
    receiver: WebhookReceiver,
    report: Report,
    kind: str,
    late_s: float,
    first_final: str,
) -> None:
    proxy = RewritingProxy().start()
    bridge = make_bridge(env={**LATE_ENV, **webhook_env(receiver)}, proxy=proxy)
    # One send first, so the timed one meets a worker that is up and a session that is ready
    # (else, on a loaded machine, the 2 s validity can run out before any worker starts): to
    # Alice for a warm send, to Bob for a cold one, so Alice's send still opens a conversation.
    opener = bridge.send(ALICE if kind == "sendMessage" else BOB, "opening")
    assert bridge.wait_final(opener)[opener]["status"] == "delivered"
    proxy.hold = hold_once(kind, late_s)
    started = time.monotonic()
    # validity shorter than the delay: the message must not be called expired "before sending"
    message_id = bridge.send(ALICE, "acted on late", validity=2)

    first = bridge.wait_final(message_id, timeout=30)[message_id]
    first_s = time.monotonic() - started
    assert first["status"] == first_final, first
    if first_final == "failed":
        assert first["error"]["code"] == "outcome_unknown", first
    wait_for(lambda: len(proxy.late) == 1, 30, "the held POST to reach the server", bridge.logs)
    wait_for(
        lambda: bridge.message(message_id)["status"] == "delivered",
        20,
        "the late success to make it delivered",
        bridge.logs,
    )
    record = bridge.message(message_id)
    wait_for(
        lambda: any(
            e["data"]["message_id"] == message_id for e in events(receiver, "message.delivered")
        ),
        15,
        "the message.delivered event",
        bridge.logs,
    )
    time.sleep(2)  # room for any resend to land before counting what the recipient got
    texts = bridge.texts(ALICE)
    report(
        kind=kind,
        late_s=late_s,
        first=first["status"],
        first_s=first_s,
        attempts=record["attempts"],
        received=texts.count("acted on late"),
        late_posts=len(proxy.late),
    )
    assert texts.count("acted on late") == 1, texts
    assert record["attempts"] == 1, record
    assert "expired" not in record["history"], record
    delivered = [
        e["data"]
        for e in events(receiver, "message.delivered")
        if e["data"]["message_id"] == message_id
    ]
    assert len(delivered) == 1
    if first_final == "failed":
        assert record["previous_error"]["code"] == "outcome_unknown"
        assert delivered[0]["previous_error"]["code"] == "outcome_unknown"
        failed = [
            e["data"]
            for e in events(receiver, "message.failed")
            if e["data"]["message_id"] == message_id
        ]
        assert [f["error"]["code"] for f in failed] == ["outcome_unknown"]
    else:
        assert record.get("previous_error") is None
    assert record["status"] in FINAL
