"""Cancelling against real sends: gunicorn API, RQ workers, poller and the simulator on real
Redis. A cancelled message never reaches the recipient, the line moves on, and a cancel racing
a send ends one way only: cancelled and never received, or sent and the cancel refused.
"""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rq import Worker

from tests.e2e.conftest import ALICE, BOB, MakeBridge, wait_for


def test_a_message_queued_behind_a_slow_one_is_cancelled_and_the_next_one_sent(
    make_bridge: MakeBridge,
) -> None:
    # The simulator answers a new conversation after 3 s: the first message holds the line.
    bridge = make_bridge(accept_delay=60.0)
    slow = bridge.send(ALICE, "slow first")
    cancelled = bridge.send(ALICE, "never this")
    last = bridge.send(ALICE, "then this")
    wait_for(lambda: bridge.message(slow)["status"] == "sending", 10, "the first to be sent")

    answer = bridge.api("POST", f"/messages/{cancelled}/cancel", {"reason": "superseded"})

    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "cancelled"
    assert bridge.message(last)["status"] == "queued"
    results = bridge.wait_final(slow, cancelled, last)
    assert [results[i]["status"] for i in (slow, cancelled, last)] == [
        "delivered",
        "cancelled",
        "delivered",
    ]
    assert results[cancelled]["error"]["message"] == "superseded"
    assert results[cancelled]["attempts"] == 0
    assert bridge.texts(ALICE) == ["slow first", "then this"]
    again = bridge.api("POST", f"/messages/{cancelled}/cancel")
    assert (again.status_code, again.json()) == (200, results[cancelled])
    late = bridge.api("POST", f"/messages/{slow}/cancel")
    assert late.status_code == 409
    assert late.json()["message_status"] == "delivered"


def test_cancels_fired_at_random_moments_never_end_cancelled_and_delivered(
    make_bridge: MakeBridge,
) -> None:
    # Each UCWA request takes 60 ms, so each person's line of 25 takes seconds to send and the
    # cancels (0 to 1.5 s after the sends) meet messages in every state.
    bridge = make_bridge(env={"BRIDGE_RATE_LIMIT": "off"}, latency_ms=60)
    bridge.start_worker()  # two workers: claims race cancels from two processes
    rng = random.Random(14)
    people = (ALICE, BOB)
    # Both worker processes up (each registers an RQ worker per job runner) before the race, so
    # that a busy machine's slow start does not let every cancel win.
    pids = {proc.pid for proc in bridge.procs["worker"]}
    assert len(pids) == 2
    wait_for(
        lambda: {w.pid for w in Worker.all(connection=bridge.redis())} == pids,
        30,
        "both worker processes",
    )
    texts = {bridge.send(people[n % 2], f"race {n}"): f"race {n}" for n in range(50)}

    def cancel(message_id: str) -> tuple[str, int, Any]:
        time.sleep(rng.uniform(0, 1.5))
        answer = bridge.api("POST", f"/messages/{message_id}/cancel")
        return message_id, answer.status_code, answer.json()

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = {m: (code, body) for m, code, body in pool.map(cancel, list(texts))}
    results = bridge.wait_final(*texts, timeout=90)
    received = [text for person in people for text in bridge.texts(person)]

    outcomes = {"cancelled": 0, "sent": 0}
    for message_id, text in texts.items():
        code, body = answers[message_id]
        final = results[message_id]
        if code == 200:
            assert final["status"] == "cancelled", (final, body)
            assert text not in received, f"{message_id} was cancelled and delivered"
            outcomes["cancelled"] += 1
        else:
            assert code == 409, body
            assert body["message_status"] in ("sending", "delivered", "failed"), body
            assert final["status"] == "delivered", final
            assert received.count(text) == 1, text
            outcomes["sent"] += 1
    assert len(received) == outcomes["sent"]
    for person in people:  # what was sent arrived in the order it was accepted
        mine = [text for message_id, text in texts.items() if results[message_id]["to"] == person]
        sent = [t for t in mine if t in received]
        assert bridge.texts(person) == sent
    # Both endings occurred, or the test raced nothing.
    assert outcomes["cancelled"] and outcomes["sent"], outcomes
