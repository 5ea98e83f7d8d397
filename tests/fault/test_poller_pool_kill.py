"""kill -9 of one of three poller processes sharing nine accounts, while messages flow both ways
on all nine.

Simulated users keep writing to every account, and the API keeps sending from every account.
Each of the killed process's accounts is timed from the kill until a new owner has applied an
event batch for it; the target is the lease TTL plus 5 s. Throughout, the fencing counters only
grow and no account has two readers (two parked event GETs would replace each other again and
again: at most one 409 per handover).
Every IM reaches the webhook receiver exactly once, tagged with its account where tagged; every
accepted message ends delivered, once, from the account it was sent from.
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.e2e.conftest import events, wait_for, webhook_env
from tests.fault.conftest import Ledger, Report, kill9, outcome
from tests.integration.pool_harness import (
    BOTS,
    IDS,
    WRITERS,
    all_ready,
    applications,
    fences,
    holders,
    members,
    pool_bridge,
    ready,
    replaced_gets,
    sim_call,
    sim_config,
    wait_spread,
)
from tests.webhooks.receiver import WebhookReceiver
from ucwasim import Simulator

LEASE_S = 2.0
ACCOUNT_OF = dict(zip(BOTS, IDS, strict=True))


class Watch:
    """Samples fences and lease holders every 50 ms: fences never go back."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.stop = threading.Event()
        self.backwards: list[str] = []
        self.samples = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        last = fences(self.client)
        while not self.stop.wait(0.05):
            now = fences(self.client)
            self.backwards += [f"{b}: {last[b]} -> {now[b]}" for b in BOTS if now[b] < last[b]]
            last = now
            self.samples += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


def pid_of(member: str) -> int:
    return int(member.split("-")[-2])


