"""Hostile event payloads: whatever UCWA puts in an event, no poller stops and nothing else is
lost. A proxy rewrites the event channel's answers on their way to the bridge: half an emoji in
a display name, then any field of any event replaced by hostile values at a rate.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.conftest import ALICE, BOB, BOT, Bridge, MakeBridge, events, wait_for, webhook_env
from tests.fault.conftest import (
    FAULT_ENV,
    PEOPLE,
    Ledger,
    Outcome,
    Report,
    add_people,
    outcome,
)
from tests.rewriting_proxy import RewritingProxy
from tests.webhooks.receiver import WebhookReceiver

Mutate = Callable[[Any], Any]


def on_events(mutate: Mutate) -> Callable[[str, str, int, bytes], bytes]:
    """A proxy rewrite applying ``mutate`` to the JSON of every non-empty event batch."""

    def rewrite(method: str, path: str, status: int, body: bytes) -> bytes:
        if method != "GET" or "/events" not in path or status != 200 or b'"sender"' not in body:
            return body
        batch = json.loads(body)
        # ensure_ascii: a lone surrogate travels as the \\ud83d escape a UTF-16 server writes
        return json.dumps(mutate(batch)).encode()

    return rewrite


def names_cut_in_half(batch: Any) -> Any:
    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: ("Lene \ud83d" if k == "name" else walk(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(batch)


def pollers_alive(bridge: Bridge) -> bool:
    return all(proc.poll() is None for proc in bridge.procs["poller"])


def say(bridge: Bridge, sip: str, text: str) -> None:
    bridge.sim_call("POST", f"/_sim/users/{sip}/messages", {"to": BOT, "text": text})


def test_a_display_name_cut_in_half_reaches_the_webhook_repaired_and_no_poller_stops(
    make_bridge: MakeBridge, receiver: WebhookReceiver
) -> None:
    proxy = RewritingProxy().start()
    bridge = make_bridge(env={**FAULT_ENV, **webhook_env(receiver)}, proxy=proxy)
    bridge.start_poller(wait=False)  # a standby, which would read the same batch
    proxy.rewrite = on_events(names_cut_in_half)

    say(bridge, ALICE, "half an emoji in my name")
    wait_for(lambda: bool(events(receiver, "message.received")), 15, "the event", bridge.logs)
    [received] = events(receiver, "message.received")
    assert received["data"]["text"] == "half an emoji in my name"
    assert received["data"]["from"]["name"] == "Lene \ufffd"

    message_id = bridge.send(BOB, "sending still works")
    assert bridge.wait_final(message_id)[message_id]["status"] == "delivered"
    assert pollers_alive(bridge), bridge.logs()


# Values that have broken parsers before: unencodable text, control characters, other types
# where a string belongs, huge and deeply nested values, links off the session's host.
def hostile_values(rng: random.Random) -> Any:
    deep: Any = "x"
    for _ in range(rng.randint(20, 200)):
        deep = {"a": deep}
    return rng.choice(
        [
            "\ud83d",
            "\udc00 tail",
            "nul\x00inside",
            "\x1b[31mred",
            "",
            "x" * rng.randint(10_000, 200_000),
            None,
            0,
            -(2**63),
            1e308,
            True,
            [],
            {},
            ["a", {"b": None}],
            deep,
            "http://elsewhere.example/ucwa/oauth/v1/applications/1/events",
            "data:text/plain;charset=x-unknown;base64,@@@",
            "data:text/html;base64," + "A" * 7,
            "/ucwa/oauth/v1/applications/999/communication/conversations/none",
        ]
    )


def leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in leaves(v, (*path, k))] + [path]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in leaves(v, (*path, i))] + [path]
    return [path]


def set_at(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    value[path[0]] = set_at(value[path[0]], path[1:], new)
    return value


class Mutator:
    """Replaces one place inside one event of a batch (its events only: the cursor is the
    channel's, and a broken cursor is another test's business) with a hostile value."""

    def __init__(self, rng: random.Random, rate: float) -> None:
        self.rng, self.rate = rng, rate
        self.lock = threading.Lock()
        self.active = True
        self.mutations = 0

    def __call__(self, batch: Any) -> Any:
        with self.lock:
            if not self.active or self.rng.random() >= self.rate:
                return batch
            senders = batch.get("sender") or []
            places = [
                ("sender", i, "events", j, *p)
                for i, sender in enumerate(senders)
                for j, event in enumerate(sender.get("events") or [])
                for p in leaves(event)
            ]
            if not places:
                return batch
            self.mutations += 1
            return set_at(batch, self.rng.choice(places), hostile_values(self.rng))


def storm_figures(
    report: Report,
    bridge: Bridge,
    seed: int,
    trials: int,
    mutator: Mutator,
    result: Outcome,
    started: float,
    alive_during: bool,
    **extra: Any,
) -> None:
    """Report the run's figure line, then check what every storm must leave: no poller exited,
    something was mutated, every accepted message ended delivered or failed with a reason."""
    report(
        seed=seed,
        trials=trials,
        mutations=mutator.mutations,
        **extra,
        **result.figures(),
        codes=dict(result.codes),
        poller_exits=sum(proc.poll() is not None for proc in bridge.procs["poller"]),
        settle_s=time.monotonic() - started,
    )
    assert alive_during and pollers_alive(bridge), bridge.logs()
    assert mutator.mutations > 0
    result.check()


def on_answers(mutate: Mutate) -> Callable[[str, str, int, bytes], bytes]:
    """A proxy rewrite applying ``mutate`` to every JSON answer but the event channel's, the
    simulator's control API and the token grant: discovery, the application and its resources.
    (A garbled token is answered by 401 again, which the poller takes for rejected credentials
    and waits a minute, to keep the account from being locked out; the token parser has its own
    generated-input tests.)"""

    def rewrite(method: str, path: str, status: int, body: bytes) -> bytes:
        skip = ("/events" in path, path.startswith("/_sim"), "/oauthtoken" in path.lower())
        if any(skip) or not body.startswith(b"{"):
            return body
        try:
            document = json.loads(body)
        except ValueError:
            return body
        return json.dumps(mutate(document)).encode()

    return rewrite


class AnswerMutator(Mutator):
    """Replaces one place anywhere in a JSON answer with a hostile value."""

    def __call__(self, document: Any) -> Any:
        with self.lock:
            if not self.active or self.rng.random() >= self.rate:
                return document
            self.mutations += 1
            return set_at(document, self.rng.choice(leaves(document)), hostile_values(self.rng))


@pytest.mark.timeout(300)  # a garbled answer that reads as rejected credentials costs a minute
def test_hostile_values_in_any_other_ucwa_answer_quick(
    make_bridge: MakeBridge, report: Report, seed: int
) -> None:
    proxy = RewritingProxy().start()
    bridge = make_bridge(start=False, env=FAULT_ENV, proxy=proxy)
    mutator = AnswerMutator(random.Random(seed), rate=0.5)
    proxy.rewrite = on_answers(mutator)
    bridge.start_api()
    bridge.start_worker()
    bridge.start_poller(wait=False)
    bridge.start_poller(wait=False)
    add_people(bridge, PEOPLE[:4])
    ledger = Ledger()
    started = time.monotonic()
    for n in range(12):
        ledger.post(bridge, PEOPLE[n % 4], f"answers {seed} #{n}")
        if n % 4 == 3:  # a new application: discovery, token and bootstrap answers again
            bridge.sim_call("POST", "/_sim/expire", {"user": BOT, "what": "application"})
        time.sleep(0.5)
    alive_during = pollers_alive(bridge)
    with mutator.lock:
        mutator.active = False
    wait_for(
        lambda: bridge.session_state() == "ready", 60, "a session after the storm", bridge.logs
    )
    result = outcome(bridge, ledger, timeout=90)
    after = bridge.send(ALICE, f"after the storm {seed}")
    final = bridge.wait_final(after, timeout=60)[after]
    storm_figures(report, bridge, seed, 12, mutator, result, started, alive_during)
    assert final["status"] == "delivered", final


def run_poison(
    make_bridge: MakeBridge, receiver: WebhookReceiver, report: Report, seed: int, rounds: int
) -> None:
    proxy = RewritingProxy().start()
    bridge = make_bridge(env={**FAULT_ENV, **webhook_env(receiver)}, proxy=proxy)
    bridge.start_poller(wait=False)
    add_people(bridge, PEOPLE[:4])
    mutator = Mutator(random.Random(seed), rate=0.5)
    proxy.rewrite = on_events(mutator)
    ledger = Ledger()
    started = time.monotonic()
    for n in range(rounds):
        say(bridge, (ALICE, BOB)[n % 2], f"inbound {seed} #{n}")
        ledger.post(bridge, PEOPLE[n % 4], f"outbound {seed} #{n}")
        time.sleep(0.3)
    result = outcome(bridge, ledger, timeout=90)
    alive_during = pollers_alive(bridge)
    with mutator.lock:
        mutator.active = False
    say(bridge, ALICE, f"after the storm {seed}")
    wait_for(
        lambda: any(
            e["data"]["text"] == f"after the storm {seed}"
            for e in events(receiver, "message.received")
        ),
        30,
        "an inbound IM after the hostile batches",
        bridge.logs,
    )
    forwarded = len(events(receiver, "message.received"))
    quarantined = bridge.redis().llen(f"quarantine:{BOT}")
    storm_figures(
        report,
        bridge,
        seed,
        rounds,
        mutator,
        result,
        started,
        alive_during,
        quarantined=quarantined,
        inbound_forwarded=forwarded,
    )
    for raw in bridge.redis().lrange(f"quarantine:{BOT}", 0, -1):
        entry = json.loads(raw)
        assert entry["stage"] and entry["error"]


def test_hostile_values_in_any_event_field_quick(
    make_bridge: MakeBridge, receiver: WebhookReceiver, report: Report, seed: int
) -> None:
    run_poison(make_bridge, receiver, report, seed, rounds=20)


@pytest.mark.long
def test_hostile_values_in_any_event_field_long(
    make_bridge: MakeBridge, receiver: WebhookReceiver, report: Report, seed: int
) -> None:
    run_poison(make_bridge, receiver, report, seed, rounds=150)
