"""The webhook receiver misbehaves for a while (answers errors, answers too slowly, is down),
while IMs come in and messages end, then recovers.

Nothing may be lost: every IM the bot fetched and every status event reaches the receiver; and
nothing may arrive twice under different ids (a retry reuses its webhook-id, so a receiver that
dedupes on it handles each event once).
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, defaultdict
from typing import Any

import pytest
from standardwebhooks import Webhook

from tests.e2e.conftest import BOT, SECRET, MakeBridge, wait_for
from tests.fault.conftest import FAULT_ENV, PEOPLE, Ledger, Report, add_people, outcome
from tests.webhooks.receiver import Reply, WebhookReceiver

WRITERS = ["sip:alice@contoso.com", "sip:bob@contoso.com"]
PHASES = ("errors", "slow", "down")


def run_outages(
    make_bridge: MakeBridge, report: Report, seed: int, rounds: int, phase_s: float
) -> None:
    rng = random.Random(seed)
    receiver = WebhookReceiver().__enter__()
    port = receiver.port
    bridge = make_bridge(
        env={
            **FAULT_ENV,
            "BRIDGE_WEBHOOK_URL": receiver.url(),
            "BRIDGE_WEBHOOK_SECRET": SECRET,
            "BRIDGE_WEBHOOK_ALLOW_PRIVATE": "true",
            "BRIDGE_WEBHOOK_TIMEOUT_S": "1",
            # enough tries, spread over more than the longest outage
            "BRIDGE_WEBHOOK_SCHEDULE_S": ",".join(["0", "0.5", "1"] + ["2"] * 20),
        }
    )
    add_people(bridge)
    ledger = Ledger()
    said: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        n = 0
        while not stop.is_set():
            text = f"wh {seed} #{n}"
            bridge.sim_call(
                "POST", f"/_sim/users/{WRITERS[n % 2]}/messages", {"to": BOT, "text": text}
            )
            said.append(text)
            ledger.post(bridge, PEOPLE[n % 4], f"wh-out {seed} #{n}")
            n += 1
            time.sleep(0.25)

    receivers = [receiver]
    worker = threading.Thread(target=traffic)
    worker.start()
    outages: Counter[str] = Counter()
    recovered: list[float] = []
    try:
        time.sleep(1.0)
        for _ in range(rounds):
            for phase in rng.sample(PHASES, len(PHASES)):
                outages[phase] += 1
                if phase == "errors":
                    receiver.default = Reply(
                        rng.choice([500, 502, 503]), headers={"Retry-After": "1"}
                    )
                elif phase == "slow":
                    receiver.default = Reply(200, delay_s=1.5)  # past the 1 s timeout
                else:
                    receiver.__exit__(None, None, None)  # connections are refused
                time.sleep(rng.uniform(0.5, 1.5) * phase_s)
                if phase == "down":
                    receiver = WebhookReceiver(port=port).__enter__()
                    receivers.append(receiver)
                else:
                    receiver.default = Reply()
                healthy_at = time.monotonic()
                before = len(received(receivers))
                wait_for(
                    lambda before=before: len(received(receivers)) > before,
                    30,
                    "a delivery after recovery",
                )
                recovered.append(time.monotonic() - healthy_at)
        time.sleep(1.0)
    finally:
        stop.set()
        worker.join()

    result = outcome(bridge, ledger, timeout=60)

    def complete() -> bool:
        got = by_type(received(receivers))
        have_in = {d["text"] for d in got["message.received"].values()}
        have_out = {d["message_id"] for d in got["status"].values()}
        return set(said) <= have_in and set(ledger.ids) <= have_out

    wait_for(complete, 60, "every event after the outages", bridge.logs)
    time.sleep(2.0)  # retries still in flight would land now
    got = by_type(received(receivers))
    texts = Counter(d["text"] for d in got["message.received"].values())
    statuses = Counter(d["message_id"] for d in got["status"].values())
    twice = sum(c - 1 for c in texts.values()) + sum(c - 1 for c in statuses.values())
    attempts = sum(len(r.received) for r in receivers)
    ids = Counter(
        r.headers["webhook-id"] for rc in receivers for r in rc.received if 200 <= r.status < 300
    )
    dead = bridge.api_get("/webhooks/deliveries?status=dead")["items"]
    receiver.__exit__(None, None, None)
    events_total = len(got["message.received"]) + len(got["status"])
    report(
        seed=seed,
        trials=sum(outages.values()),
        outages=dict(outages),
        events=events_total,
        lost=len(set(said) - set(texts)) + len(set(ledger.ids) - set(statuses)) + len(dead),
        duplicated=twice,
        same_id_again=sum(c - 1 for c in ids.values()),
        attempts=attempts,
        retries=attempts - events_total,
        recover_max_s=max(recovered),
        messages=result.accepted,
        messages_lost=result.lost,
    )
    assert dead == []
    assert twice == 0
    assert set(texts) == set(said)
    assert set(statuses) == set(ledger.ids)
    result.check()


def received(receivers: list[WebhookReceiver]) -> list[Any]:
    return [r for rc in receivers for r in rc.received]


def by_type(requests: list[Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """Verified bodies answered 2xx, by webhook-id: ``message.received`` and status events."""
    found: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for request in requests:
        if not 200 <= request.status < 300:
            continue
        event = Webhook(SECRET).verify(request.body, request.headers)
        kind = "message.received" if event["type"] == "message.received" else "status"
        found[kind][event["id"]] = event["data"]
    return found


def test_webhook_receiver_errors_slow_and_down_quick(
    make_bridge: MakeBridge, report: Report, seed: int
) -> None:
    run_outages(make_bridge, report, seed, rounds=1, phase_s=2.0)


@pytest.mark.long
@pytest.mark.timeout(600)
def test_webhook_receiver_errors_slow_and_down_long(
    make_bridge: MakeBridge, report: Report, seed: int
) -> None:
    run_outages(make_bridge, report, seed, rounds=6, phase_s=4.0)
