"""Inbound: a simulated user sends the bridge's account M IMs; how soon does each webhook arrive?

The simulator (``--latency-ms`` on every UCWA request, so the poller's event GETs pay a
realistic round trip) lets ``sip:alice`` send through its control API; the poller takes each
IM from the event channel and stages a ``message.received`` event; an RQ worker signs and POSTs
it to a receiver in this process, which notes the arrival time. Latency runs from the
simulator's send time (its outbox entry) to arrival; both clocks are this machine's. Paced
messages give latency at a steady load; a burst gives throughput. The headline ratios compare
the latency with one UCWA round trip measured in the same run.

    python -m bench.inbound [--quick] [--messages M] [--rate R] [--latency-ms L]
"""

from __future__ import annotations

import base64
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from bench._common import (
    BOT,
    BOT_PASSWORD,
    BenchError,
    Report,
    Stack,
    base_parser,
    http,
    percentile,
    ratio,
    round_trip_ms,
    run_main,
    say,
)
from bench.webhooks import Receiver

SENDER = "sip:alice@contoso.com"
TIME_SCALE = 0.05
SIM_CONFIG = {
    "time_scale": TIME_SCALE,
    # Incoming IMs wait up to 30 s (not 1.5 s at this time scale) for an event GET: a burst
    # measures the bridge, not the simulator dropping what the poller has not fetched yet.
    "message_timeout": 30 / TIME_SCALE,
}
BRIDGE_ENV = {"BRIDGE_KEEPALIVE_S": "10"}  # the activity expiry is 45 s at this time scale
POST_THREADS = 4


@dataclass
class Batch:
    sent_at: dict[str, float] = field(default_factory=dict)  # text -> simulator send time
    arrived_at: dict[str, float] = field(default_factory=dict)

    @property
    def latencies_ms(self) -> list[float]:
        return [(self.arrived_at[t] - self.sent_at[t]) * 1000 for t in self.sent_at]

    @property
    def rate(self) -> float:
        span = max(self.arrived_at.values()) - min(self.sent_at.values())
        return ratio(len(self.sent_at), span)


class InboundBench:
    def __init__(self, stack: Stack, receiver: Receiver) -> None:
        self.stack = stack
        self.receiver = receiver
        self.sequence = 0

    def start(self, latency_ms: int) -> None:
        secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
        self.stack.start_redis()
        users = [
            {"sip": BOT, "password": BOT_PASSWORD, "name": "Bridge Bot"},
            {"sip": SENDER, "password": "pw", "name": "Alice Adams"},
        ]
        self.stack.start_sim(users, latency_ms=latency_ms, **SIM_CONFIG)
        self.stack.env_extra.update(
            BRIDGE_ENV,
            BRIDGE_WEBHOOK_URL=self.receiver.url,
            BRIDGE_WEBHOOK_SECRET=secret,
            BRIDGE_WEBHOOK_ALLOW_PRIVATE="true",
        )
        self.stack.start_poller()
        self.stack.start_worker()

    def send_one(self, text: str) -> float:
        """The simulated user sends ``text``; returns the simulator's send time."""
        body = json.dumps({"to": BOT, "text": text}).encode()
        url = f"{self.stack.sim_url}/_sim/users/{SENDER}/messages"
        status, raw = http("POST", url, body, {"Content-Type": "application/json"})
        if status >= 300:
            raise BenchError(f"the simulator refused to send: {status} {raw[:200]!r}")
        return float(json.loads(raw)["time"])

    def batch(self, count: int, rate: float | None) -> Batch:
        """``count`` IMs, all at once (``rate`` None) or ``rate`` per second; waits for every
        webhook."""
        texts = []
        for _ in range(count):
            self.sequence += 1
            texts.append(f"inbound {self.sequence:06d} ".ljust(100, "."))
        result = Batch()
        started = time.monotonic()

        def send(index: int) -> float:
            if rate:
                time.sleep(max(0.0, started + index / rate - time.monotonic()))
            return self.send_one(texts[index])

        with ThreadPoolExecutor(1 if rate else POST_THREADS) as pool:
            result.sent_at = dict(zip(texts, pool.map(send, range(count)), strict=True))
        wanted = set(texts)
        self.stack.wait_for(
            lambda: self._collect(result, wanted), 120, f"{count} webhooks", interval=0.05
        )
        return result

    def _collect(self, result: Batch, wanted: set[str]) -> bool:
        with self.receiver.lock:
            arrivals = list(self.receiver.arrivals)
        for arrived, body in arrivals:
            event = json.loads(body)
            text = event.get("data", {}).get("text")
            if event.get("type") == "message.received" and text in wanted:
                result.arrived_at.setdefault(text, arrived)
        return len(result.arrived_at) == len(wanted)


