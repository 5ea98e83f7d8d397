"""UCWA misbehaving at a rate while messages flow: 5xx, dropped connections, 401 storms, delays
past the bridge's timeouts, resync on the event channel, and the application expiring.

One message's startMessaging is answered only after the worker's 30 s read timeout (the server
acts on it late), the hardest case for sending once. Every accepted message must end delivered
or failed with a reason, and be received at most once; the figure counts the retries.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from typing import Any

import pytest

from tests.e2e.conftest import BOT, FINAL, Bridge, MakeBridge, wait_for
from tests.fault.conftest import FAULT_ENV, PEOPLE, Ledger, Report, add_people, outcome

SEND_KINDS = ("startMessaging", "sendMessage")


def rate_faults() -> list[dict[str, Any]]:
    """Faults on the send requests, the event channel and the token grant, at rates."""
    faults: list[dict[str, Any]] = []
    for kind in SEND_KINDS:
        faults += [
            {"match": {"rel": kind}, "status": 503, "retry_after": 1, "rate": 0.10},
            {"match": {"rel": kind}, "status": 500, "rate": 0.05},
            {"match": {"rel": kind}, "drop_connection": True, "rate": 0.05},
            {"match": {"rel": kind}, "delay_ms": 1500, "rate": 0.10},
        ]
    faults += [
        {"match": {"rel": "events"}, "status": 503, "rate": 0.05},
        {"match": {"rel": "events"}, "drop_connection": True, "rate": 0.05},
        {"match": {"rel": "events"}, "resync": True, "rate": 0.05},
        # longer than the message (3 s) and invitation (5 s) watchdogs: UCWA is asked directly
        {"match": {"rel": "events"}, "delay_ms": 6000, "rate": 0.03},
        {"match": {"rel": "token"}, "status": 503, "rate": 0.10},
    ]
    return faults


def storm_faults() -> list[dict[str, Any]]:
    """401 storms: the server forgets the token in use and challenges again."""
    return [
        {"match": {"rel": kind}, "status": 401, "rate": 0.10} for kind in (*SEND_KINDS, "events")
    ]


def run_faults(
    make_bridge: MakeBridge,
    report: Report,
    seed: int,
    messages: int,
    load_s: float,
    expiries: int,
) -> None:
    rng = random.Random(seed)
    # a grace longer than the sweep's stale age (2 x 1 s): the late POST must be adopted
    bridge = make_bridge(start=False, env={**FAULT_ENV, "BRIDGE_AMBIGUITY_GRACE_S": "3"})
    bridge.start_api()
    bridge.start_poller()
    bridge.start_worker()
    bridge.start_worker()
    add_people(bridge)
    ledger = Ledger()

    # The server acts on this POST 30.5 s after it arrived: the worker's read timeout (30 s)
    # has passed by then, so the worker cannot know whether it was sent.
    bridge.sim_call(
        "POST", "/_sim/faults", {"match": {"rel": "startMessaging"}, "delay_ms": 30_500, "times": 1}
    )
    late = ledger.post(bridge, PEOPLE[7], f"uf {seed} late")
    assert late is not None
    wait_for(lambda: bridge.message(late)["status"] == "sending", 10, "the late POST", bridge.logs)
    started = time.monotonic()
    for fault in rate_faults():
        bridge.sim_call("POST", "/_sim/faults", fault)
    expired = 0

    def load() -> None:
        for n in range(messages):
            ledger.post(bridge, PEOPLE[n % 6], f"uf {seed} #{n}")
            time.sleep(rng.uniform(0, 2 * load_s / messages))

    sender = threading.Thread(target=load)
    sender.start()
    # 401 storms and expiry start once the late POST is settled: a token revoked or an
    # application gone under it would make the late POST fail instead of arriving late.
    wait_for(lambda: bridge.message(late)["status"] in FINAL, 60, "the late message", bridge.logs)
    for fault in storm_faults():
        bridge.sim_call("POST", "/_sim/faults", fault)
    for at in sorted(rng.uniform(time.monotonic() - started, load_s) for _ in range(expiries)):
        time.sleep(max(0.0, started + at - time.monotonic()))
        status = rng.choice([404, 410])
        bridge.sim_call(
            "POST", "/_sim/expire", {"user": BOT, "what": "application", "status": status}
        )
        expired += 1
    sender.join()
    result = outcome(bridge, ledger, timeout=120)
    hits = fault_hits(bridge)
    bridge.sim_call("DELETE", "/_sim/faults")
    report(
        seed=seed,
        trials=messages + 1,
        **result.figures(),
        codes=dict(result.codes),
        faults_fired=sum(hits.values()),
        by_kind=dict(hits),
        app_expiries=expired,
        settle_s=time.monotonic() - started,
    )
    result.check()
    assert bridge.message(late)["status"] == "delivered"
    assert bridge.texts(PEOPLE[7]).count(f"uf {seed} late") == 1
    assert result.retries > 0 and sum(hits.values()) > 0


def fault_hits(bridge: Bridge) -> Counter[str]:
    hits: Counter[str] = Counter()
    for fault in bridge.sim_call("GET", "/_sim/faults"):
        what = (
            "resync"
            if fault["resync"]
            else "drop"
            if fault["drop_connection"]
            else f"{fault['status']}"
            if fault["status"]
            else "delay"
        )
        hits[f"{fault['match']['rel']}/{what}"] += fault["hits"]
    return +hits


def test_ucwa_faults_at_a_rate_quick(make_bridge: MakeBridge, report: Report, seed: int) -> None:
    run_faults(make_bridge, report, seed, messages=40, load_s=38, expiries=1)


@pytest.mark.long
@pytest.mark.timeout(600)
def test_ucwa_faults_at_a_rate_long(make_bridge: MakeBridge, report: Report, seed: int) -> None:
    run_faults(make_bridge, report, seed, messages=250, load_s=90, expiries=4)
