"""kill -9 of the active poller while IMs come in and messages go out; a standby takes over.

Simulated users keep writing to the bot and the API keeps accepting messages through each
failover. Each takeover is timed from the kill until the standby holds the lease and has applied
an event batch. No inbound IM may be lost or reach the webhook twice; no outbound message may
stay unfinished or be received twice.
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from typing import Any

import pytest

from bridge.session.lease import PollerLease
from tests.e2e.conftest import BOT, Bridge, MakeBridge, events, wait_for, webhook_env
from tests.fault.conftest import FAULT_ENV, PEOPLE, Ledger, Report, add_people, kill9, outcome
from tests.webhooks.receiver import WebhookReceiver

WRITERS = ["sip:alice@contoso.com", "sip:bob@contoso.com", PEOPLE[6], PEOPLE[7]]


def takeover_time(bridge: Bridge, fence: int, killed_at: float, timeout: float) -> float:
    """Seconds from the kill until a new lease holder has applied an event batch."""
    client = bridge.redis()

    def taken() -> bool:
        holder = PollerLease.current(client, BOT)
        pulse = float(client.get(f"session:{BOT}:pulse") or 0)
        return holder is not None and holder.fence > fence and pulse > killed_at

    wait_for(taken, timeout, "the standby to take over", bridge.logs)
    return time.time() - killed_at


def run_failovers(
    make_bridge: MakeBridge,
    receiver: WebhookReceiver,
    report: Report,
    seed: int,
    failovers: int,
    load_s: float,
) -> None:
    rng = random.Random(seed)
    # time_scale 0.2: UCWA drops an IM nobody fetched after 6 s, against a 2 s lease
    bridge = make_bridge(start=False, env={**FAULT_ENV, **webhook_env(receiver)}, time_scale=0.2)
    bridge.start_api()
    active = bridge.start_poller()
    standby = bridge.start_poller(wait=False)
    bridge.start_worker()
    bridge.start_worker()
    add_people(bridge)
    ledger = Ledger()
    said: list[tuple[str, str]] = []
    refused_inbound = 0
    stop = threading.Event()

    def inbound() -> None:
        nonlocal refused_inbound
        n = 0
        while not stop.is_set():
            who = WRITERS[n % len(WRITERS)]
            text = f"in {seed} #{n}"
            try:
                bridge.sim_call("POST", f"/_sim/users/{who}/messages", {"to": BOT, "text": text})
                said.append((who, text))
            except AssertionError:
                refused_inbound += 1  # the bot had no available application at that moment
            n += 1
            time.sleep(0.15)

    def outbound() -> None:
        n = 0
        while not stop.is_set():
            ledger.post(bridge, PEOPLE[n % 4], f"out {seed} #{n}")
            n += 1
            time.sleep(0.15)

    threads = [threading.Thread(target=inbound), threading.Thread(target=outbound)]
    for thread in threads:
        thread.start()
    takeovers: list[float] = []
    try:
        for _ in range(failovers):
            time.sleep(rng.uniform(0.5, load_s / failovers))
            fence = PollerLease.current(bridge.redis(), BOT)
            assert fence is not None
            killed_at = time.time()
            kill9(active)
            takeovers.append(takeover_time(bridge, fence.fence, killed_at, 30))
            active, standby = standby, bridge.start_poller(wait=False)
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join()

    result = outcome(bridge, ledger, timeout=60)
    fetched, withdrawn = inbound_fate(bridge, said)
    wait_for(
        lambda: fetched <= set(texts_by_id(receiver)),
        30,
        "a webhook for every IM the bot fetched",
        bridge.logs,
    )
    time.sleep(1.0)  # anything repeated would have arrived by now
    by_text = texts_by_id(receiver)
    lost_in = len(fetched - set(by_text)) + len(withdrawn)
    dup_in = sum(1 for ids in by_text.values() if len(ids) > 1)
    report(
        seed=seed,
        trials=failovers,
        inbound=len(said),
        inbound_lost=lost_in,
        inbound_duplicated=dup_in,
        **result.figures(),
        takeover_max_s=max(takeovers),
        takeover_mean_s=sum(takeovers) / len(takeovers),
    )
    assert refused_inbound == 0
    assert withdrawn == set(), "UCWA dropped IMs nobody fetched in time"
    assert lost_in == 0 and dup_in == 0
    assert set(by_text) == {text for _, text in said}
    result.check()


def inbound_fate(bridge: Bridge, said: list[tuple[str, str]]) -> tuple[set[str], set[str]]:
    """Texts the bot's application fetched, and texts UCWA withdrew unread, per the simulator."""
    ours = {text for _, text in said}
    wait_for(
        lambda: all(
            s["status"] in ("delivered", "failed")
            for who in WRITERS
            for s in bridge.sim_call("GET", f"/_sim/users/{who}/sent")
            if s["text"] in ours
        ),
        30,
        "every IM to be fetched or dropped",
        bridge.logs,
    )
    fetched: set[str] = set()
    withdrawn: set[str] = set()
    for who in WRITERS:
        for entry in bridge.sim_call("GET", f"/_sim/users/{who}/sent"):
            if entry["text"] in ours:
                (fetched if entry["status"] == "delivered" else withdrawn).add(entry["text"])
    return fetched, withdrawn


def texts_by_id(receiver: WebhookReceiver) -> dict[str, set[str]]:
    """message.received texts → the distinct webhook-ids they arrived under."""
    found: dict[str, set[str]] = defaultdict(set)
    for event in events(receiver, "message.received"):
        data: dict[str, Any] = event["data"]
        found[data["text"]].add(event["id"])
    return dict(found)


def test_active_poller_killed_standby_takes_over_quick(
    make_bridge: MakeBridge, receiver: WebhookReceiver, report: Report, seed: int
) -> None:
    run_failovers(make_bridge, receiver, report, seed, failovers=2, load_s=6)


@pytest.mark.long
@pytest.mark.timeout(600)
def test_active_poller_killed_standby_takes_over_long(
    make_bridge: MakeBridge, receiver: WebhookReceiver, report: Report, seed: int
) -> None:
    run_failovers(make_bridge, receiver, report, seed, failovers=10, load_s=60)
