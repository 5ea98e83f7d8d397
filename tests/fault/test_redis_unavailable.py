"""Redis unavailable three ways while the bridge runs: read-only (a demoted master pointed at a
dead one), out of memory (``noeviction``), and SIGKILLed then restarted from its append-only file.

Each fault lasts longer than the poller lease. Throughout, no role exits; the API refuses with a
503 problem (never a 500); afterwards every message accepted before or during the fault is
delivered once, its status webhook arrives under one id, and the lone poller's ``/readyz`` is
ready again within the lease plus 5 s of the fault's end.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable

import redis

from bridge.config.embedded_redis import EmbeddedRedis, free_port
from tests.e2e.conftest import BRIDGE_ENV, Bridge, MakeBridge, events, wait_for, webhook_env
from tests.fault.conftest import (
    FAULT_ENV,
    PEOPLE,
    Ledger,
    Report,
    add_people,
    outcome,
    settled_at,
)
from tests.fault.test_redis_restart import own_redis, restart_exited  # noqa: F401 - fixture
from tests.webhooks.receiver import WebhookReceiver

OUTAGE_S = 4.0  # longer than the lease (BRIDGE_POLLER_LEASE_S = 2 in the e2e settings)
LEASE_S = float(BRIDGE_ENV["BRIDGE_POLLER_LEASE_S"])
READY_TARGET_S = LEASE_S + 5

Fault = tuple[Callable[[], object], Callable[[], object]]


def faults(server: EmbeddedRedis) -> dict[str, Fault]:
    admin = redis.Redis(port=server.port, socket_connect_timeout=1)

    def restart() -> None:
        server.start()

    return {
        "read_only": (
            lambda: admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port())),
            lambda: admin.execute_command("REPLICAOF", "NO", "ONE"),
        ),
        "out_of_memory": (
            lambda: (
                admin.config_set("maxmemory-policy", "noeviction"),
                admin.config_set("maxmemory", "1"),
            ),
            lambda: admin.config_set("maxmemory", "0"),
        ),
        "restart": (lambda: server.stop(kill=True), restart),
    }


def refused_as_problem(bridge: Bridge) -> bool:
    """A POST now is refused with a 503 problem that says when to retry."""
    response = bridge.post({"to": PEOPLE[7], "text": "refused while Redis is unavailable"})
    if response.status_code == 202:
        return False
    assert response.status_code == 503, response.text
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert response.headers.get("Retry-After")
    return True


def test_every_role_survives_redis_read_only_full_and_restarted(
    make_bridge: MakeBridge,
    own_redis: EmbeddedRedis,  # noqa: F811 - the fixture imported above
    receiver: WebhookReceiver,
    report: Report,
) -> None:
    # A send cut off by the fault holds its per-message lock until it lapses (the lock's floor is
    # 60 s; a shorter UCWA timeout keeps it there), then the poller's sweep starts it again.
    env = {**FAULT_ENV, **webhook_env(receiver), "BRIDGE_UCWA_TIMEOUT_S": "5"}
    bridge = make_bridge(start=False, own_redis=own_redis.url, env=env)
    bridge.start_api()
    bridge.start_poller()
    bridge.start_worker()
    bridge.start_worker()
    add_people(bridge)
    wait_for(lambda: bridge.ready() == 200, 20, "the bridge to be ready", bridge.logs)
    ledger = Ledger()
    recovery: dict[str, float] = {}
    exited: Counter[str] = Counter()
    endings: list[str] = []
    n = 0
    for name, (begin, end) in faults(own_redis).items():
        for _ in range(3):  # accepted just before the fault: in flight when it starts
            ledger.post(bridge, PEOPLE[n % 6], f"ru {name} before #{n}")
            n += 1
        begin()
        started = time.monotonic()
        wait_for(lambda: refused_as_problem(bridge), 10, f"the API to refuse ({name})")
        while time.monotonic() - started < OUTAGE_S:
            ledger.post(bridge, PEOPLE[n % 6], f"ru {name} during #{n}")  # counted if accepted
            n += 1
            time.sleep(0.3)
        assert bridge.ready() == 503, f"/readyz stayed ready through {name}"
        end()
        ended = time.monotonic()
        wait_for(lambda: bridge.ready() == 200, 60, f"/readyz after {name}", bridge.logs)
        recovery[name] = time.monotonic() - ended
        print(f"\n{name}: /readyz ready {recovery[name]:.1f}s after the fault ended")
        exited.update(restart_exited(bridge, endings))
        for _ in range(3):
            ledger.post(bridge, PEOPLE[n % 6], f"ru {name} after #{n}")
            n += 1

    faults_over = time.time()
    result = outcome(bridge, ledger, timeout=120)
    slowest = max((settled_at(m) for m in result.finals.values()), default=faults_over)
    delivered_ids = [i for i, m in result.finals.items() if m.get("status") == "delivered"]
    wait_for(
        lambda: len(events(receiver, "message.delivered")) >= len(delivered_ids),
        30,
        "a status webhook per delivered message",
    )
    statuses = events(receiver, "message.delivered")
    ids_per_message = Counter(e["data"]["message_id"] for e in statuses)
    webhook_dupes = sum(c - 1 for c in ids_per_message.values() if c > 1)
    exited.update(restart_exited(bridge, endings))
    stop_s = stop_with_redis_down(bridge, own_redis)
    report(
        trials=len(recovery),
        refused=sum(ledger.refused.values()),
        **result.figures(),
        webhook_duplicates=webhook_dupes,
        **{f"ready_{k}_s": v for k, v in recovery.items()},
        all_final_s=max(slowest - faults_over, 0.0),
        sigterm_redis_down_max_s=max(stop_s.values()),
        exited=dict(exited),
    )
    assert set(ledger.refused) <= {"503"}, ledger.refused
    result.check()
    assert result.delivered == result.accepted
    assert set(ids_per_message) >= set(delivered_ids)
    assert webhook_dupes == 0
    assert not exited, f"roles exited: {dict(exited)}\n\n" + "\n\n".join(endings)
    for name, seconds in recovery.items():
        assert seconds <= READY_TARGET_S, f"{name}: /readyz took {seconds:.1f}s"
    assert max(stop_s.values()) < 5, stop_s


def stop_with_redis_down(bridge: Bridge, server: EmbeddedRedis) -> dict[str, float]:
    """SIGTERM the poller and the workers while Redis is down: each exits 0, and how fast."""
    server.stop(kill=True)
    time.sleep(1.0)
    took: dict[str, float] = {}
    for role in ("poller", "worker"):
        for number, proc in enumerate(bridge.procs[role]):
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0, bridge.logs()
            took[f"{role}{number}"] = time.monotonic() - started
    server.start()
    return took