def figures(values: list[float]) -> str:
    return " / ".join(f"{percentile(values, p):.0f}" for p in (50, 95, 99)) + " ms"


def main() -> Report:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--messages", type=int, help="IMs in the burst and in the paced run")
    parser.add_argument("--rate", type=float, default=10.0, help="paced IMs per second")
    parser.add_argument("--latency-ms", type=int, default=20, help="simulator latency")
    args = parser.parse_args()
    count = args.messages or (20 if args.quick else 400)
    paced_count = max(4, count // 4)
    report = Report("inbound: simulated user -> poller -> webhook arrival")
    receiver = Receiver()
    try:
        with Stack("inbound", keep_logs=args.keep_logs) as stack:
            say(f"starting redis, the simulator ({args.latency_ms} ms), poller and one worker…")
            bench = InboundBench(stack, receiver)
            bench.start(args.latency_ms)
            rtt = round_trip_ms(stack.discovery_url)
            stack.wait_for(lambda: _can_send(bench), 30, "the bot to be available")
            bench.batch(3, None)  # warm-up: the conversation, imports, connections
            say(f"{paced_count} IMs at {args.rate:.0f}/s, then a burst of {count}…")
            paced = bench.batch(paced_count, args.rate)
            burst = bench.batch(count, None)
    finally:
        receiver.close()

    paced_p50, paced_p99 = percentile(paced.latencies_ms, 50), percentile(paced.latencies_ms, 99)
    report.ratio(
        "webhook latency p50 / UCWA round trip, paced",
        ratio(paced_p50, rtt),
        f"{paced_p50:.0f} vs {rtt:.0f} ms",
    )
    report.ratio(
        "webhook latency p99 / UCWA round trip, paced",
        ratio(paced_p99, rtt),
        f"{paced_p99:.0f} vs {rtt:.0f} ms",
    )
    report.raw("webhook latency p50/p95/p99, paced", figures(paced.latencies_ms))
    report.raw(
        "throughput, paced", f"{paced.rate:.1f} IM/s (offered {args.rate:.0f}/s, {paced_count})"
    )
    report.raw("webhook latency p50/p95/p99, burst", figures(burst.latencies_ms))
    report.raw(
        "throughput, burst",
        f"{burst.rate:.1f} IM/s ({count} IMs, first send to last webhook)",
    )
    report.raw("one UCWA round trip", f"{rtt:.1f} ms, measured")
    report.note(
        f"one simulated sender, one conversation; simulator latency {args.latency_ms} ms per "
        f"UCWA request, time scale {TIME_SCALE}; one poller, one worker; the receiver answers "
        "200 and runs in this process"
    )
    return report


def _can_send(bench: InboundBench) -> bool:
    """The simulator answers 409 until the poller's application is available."""
    url = f"{bench.stack.sim_url}/_sim/users"
    status, raw = http("GET", url)
    users = json.loads(raw) if status == 200 else []
    bot = next((u for u in users if u["sip"] == BOT), None)
    return bot is not None and any(a["available"] for a in bot["applications"])


if __name__ == "__main__":
    raise SystemExit(run_main(main))
