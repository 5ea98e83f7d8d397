"""Redis killed and restarted (append-only, fsync always): what was accepted is still delivered,
once; the API answers 503 problems while Redis is away and every role reconnects on its own."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator

import pytest
import requests

from bridge.config.embedded_redis import EmbeddedRedis
from tests.e2e.conftest import ALICE, API_KEY, BOB, Bridge, wait_for


@pytest.fixture()
def own_redis() -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis().start()
    yield server
    server.close()


def test_accepted_messages_survive_a_redis_crash_and_are_sent_once(
    make_bridge: Callable[..., Bridge], own_redis: EmbeddedRedis
) -> None:
    bridge = make_bridge(start=False, own_redis=own_redis.url)
    bridge.start_api()
    bridge.start_poller()
    accepted = [bridge.send(ALICE if n % 2 else BOB, f"kept {n}") for n in range(6)]

    own_redis.stop(kill=True)  # SIGKILL: only what reached the append-only file survives
    down = bridge.post({"to": ALICE, "text": "while Redis is down"})
    assert down.status_code == 503, down.text
    assert down.headers["Content-Type"].startswith("application/problem+json")
    wait_for(lambda: bridge.ready() == 503, 15, "/readyz to report Redis down")

    own_redis.start()
    wait_for(lambda: bridge.ready() == 200, 30, "/readyz to recover", bridge.logs)
    bridge.start_worker()
    finals = bridge.wait_final(*accepted, timeout=60)
    assert {m["status"] for m in finals.values()} == {"delivered"}, finals
    alice = [m["text"] for m in bridge.inbox(ALICE)]
    bob = [m["text"] for m in bridge.inbox(BOB)]
    assert alice == [f"kept {n}" for n in (1, 3, 5)]  # each once, in order
    assert bob == [f"kept {n}" for n in (0, 2, 4)]
    headers = {"Authorization": f"Bearer {API_KEY}"}
    after = requests.post(
        bridge.api_url + "/messages", json={"to": BOB, "text": "after"}, headers=headers, timeout=10
    )
    assert after.status_code == 202


def test_readyz_says_why_when_the_poller_is_gone_and_recovers_with_a_new_one(
    make_bridge: Callable[..., Bridge],
) -> None:
    bridge = make_bridge()
    wait_for(lambda: bridge.ready() == 200, 20, "the bridge to be ready", bridge.logs)
    poller = bridge.procs["poller"][0]
    poller.send_signal(signal.SIGKILL)  # no clean release: the lease must run out
    poller.wait(timeout=5)
    wait_for(lambda: bridge.ready() == 503, 15, "/readyz to notice the dead poller")
    reasons = requests.get(bridge.api_url + "/readyz", timeout=5).json()
    assert any("poller" in r for r in reasons["reasons"]), reasons
    bridge.start_poller()
    wait_for(lambda: bridge.ready() == 200, 20, "/readyz to recover", bridge.logs)