def run_kills(
    redis_url: str,
    client: redis.Redis,
    workdir: Path,
    receiver: WebhookReceiver,
    report: Report,
    seed: int,
    kills: int,
) -> None:
    rng = random.Random(seed)
    # time_scale 0.3: UCWA withdraws an IM nobody fetched after 9 s, against a 2 s lease
    sim = Simulator(sim_config(time_scale=0.3)).start()
    bridge = pool_bridge(
        redis_url, workdir, sim, env={**webhook_env(receiver), "BRIDGE_POLLER_LEASE_S": "2"}
    )
    said: list[tuple[str, str, str]] = []  # (writer, bot, text)
    refused = 0
    stop = threading.Event()
    ledger = Ledger()
    sent_from: dict[str, str] = {}  # text → the account it was sent from

    def outbound() -> None:
        n = 0
        while not stop.is_set():
            account, to = IDS[n % len(IDS)], WRITERS[(n // len(IDS)) % len(WRITERS)]
            text = f"out {seed} {account} #{n}"
            if ledger.post(bridge, to, text, sender=account):
                sent_from[text] = account
            n += 1
            time.sleep(0.1)

    def inbound() -> None:
        nonlocal refused
        n = 0
        while not stop.is_set():
            bot, who = BOTS[n % len(BOTS)], WRITERS[(n // len(BOTS)) % len(WRITERS)]
            text = f"in {seed} {ACCOUNT_OF[bot]} #{n}"
            try:
                sim_call(sim, "POST", f"/_sim/users/{who}/messages", {"to": bot, "text": text})
                said.append((who, bot, text))
            except AssertionError:
                refused += 1
            n += 1
            time.sleep(0.05)

    takeovers: dict[str, float] = {}
    watch: Watch | None = None
    writer = threading.Thread(target=inbound)
    sender = threading.Thread(target=outbound)
    try:
        pollers = [bridge.spawn("poller") for _ in range(3)]
        bridge.spawn("worker")
        bridge.spawn("worker")
        bridge.start_api()
        wait_spread(client, [3, 3, 3], 20, bridge)
        wait_for(lambda: all_ready(client), 20, "nine ready sessions", bridge.logs)
        watch = Watch(client)
        writer.start()
        sender.start()
        for round_ in range(kills):
            time.sleep(rng.uniform(0.5, 1.5))
            victim = rng.choice([p for p in pollers if p.poll() is None])
            member = next(m for m in members(client) if pid_of(m) == victim.pid)
            before = holders(client)
            theirs = [b for b in BOTS if before[b] and before[b][0] == member]  # type: ignore[index]
            killed_at = time.time()
            kill9(victim)
            pending = set(theirs)
            deadline = time.monotonic() + 30
            while pending and time.monotonic() < deadline:
                for bot in sorted(pending):
                    if ready(client, bot, fence=before[bot][1], since=killed_at):  # type: ignore[index]
                        takeovers[f"{round_}:{ACCOUNT_OF[bot]}"] = time.time() - killed_at
                        pending.discard(bot)
                time.sleep(0.05)
            assert not pending, f"not taken over: {pending}\n{bridge.logs()}"
            if round_ + 1 < kills:
                pollers.append(bridge.spawn("poller"))
                wait_spread(client, [3, 3, 3], 20, bridge)
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in (writer, sender):
            if thread.is_alive():
                thread.join()
        if watch is not None:
            watch.close()

    try:
        fetched, withdrawn = inbound_fate(sim, said)
        wait_for(lambda: fetched <= set(by_text(receiver)), 30, "a webhook per IM", bridge.logs)
        time.sleep(1.0)  # anything repeated would have arrived by now
        received = by_text(receiver)
        replaced, fenced = replaced_gets(sim), fences(client)
        apps = applications(sim)
        sent = outcome(bridge, ledger, timeout=60)
        senders = {m["text"]: m["from"] for who in WRITERS for m in bridge.inbox(who)}
    finally:
        bridge.stop_all()
        sim.stop()
    duplicated = [t for t, ids in received.items() if len(ids) > 1]
    lost = fetched - set(received)
    report(
        seed=seed,
        kills=kills,
        inbound=len(said),
        inbound_lost=len(lost) + len(withdrawn),
        inbound_duplicated=len(duplicated),
        takeover_max_s=max(takeovers.values()),
        takeover_mean_s=sum(takeovers.values()) / len(takeovers),
        handovers=sum(fenced.values()) - len(BOTS),
        outbound=sent.accepted,
        outbound_delivered=sent.delivered,
        outbound_refused=sum(ledger.refused.values()),
        outbound_retries=sent.retries,
    )
    print("takeovers: " + " ".join(f"{k}={v:.1f}s" for k, v in sorted(takeovers.items())))
    assert refused == 0
    assert withdrawn == set(), "UCWA withdrew IMs nobody fetched in time"
    assert not lost and not duplicated
    assert set(received) == {text for _, _, text in said}
    for text, ids in received.items():
        tagged = {e["data"].get("account") for e in ids.values()}
        assert tagged <= {None, text.split()[2]}, (text, tagged)
    assert watch is not None and watch.samples > 0 and watch.backwards == []
    assert all(replaced[b] <= fenced[b] - 1 for b in BOTS), (replaced, fenced)
    assert all(len(a) == 1 for a in apps.values()), apps
    assert max(takeovers.values()) < LEASE_S + 5
    assert not ledger.refused, ledger.refused
    sent.check()  # none lost, none doubled, each line in order
    assert sent.accepted > 0 and sent.delivered == sent.accepted
    wrong = {
        text: senders.get(text)
        for text, account in sent_from.items()
        if ACCOUNT_OF.get(senders.get(text, "")) != account
    }
    assert not wrong, f"sent from another account: {wrong}"


def inbound_fate(sim: Simulator, said: list[tuple[str, str, str]]) -> tuple[set[str], set[str]]:
    """Texts the bots' applications fetched, and texts UCWA withdrew unread."""
    ours = {text for _, _, text in said}

    def sent() -> list[dict[str, Any]]:
        return [
            s for who in WRITERS for s in sim_call(sim, "GET", f"/_sim/users/{who}/sent")
            if s["text"] in ours
        ]  # fmt: skip

    wait_for(
        lambda: all(s["status"] in ("delivered", "failed") for s in sent()),
        30,
        "every IM to be fetched or dropped",
    )
    fetched = {s["text"] for s in sent() if s["status"] == "delivered"}
    return fetched, {s["text"] for s in sent() if s["status"] != "delivered"}


def by_text(receiver: WebhookReceiver) -> dict[str, dict[str, dict[str, Any]]]:
    """message.received texts → their events by webhook id (retries of one count once)."""
    found: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for event in events(receiver, "message.received"):
        found[event["data"]["text"]][event["id"]] = event
    return dict(found)


def test_a_killed_pool_process_accounts_are_taken_over_quick(
    redis_url: str,
    redis_client: redis.Redis,
    tmp_path: Path,
    receiver: WebhookReceiver,
    report: Report,
    seed: int,
) -> None:
    run_kills(redis_url, redis_client, tmp_path, receiver, report, seed, kills=1)


@pytest.mark.long
@pytest.mark.timeout(600)
def test_a_killed_pool_process_accounts_are_taken_over_long(
    redis_url: str,
    redis_client: redis.Redis,
    tmp_path: Path,
    receiver: WebhookReceiver,
    report: Report,
    seed: int,
) -> None:
    run_kills(redis_url, redis_client, tmp_path, receiver, report, seed, kills=8)
