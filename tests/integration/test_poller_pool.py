"""Poller pools serving nine accounts on real Redis and the simulator.

In this process: a given-up account's parked event GET ends at once and its lease goes only
after it; nine accounts in one pool keep their leases and keep-alives however slow UCWA answers;
each poller sweeps its own recipient lines. As ``ucwa-bridge poller`` subprocesses: three pools
share nine accounts three each, and a fourth takes its share within one lease period; with the
single-account settings, two processes are one active poller and one standby, as ever.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from bridge.config.accounts import Account
from bridge.config.redis_faults import Outage
from bridge.config.redis_text import text
from bridge.outbound.messages import LINES_KEY
from bridge.session.lease import PollerLease
from bridge.ucwa.auth import Credentials
from tests.e2e.conftest import wait_for
from tests.integration.pool_harness import (
    BOTS,
    PASSWORD,
    accounts,
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
    spread,
    wait_spread,
)
from ucwasim import Simulator
from workers.poller import Poller, PollerSettings
from workers.poller_pool import PollerPool

FAST = PollerSettings(lease_ttl_s=1.0, keepalive_s=0.5, sweep_s=0.5, backoff_cap_s=1.0)


def parked(sim: Simulator, count: int = 1) -> bool:
    """At least ``count`` event GETs are waiting for events (no answer yet)."""
    log = sim_call(sim, "GET", "/_sim/requests")["requests"]
    return sum(1 for r in log if r["kind"] == "events" and r["status"] is None) >= count


def poller(client: redis.Redis, sim: Simulator, settings: PollerSettings = FAST) -> Poller:
    return Poller(client, Credentials(BOTS[0], PASSWORD), sim.discovery_url, settings)


@pytest.fixture()
def slow_simulator() -> Iterator[Simulator]:
    """Real seconds: an event GET stays parked 180 s unless the client gives it up."""
    sim = Simulator(sim_config(time_scale=1.0)).start()
    try:
        yield sim
    finally:
        sim.stop()


def test_a_given_up_account_ends_its_parked_event_get_at_once(
    redis_client: redis.Redis, slow_simulator: Simulator
) -> None:
    sim = slow_simulator
    first = poller(redis_client, sim)
    assert first.lease.try_acquire()
    first.start()
    wait_for(lambda: ready(redis_client, BOTS[0]) and parked(sim), 10, "a parked event GET")

    started = time.monotonic()
    first.stop(handover=True)
    assert first.join(5)
    released = time.monotonic() - started
    assert PollerLease.current(redis_client, BOTS[0]) is None
    assert ready(redis_client, BOTS[0])  # a handover leaves the session to the workers

    second = poller(redis_client, sim)
    assert second.lease.try_acquire()
    second.start()
    wait_for(lambda: ready(redis_client, BOTS[0], fence=1) and parked(sim), 10, "the new reader")
    time.sleep(1.0)  # a reader still running would replace the new GET (and be replaced) by now
    second.stop()
    assert second.join(5)
    assert redis_client.hget(f"session:{BOTS[0]}", "state") == b"stopped"
    print(f"\nreleased {released * 1000:.0f} ms after stop (event timeout 180 s)")
    assert released < 0.5
    assert replaced_gets(sim)[BOTS[0]] == 1  # the first reader's GET, once, by the second
    assert len(applications(sim)[BOTS[0]]) == 1  # re-attached, not a second application


def test_nine_accounts_in_one_process_keep_their_leases_however_slow_ucwa_is(
    redis_client: redis.Redis,
) -> None:
    """reportMyActivity takes 2.5 s, more than twice the 1 s lease: renewal never waits on it."""
    sim = Simulator(sim_config(time_scale=0.2, latency_ms=100)).start()
    pool = PollerPool(redis_client, accounts(sim), build(redis_client), FAST)
    thread = threading.Thread(target=pool.run, daemon=True)
    try:
        sim_call(sim, "POST", "/_sim/faults", {"match": {"kind": "reportMyActivity"},
                                               "delay_ms": 2500})  # fmt: skip
        thread.start()
        wait_for(lambda: all_ready(redis_client), 20, "nine ready sessions")
        lowest = 1000
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            for bot in BOTS:
                lowest = min(lowest, int(redis_client.pttl(f"poller:lease:{bot}")))
            time.sleep(0.05)

        def kept_alive() -> bool:
            log = sim_call(sim, "GET", "/_sim/requests")["requests"]
            done = {r["user"] for r in log if r["kind"] == "reportMyActivity" and r["status"]}
            return done >= set(BOTS)

        wait_for(kept_alive, 10, "a keep-alive from every account")
    finally:
        pool.stop()
        thread.join(15)
        sim.stop()
    print(f"\nlowest lease TTL left over 4 s: {lowest} ms of 1000")
    assert not thread.is_alive()
    assert set(fences(redis_client).values()) == {1}  # never lost, never taken again
    assert lowest > 100  # renewed every third of the TTL: it never came near lapsing
    assert all(PollerLease.current(redis_client, bot) is None for bot in BOTS)


def build(client: redis.Redis) -> Callable[[Account, str, Outage], Poller]:
    def make(account: Account, holder: str, outage: Outage) -> Poller:
        return Poller(
            client,
            Credentials(account.username, account.password),
            account.discovery_url,
            FAST,
            account_id=account.id,
            holder=holder,
            outage=outage,
        )

    return make


def test_each_poller_sweeps_only_its_own_accounts_lines(redis_client: redis.Redis) -> None:
    """Lines with nothing waiting leave the set of lines: only the sweeping account's do."""
    lines = {"sip:x@contoso.com", "conv:7", "a2|sip:y@contoso.com", "a3|sip:z@contoso.com"}
    redis_client.sadd(LINES_KEY, *lines)
    url = "http://127.0.0.1:9/discover"
    second = Poller(redis_client, Credentials(BOTS[1], PASSWORD), url, FAST, account_id="a2")
    second._sweep(None)  # type: ignore[arg-type]  # no conversation of its own to stop
    assert {text(m) for m in redis_client.smembers(LINES_KEY)} == lines - {"a2|sip:y@contoso.com"}
    default = Poller(redis_client, Credentials(BOTS[0], PASSWORD), url, FAST)
    default._sweep(None)  # type: ignore[arg-type]
    assert {text(m) for m in redis_client.smembers(LINES_KEY)} == {"a3|sip:z@contoso.com"}


