"""The outbound path: UCWA requests per message, then throughput and latency.

(a) N messages to a few recipients through the real bridge (POST /messages → RQ worker →
    simulator), counting the simulator's request log per message, side by side with a naive
    client that performs the documented SendAnIM.md flow against the same simulator.
(b) messages/s from the first POST to the last delivery, and accepted→delivered latency from
    each message's history, for 1 worker vs 2 workers, to cold recipients (no conversation
    yet) and to warm ones (an open conversation), in alternating rounds.

    python -m bench.send_path [--quick] [--messages N] [--rounds R]
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from bench._common import (
    BOT,
    BOT_PASSWORD,
    TEXT_100,
    ApiClient,
    BenchError,
    Child,
    Report,
    Stack,
    base_parser,
    cpu_s,
    percentile,
    ratio,
    run_main,
    say,
    tree_cpu_s,
)
from bench._naive import NaiveClient
from bridge.messages import parse_time

NAIVE = "sip:naive@contoso.com"
NAIVE_PASSWORD = "Naive-Passw0rd"
TIME_SCALE = 0.05  # the simulated recipient accepts an invitation after 1 s x 0.05 = 50 ms
POST_THREADS = 4
SHARED_KINDS = ("events", "reportMyActivity")  # the poller's long-poll and keep-alive
ROLES = ("api", "worker", "poller", "sim", "redis")
BRIDGE_ENV = {
    # The simulator's 15-minute activity expiry is 45 s at this time scale.
    "BRIDGE_KEEPALIVE_S": "10",
    # Watchdog checks (one scheduled RQ job per message) fire after the run, not inside a phase.
    "BRIDGE_INVITATION_TIMEOUT_S": "300",
    "BRIDGE_MESSAGE_TIMEOUT_S": "300",
}


def sip(name: str) -> str:
    return f"sip:{name}@contoso.com"


@dataclass
class Phase:
    """One measured batch: ``count`` messages posted at ``t0``, all delivered."""

    scenario: str
    workers: int
    count: int = 0
    seconds: float = 0.0
    post_seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    cpu: Counter[str] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return ratio(self.count, self.seconds)

    def add(self, other: Phase) -> None:
        self.count += other.count
        self.seconds += other.seconds
        self.post_seconds += other.post_seconds
        self.latencies_ms += other.latencies_ms
        self.cpu.update(other.cpu)

    def cpu_ms_per_message(self, role: str) -> float:
        return ratio(self.cpu[role] * 1000, self.count)


class SendBench:
    def __init__(
        self, stack: Stack, recipients: int, messages: int, rounds: int, single: int
    ) -> None:
        self.stack = stack
        self.messages = messages
        self.rounds = rounds
        self.line = [sip(f"line{i:02d}") for i in range(recipients)]
        self.warm = [sip(f"warm{i:04d}") for i in range(messages)]
        self.cold = [sip(f"cold{i:05d}") for i in range(messages * rounds * 2)]
        self.single = min(messages, single)
        self.lone = [sip(f"lone{i:03d}") for i in range(self.single)]
        self.workers: list[Child] = []
        self.api: Child | None = None
        self.poller: Child | None = None
        self.api_client: ApiClient | None = None

    # -- set-up ---------------------------------------------------------------------------------
    def users(self) -> list[dict[str, str]]:
        users = [
            {"sip": BOT, "password": BOT_PASSWORD, "name": "Bridge Bot"},
            {"sip": NAIVE, "password": NAIVE_PASSWORD, "name": "Naive Client"},
        ]
        users += [
            {"sip": s, "password": "pw"} for s in self.line + self.warm + self.cold + self.lone
        ]
        return users

    def start(self) -> None:
        stack = self.stack
        stack.start_redis()
        stack.start_sim(self.users(), time_scale=TIME_SCALE)
        stack.env_extra.update(BRIDGE_ENV)
        self.api = stack.start_api(workers=2)
        self.poller = stack.start_poller()
        self.workers.append(stack.start_worker())
        self.api_client = ApiClient(stack.api_url)

    @property
    def client(self) -> ApiClient:
        if self.api_client is None:
            raise BenchError("the API is not started")
        return self.api_client

    # -- sending and measuring ------------------------------------------------------------------
    def cpu_snapshot(self) -> Counter[str]:
        if self.api is None or self.poller is None:
            raise BenchError("the bridge is not started")
        sim = next(c for c in self.stack.children if c.name == "sim")
        return Counter(
            {
                "api": tree_cpu_s(self.api.tree()),
                "worker": sum(tree_cpu_s(w.tree()) for w in self.workers),
                "poller": cpu_s(self.poller.pid),
                "sim": cpu_s(sim.pid),
                "redis": cpu_s(self.stack.redis_pid),
            }
        )

    def send_batch(self, recipients: list[str], scenario: str) -> Phase:
        """POST one message to each entry of ``recipients`` (repeats allowed), wait until all
        are final, and measure from the first POST to the last delivery."""
        before = self.cpu_snapshot()
        t0 = time.time()
        with ThreadPoolExecutor(POST_THREADS) as pool:
            ids = list(pool.map(lambda to: self.client.post_message(to, TEXT_100), recipients))
        posted = time.time()
        self.stack.wait_lines_drained(recipients)
        after = self.cpu_snapshot()
        phase = Phase(scenario, len(self.workers), count=len(ids))
        last = t0
        for message_id in ids:
            record = self.client.message(message_id)
            if record["status"] != "delivered":
                raise BenchError(f"message {message_id} ended {record['status']}: {record}")
            history = record["history"]
            delivered = parse_time(history["delivered"])
            phase.latencies_ms.append((delivered - parse_time(history["queued"])) * 1000)
            last = max(last, delivered)
        phase.seconds = last - t0
        phase.post_seconds = posted - t0
        phase.cpu = after
        phase.cpu.subtract(before)
        return phase

    def request_kinds(self, user: str) -> Counter[str]:
        log = self.stack.sim("GET", "/_sim/requests")
        return Counter(e["kind"] for e in log["requests"] if e.get("user") == user)

    # -- (a) requests per message ---------------------------------------------------------------
    def requests_per_message(self, count: int) -> tuple[Counter[str], Counter[str], Phase, float]:
        targets = [self.line[i % len(self.line)] for i in range(count)]
        self.stack.sim("DELETE", "/_sim/requests")
        line_phase = self.send_batch(targets, "line")
        bridge = self.request_kinds(BOT)

        naive = NaiveClient(self.stack.discovery_url, NAIVE, NAIVE_PASSWORD).start()
        self.stack.sim("DELETE", "/_sim/requests")
        started = time.monotonic()
        for to in targets:
            naive.send(to, TEXT_100)
        baseline_s = time.monotonic() - started
        baseline = self.request_kinds(NAIVE)
        return bridge, baseline, line_phase, baseline_s

    # -- (b) throughput and latency -------------------------------------------------------------
    def set_workers(self, wanted: int) -> None:
        while len(self.workers) < wanted:
            self.workers.append(self.stack.start_worker())
        while len(self.workers) > wanted:
            self.stack.stop(self.workers.pop())

    def warm_up(self) -> None:
        """Open a conversation with every warm recipient (one cold message each, not timed)."""
        self.send_batch(self.warm, "warm-up")

    def unloaded(self) -> dict[str, Phase]:
        """One message at a time, alternating warm and cold recipients: latency without load."""
        totals = {s: Phase(s, len(self.workers)) for s in ("cold", "warm")}
        for index in range(self.single):
            for scenario in ("warm", "cold") if index % 2 else ("cold", "warm"):
                to = self.lone[index] if scenario == "cold" else self.warm[index]
                totals[scenario].add(self.send_batch([to], scenario))
        return totals

    def throughput(self) -> dict[tuple[str, int], Phase]:
        totals = {(s, w): Phase(s, w) for s in ("cold", "warm") for w in (1, 2)}
        cold = iter(self.cold)
        for round_no in range(self.rounds):
            # ABBA order: 1 worker first in even rounds, 2 workers first in odd ones.
            for workers in (1, 2) if round_no % 2 == 0 else (2, 1):
                self.set_workers(workers)
                scenarios = ("cold", "warm") if (round_no + workers) % 2 else ("warm", "cold")
                for scenario in scenarios:
                    if scenario == "cold":
                        targets = [next(cold) for _ in range(self.messages)]
                    else:
                        targets = list(self.warm)
                    phase = self.send_batch(targets, scenario)
                    say(
                        f"  round {round_no + 1}, {workers} worker(s), {scenario}: "
                        f"{phase.rate:.0f} msg/s, p50 {percentile(phase.latencies_ms, 50):.0f} ms"
                    )
                    totals[(scenario, workers)].add(phase)
        return totals


def describe(kinds: Counter[str], count: int) -> str:
    return ", ".join(f"{k} {v / count:.2f}" for k, v in sorted(kinds.items())) or "none"


def main() -> Report:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--messages", type=int, help="messages per measured batch")
    parser.add_argument("--rounds", type=int, help="alternating rounds of (b)")
    parser.add_argument("--recipients", type=int, default=4, help="recipients in (a)")
    args = parser.parse_args()
    messages = args.messages or (25 if args.quick else 100)
    rounds = args.rounds or (1 if args.quick else 3)
    report = Report("send_path: outbound UCWA requests, throughput and latency")
    with Stack("send_path", keep_logs=args.keep_logs) as stack:
        bench = SendBench(stack, args.recipients, messages, rounds, 8 if args.quick else 20)
        say("starting redis, the simulator, api (2 gunicorn workers), poller and one worker…")
        bench.start()

        say(f"(a) {messages} messages to {args.recipients} recipients: bridge, then baseline…")
        bridge, baseline, line, baseline_s = bench.requests_per_message(messages)
        per_message = {k: v for k, v in bridge.items() if k not in SHARED_KINDS}
        shared = {k: v for k, v in bridge.items() if k in SHARED_KINDS}
        naive_own = {k: v for k, v in baseline.items() if k != "events"}
        bridge_rpm = sum(per_message.values()) / messages
        bridge_all = sum(bridge.values()) / messages
        base_rpm = sum(naive_own.values()) / messages
        base_all = sum(baseline.values()) / messages

        say(f"(b) warming {messages} recipients, then {rounds} round(s) of 1 vs 2 workers…")
        bench.warm_up()
        say(f"(b) {bench.single} single messages each to warm and cold recipients, 1 worker…")
        lone = bench.unloaded()
        totals = bench.throughput()

    w1, w2 = totals[("warm", 1)], totals[("warm", 2)]
    c1, c2 = totals[("cold", 1)], totals[("cold", 2)]
    report.ratio(
        "UCWA requests/message, baseline / bridge",
        ratio(base_all, bridge_all),
        f"baseline {base_all:.2f}, bridge {bridge_all:.2f} (all requests, event GETs included)",
    )
    report.ratio(
        "UCWA requests/message excl. event GETs, baseline / bridge",
        ratio(base_rpm, bridge_rpm),
        f"baseline {base_rpm:.2f}, bridge {bridge_rpm:.2f}",
    )
    report.ratio(
        "throughput 2 workers / 1 worker, warm",
        ratio(w2.rate, w1.rate),
        f"{w2.rate:.0f} vs {w1.rate:.0f} msg/s",
    )
    report.ratio(
        "throughput 2 workers / 1 worker, cold",
        ratio(c2.rate, c1.rate),
        f"{c2.rate:.0f} vs {c1.rate:.0f} msg/s",
    )
    report.ratio(
        "throughput warm / cold, 1 worker",
        ratio(w1.rate, c1.rate),
        f"{w1.rate:.0f} vs {c1.rate:.0f}",
    )
    p50 = {key: percentile(phase.latencies_ms, 50) for key, phase in totals.items()}
    report.ratio(
        "latency p50 1 worker / 2 workers, warm burst",
        ratio(p50[("warm", 1)], p50[("warm", 2)]),
        f"{p50[('warm', 1)]:.0f} vs {p50[('warm', 2)]:.0f} ms",
    )
    report.ratio(
        "latency p50 cold / warm, 1 worker, burst",
        ratio(p50[("cold", 1)], p50[("warm", 1)]),
        f"{p50[('cold', 1)]:.0f} vs {p50[('warm', 1)]:.0f} ms",
    )
    lone_p50 = {s: percentile(phase.latencies_ms, 50) for s, phase in lone.items()}
    report.ratio(
        "latency p50 cold / warm, one message at a time",
        ratio(lone_p50["cold"], lone_p50["warm"]),
        f"{lone_p50['cold']:.0f} vs {lone_p50['warm']:.0f} ms",
    )
    report.raw("bridge UCWA requests/message by kind", describe(Counter(per_message), messages))
    report.raw(
        "bridge shared requests during (a), per message",
        describe(Counter(shared), messages) + " (one long-poll serves every message)",
    )
    report.raw("baseline UCWA requests/message by kind", describe(baseline, messages))
    report.raw(
        "baseline sequential time/message",
        f"{baseline_s / messages * 1000:.0f} ms (one message at a time)",
    )
    report.raw(
        f"bridge, {messages} msgs over {args.recipients} ordered lines",
        f"{line.rate:.0f} msg/s, latency p50 {percentile(line.latencies_ms, 50):.0f} ms, "
        f"p95 {percentile(line.latencies_ms, 95):.0f} ms",
    )
    for scenario, phase in lone.items():
        report.raw(
            f"{scenario}, one at a time: latency",
            f"p50 {percentile(phase.latencies_ms, 50):.0f} ms, "
            f"p95 {percentile(phase.latencies_ms, 95):.0f} ms ({phase.count} messages)",
        )
    for (scenario, workers), phase in totals.items():
        report.raw(
            f"{scenario}, {workers} worker(s): throughput",
            f"{phase.rate:.0f} msg/s ({phase.count} msgs in {phase.seconds:.2f} s, "
            f"of which {phase.post_seconds:.2f} s posting)",
        )
        report.raw(
            f"{scenario}, {workers} worker(s): latency",
            f"p50 {percentile(phase.latencies_ms, 50):.0f} ms, "
            f"p95 {percentile(phase.latencies_ms, 95):.0f} ms",
        )
        report.raw(
            f"{scenario}, {workers} worker(s): CPU ms/message",
            ", ".join(f"{role} {phase.cpu_ms_per_message(role):.1f}" for role in ROLES),
        )
    report.note(
        f"simulator time scale {TIME_SCALE}: a cold recipient accepts after "
        f"{1000 * TIME_SCALE:.0f} ms; {POST_THREADS} client threads post; "
        f"{messages} messages per batch, {rounds} alternating round(s)"
    )
    return report


if __name__ == "__main__":
    raise SystemExit(run_main(main))
