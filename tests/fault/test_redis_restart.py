"""Redis SIGKILLed and restarted from its append-only file in the middle of a steady load.

The API keeps being called throughout: what got a 202 must end delivered or failed with a
reason and be received once; while Redis is away the API refuses (503) rather than accept what
it cannot keep. Every role stays up and reconnects on its own (a role that exited anyway would
be restarted, as its orchestrator would, and counted).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from bridge.config.embedded_redis import EmbeddedRedis
from tests.e2e.conftest import Bridge, MakeBridge, wait_for
from tests.fault.conftest import FAULT_ENV, PEOPLE, Ledger, Report, add_people, outcome


@pytest.fixture()
def own_redis() -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis().start()
    yield server
    server.close()


def run_restarts(
    make_bridge: MakeBridge,
    own_redis: EmbeddedRedis,
    report: Report,
    seed: int,
    restarts: int,
    load_s: float,
) -> None:
    rng = random.Random(seed)
    bridge = make_bridge(start=False, own_redis=own_redis.url, env=FAULT_ENV)
    bridge.start_api()
    bridge.start_poller()
    bridge.start_worker()
    bridge.start_worker()
    add_people(bridge)
    ledger = Ledger()
    stop = threading.Event()

    def load() -> None:
        n = 0
        while not stop.is_set():
            ledger.post(bridge, PEOPLE[n % 6], f"rr {seed} #{n}")
            n += 1
            time.sleep(0.05)

    sender = threading.Thread(target=load)
    sender.start()
    exited: Counter[str] = Counter()
    endings: list[str] = []
    api_back: list[float] = []
    ready_back: list[float] = []
    try:
        for _ in range(restarts):
            time.sleep(rng.uniform(1.0, load_s / restarts))
            own_redis.stop(kill=True)  # only what reached the append-only file survives
            time.sleep(rng.uniform(1.0, 3.0))
            before = len(ledger.sent)
            own_redis.start()
            restarted = time.monotonic()
            wait_for(
                lambda before=before: len(ledger.sent) > before,
                30,
                "a 202 after the restart",
                bridge.logs,
            )
            api_back.append(time.monotonic() - restarted)
            wait_for(lambda: bridge.ready() == 200, 30, "/readyz after the restart", bridge.logs)
            ready_back.append(time.monotonic() - restarted)
            exited.update(restart_exited(bridge, endings))
        time.sleep(2.0)
    finally:
        stop.set()
        sender.join()

    result = outcome(bridge, ledger, timeout=90)
    exited.update(restart_exited(bridge, endings))
    report(
        seed=seed,
        trials=restarts,
        refused=sum(ledger.refused.values()),
        **result.figures(),
        api_back_max_s=max(api_back),
        ready_back_max_s=max(ready_back),
        exited=dict(exited),
    )
    assert set(ledger.refused) <= {"503"}, ledger.refused
    result.check()
    assert result.delivered == result.accepted
    # RQ's own loop gives up when Redis fails under a running job; ``ucwa-bridge worker``
    # waits for Redis and starts it again, so no role needs its orchestrator.
    assert not exited, "\n\n".join(endings)


def restart_exited(bridge: Bridge, endings: list[str]) -> Counter[str]:
    """Start a fresh process for every role that exited, as compose or Kubernetes would; how
    each ended goes on ``endings``."""
    exited: Counter[str] = Counter()
    for role, procs in list(bridge.procs.items()):
        for proc in list(procs):
            if proc.poll() is not None:
                procs.remove(proc)
                exited[role] += 1
                endings.append(bridge.exit_report(proc))
                if role == "api":
                    bridge.start_api()
                else:
                    bridge.spawn(role)
    return exited


def test_redis_restarted_under_load_quick(
    make_bridge: MakeBridge, own_redis: EmbeddedRedis, report: Report, seed: int
) -> None:
    run_restarts(make_bridge, own_redis, report, seed, restarts=1, load_s=4)


@pytest.mark.long
@pytest.mark.timeout(600)
def test_redis_restarted_under_load_long(
    make_bridge: MakeBridge, own_redis: EmbeddedRedis, report: Report, seed: int
) -> None:
    run_restarts(make_bridge, own_redis, report, seed, restarts=5, load_s=40)