def test_three_processes_share_nine_accounts_and_a_fourth_takes_its_share(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    simulator = Simulator(sim_config()).start()
    bridge = pool_bridge(redis_url, tmp_path, simulator)
    try:
        for _ in range(3):
            bridge.spawn("poller")
        wait_for(lambda: len(members(redis_client)) == 3, 20, "three members", bridge.logs)
        settle = wait_spread(redis_client, [3, 3, 3], 15, bridge)
        wait_for(lambda: all_ready(redis_client), 20, "nine ready sessions", bridge.logs)
        assert set(spread(redis_client)) == set(members(redis_client))
        before = holders(redis_client)

        bridge.spawn("poller")
        wait_for(lambda: len(members(redis_client)) == 4, 20, "the fourth member", bridge.logs)
        joined = time.monotonic()
        newcomer = members(redis_client)[-1]  # the latest to join sorts last
        taken = wait_spread(redis_client, [3, 2, 2, 2], 10, bridge)
        after = holders(redis_client)
        moved = [bot for bot in BOTS if after[bot] != before[bot]]
        wait_for(lambda: all(ready(redis_client, bot) for bot in moved), 10, "moved sessions ready")
        serving = time.monotonic() - joined
        time.sleep(1.0)  # nothing else moves
        assert holders(redis_client) == after
        bridge.stop_all()
        replaced, fenced = replaced_gets(simulator), fences(redis_client)
        apps = applications(simulator)
    finally:
        bridge.stop_all()
        simulator.stop()
    print(
        f"\n3/3/3 {settle:.1f}s after three members; 3/2/2/2 {taken:.1f}s after the fourth "
        f"joined, its accounts serving after {serving:.1f}s (lease 2 s)"
    )
    assert sorted(after[b][0] for b in moved if after[b]) == [newcomer, newcomer]  # type: ignore[index]
    assert taken < 2.0  # within one lease period
    assert all(replaced[bot] <= fenced[bot] - 1 for bot in BOTS), (replaced, fenced)
    assert all(len(a) == 1 for a in apps.values()), apps  # re-attached, never a second one
    assert all(proc.returncode == 0 for proc in bridge.procs["poller"])
    assert spread(redis_client) == {}  # every lease released on SIGTERM
    assert members(redis_client) == []  # and every member left


def test_one_account_two_processes_one_serves_and_the_other_stands_by(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """The single-account settings: as before pools, one active poller and one standby that
    names the lease holder; the standby stops at once and leaves the lease alone."""
    simulator = Simulator(sim_config()).start()
    bridge = pool_bridge(redis_url, tmp_path, simulator)
    del bridge.env["BRIDGE_ACCOUNTS"]
    bridge.env.update({"BRIDGE_UCWA_USERNAME": BOTS[0], "BRIDGE_UCWA_PASSWORD": PASSWORD})
    try:
        active = bridge.spawn("poller")
        wait_for(lambda: ready(redis_client, BOTS[0]), 20, "the session", bridge.logs)
        standby = bridge.spawn("poller")
        wait_for(lambda: len(members(redis_client)) == 2, 20, "two members", bridge.logs)
        time.sleep(1.0)  # a few rounds of the standby
        lease = PollerLease.current(redis_client, BOTS[0])
        assert lease is not None
        standby.terminate()
        assert standby.wait(5) == 0
        after = PollerLease.current(redis_client, BOTS[0])
        assert after is not None and (after.holder, after.fence) == (lease.holder, 1)
        assert ready(redis_client, BOTS[0])
        assert active.poll() is None
    finally:
        bridge.stop_all()
        simulator.stop()
    lines = [json.loads(line) for line in (tmp_path / "poller-1.log").read_text().splitlines()]
    standing = [e for e in lines if e["message"].startswith("standing by")]
    assert [(e["account"], e["lease_holder"]) for e in standing] == [("default", lease.holder)]
    assert not [e for e in lines if e["message"] == "poller active"]
    assert [e["accounts"] for e in lines if e["message"] == "shutting down"] == [0]
    assert str(active.pid) in lease.holder  # the member id names the process
