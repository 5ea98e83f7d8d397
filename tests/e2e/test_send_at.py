"""Scheduled messages against real sends: gunicorn API, RQ worker with its scheduler, poller
and the simulator on real Redis. Nothing arrives before its send_at; a cancelled one never
arrives; once due, messages to one person arrive in the order they were accepted."""

from __future__ import annotations

import time

from bridge.api.schemas import parse_rfc3339
from bridge.outbound.messages import format_time
from tests.e2e.conftest import ALICE, BOB, MakeBridge, wait_for


def test_scheduled_messages_arrive_after_send_at_and_cancelled_ones_never(
    make_bridge: MakeBridge,
) -> None:
    bridge = make_bridge(env={"BRIDGE_RATE_LIMIT": "off"})  # the test polls often
    send_at = time.time() + 3
    later = bridge.send(ALICE, "at three", send_at=format_time(send_at))
    dropped = bridge.send(BOB, "cancelled while scheduled", send_at=format_time(send_at))
    now = bridge.send(ALICE, "right away")
    assert bridge.message(later)["status"] == "scheduled"
    assert bridge.api("POST", f"/messages/{dropped}/cancel").status_code == 200

    wait_for(lambda: bridge.texts(ALICE) == ["right away"], 10, "the immediate message")
    assert bridge.message(later)["status"] == "scheduled"
    results = bridge.wait_final(later, now, timeout=30)

    assert results[later]["status"] == "delivered"
    queued_at = parse_rfc3339(results[later]["history"]["queued"])
    assert send_at - 0.01 <= queued_at <= send_at + 5  # RQ's scheduler looks every second
    assert list(results[later]["history"]) == ["scheduled", "queued", "sending", "delivered"]
    assert bridge.texts(ALICE) == ["right away", "at three"]
    time.sleep(1.5)  # the cancelled one's moment has passed too
    assert bridge.message(dropped)["status"] == "cancelled"
    assert bridge.texts(BOB) == []


def test_messages_that_fall_due_together_arrive_in_accepted_order(
    make_bridge: MakeBridge,
) -> None:
    bridge = make_bridge(env={"BRIDGE_RATE_LIMIT": "off"})  # the test polls often
    bridge.start_worker()  # two workers run the release jobs side by side
    send_at = format_time(time.time() + 2)
    texts = [f"due {n}" for n in range(8)]
    ids = [bridge.send(ALICE, text, send_at=send_at) for text in texts]
    others = [bridge.send(BOB, f"bob {n}", send_at=send_at) for n in range(4)]
    bridge.wait_final(*ids, *others, timeout=60)
    assert bridge.texts(ALICE) == texts
    assert bridge.texts(BOB) == [f"bob {n}" for n in range(4)]
