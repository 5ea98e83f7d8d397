"""The outbound path against the documented per-message flow, at realistic UCWA round trips.

For each simulator latency (``--latency-ms``, default 20 and 50 ms) a fresh stack runs: the
bridge (POST /messages → Redis → W RQ workers → simulator; the poller settles each message from
the event channel) and, side by side, the baseline: W threads that each send one message at a
time the way SendAnIM.md documents it, with one application per send (bench/_naive.py). Both
get the same messages, half to warm recipients (the bridge has an open conversation with them)
and half to cold ones. Phases alternate (bridge, baseline, baseline, bridge, …):

- bursts: all messages accepted at once; throughput from the first accept to the last delivery;
- paced: the same offered load for both (half the baseline's burst throughput), for latency.

UCWA requests per delivered message come from the simulator's request log, event GETs apart,
and so do the requests per TCP connection (the log names each request's connection).
A stack of its own, at the first latency, runs the API, the workers and the poller each behind a
counting proxy in front of Redis and prints each role's Redis round trips and commands per
delivered message (its idle traffic over the same time taken off).
``--compare-connections`` runs the first latency a second time with
``BRIDGE_UCWA_CONNECTION_IDLE_S=0`` (a new connection for every UCWA request, as before the
bridge kept connections alive) and prints the kept-alive run against it.

    python -m bench.send_path [--quick] [--latency-ms 20,50] [--workers W] [--messages N]
                              [--compare-connections]
"""

from __future__ import annotations

import argparse
import resource
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bench._common import (
    BOT,
    BOT_PASSWORD,
    TEXT_100,
    ApiClient,
    BenchError,
    Report,
    Stack,
    base_parser,
    cpu_s,
    percentile,
    ratio,
    round_trip_ms,
    run_main,
    say,
    tree_cpu_s,
)
from bench._naive import BaselinePool
from bench._redis_trips import CountingProxy, Counts
from bridge.outbound.messages import parse_time

TIME_SCALE = 0.05  # the simulated recipient accepts an invitation after 1 s x 0.05 = 50 ms
ACCEPT_DELAY_MS = 1000 * TIME_SCALE
POST_THREADS = 4
BRIDGE_ENV = {
    "BRIDGE_KEEPALIVE_S": "10",  # the simulator's activity expiry is 45 s at this time scale
    # Watchdog checks (one scheduled RQ job per message) fire after the run, not inside a phase.
    "BRIDGE_INVITATION_TIMEOUT_S": "900",
    "BRIDGE_MESSAGE_TIMEOUT_S": "900",
}
THROUGHPUT_TARGET = 5.0
REQUESTS_TARGET = 1 / 3
LATENCY_SLACK_RTT, LATENCY_SLACK_MS = 2, 30.0


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def sip(name: str) -> str:
    return f"sip:{name}@contoso.com"


@dataclass
class Phase:
    """Messages of one system in one mode, summed over the alternating batches."""

    count: int = 0
    seconds: float = 0.0
    latencies_ms: dict[str, list[float]] = field(default_factory=lambda: {"warm": [], "cold": []})
    requests: Counter[str] = field(default_factory=Counter)
    connections: int = 0  # distinct TCP connections the requests came on, summed over batches
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds by role

    @property
    def rate(self) -> float:
        return ratio(self.count, self.seconds)

    def all_latencies(self) -> list[float]:
        return self.latencies_ms["warm"] + self.latencies_ms["cold"]

    def add(self, seconds: float, kinds: list[str], latencies: list[float]) -> None:
        self.count += len(latencies)
        self.seconds += seconds
        for kind, latency in zip(kinds, latencies, strict=True):
            self.latencies_ms[kind].append(latency)

    def merge(self, other: Phase) -> None:
        self.add(other.seconds, [], [])
        for kind, values in other.latencies_ms.items():
            self.latencies_ms[kind] += values
        self.count += other.count


@dataclass
class Result:
    """Everything measured at one simulator latency."""

    latency_ms: int
    label: str = ""  # "" for the default settings, else what differs
    rtt_ms: float = 0.0
    paced_rate: float = 0.0
    phases: dict[tuple[str, str], Phase] = field(default_factory=dict)

    def phase(self, system: str, mode: str) -> Phase:
        return self.phases.setdefault((system, mode), Phase())

    def requests(self, system: str) -> tuple[float, float]:
        """(all requests, event GETs) per delivered message over both modes."""
        count = sum(p.count for (s, _), p in self.phases.items() if s == system)
        kinds: Counter[str] = Counter()
        for (s, _), p in self.phases.items():
            if s == system:
                kinds.update(p.requests)
        return ratio(sum(kinds.values()), count), ratio(kinds["events"], count)

    def per_connection(self, system: str) -> float:
        """UCWA requests per TCP connection (all requests, event GETs included)."""
        phases = [p for (s, _), p in self.phases.items() if s == system]
        return ratio(
            sum(sum(p.requests.values()) for p in phases), sum(p.connections for p in phases)
        )

    def kinds(self, system: str) -> Counter[str]:
        kinds: Counter[str] = Counter()
        for (s, _), p in self.phases.items():
            if s == system:
                kinds.update(p.requests)
        return kinds


class SendPath:
    def __init__(
        self, stack: Stack, workers: int, burst: int, base_burst: int, env: dict[str, str]
    ) -> None:
        self.stack = stack
        self.env = env
        self.workers = workers
        self.burst = burst
        self.base_burst = base_burst
        self.warm = [sip(f"warm{i:04d}") for i in range((burst + 1) // 2)]
        self.naive = [(sip(f"naive{i}"), f"Naive-Passw0rd-{i}") for i in range(workers)]
        self.cold_made = 0
        self.client: ApiClient | None = None
        self.baseline: BaselinePool | None = None

    def start(self, latency_ms: int, redis_urls: dict[str, str] | None = None) -> None:
        """``redis_urls``: a Redis URL per role (api, poller, worker) instead of the stack's."""
        users = [{"sip": BOT, "password": BOT_PASSWORD, "name": "Bridge Bot"}]
        users += [{"sip": s, "password": pw} for s, pw in self.naive]
        users += [{"sip": s, "password": "pw"} for s in self.warm]
        if not self.stack.redis_server:
            self.stack.start_redis()
        self.stack.start_sim(users, time_scale=TIME_SCALE, latency_ms=latency_ms)
        self.stack.env_extra.update(BRIDGE_ENV | self.env)

        def env(role: str) -> dict[str, str]:
            url = (redis_urls or {}).get(role)
            return {"BRIDGE_REDIS_URL": url} if url else {}

        self.stack.start_api(workers=2, **env("api"))
        self.stack.start_poller(**env("poller"))
        for _ in range(self.workers):
            self.stack.start_worker(**env("worker"))
        self.client = ApiClient(self.stack.api_url)
        self.baseline = BaselinePool(self.stack.discovery_url, self.naive)

    def mix(self, count: int) -> list[tuple[str, str]]:
        """``count`` (recipient, kind): warm and cold alternating, each warm one used once."""
        targets = []
        for index in range(count):
            if index % 2 == 0 and index // 2 < len(self.warm):
                targets.append((self.warm[index // 2], "warm"))
            else:
                self.cold_made += 1
                cold = sip(f"cold{self.cold_made:05d}")
                self.stack.sim("POST", "/_sim/users", {"sip": cold, "password": "pw"})
                targets.append((cold, "cold"))
        return targets

    # -- the bridge -----------------------------------------------------------------------------
    def bridge_batch(
        self,
        targets: list[tuple[str, str]],
        rate: float | None,
        drained: Callable[[], None] | None = None,
    ) -> Phase:
        """``drained``: called once every line is empty, before the records are read back (so
        that the CPU figures leave out the benchmark's own reads)."""
        if self.client is None:
            raise BenchError("the bridge is not started")
        client = self.client
        started = time.time()

        def post(index: int) -> str:
            if rate:
                time.sleep(max(0.0, started + index / rate - time.time()))
            return client.post_message(targets[index][0], TEXT_100)

        with ThreadPoolExecutor(POST_THREADS) as pool:
            ids = list(pool.map(post, range(len(targets))))
        self.stack.wait_lines_drained([to for to, _ in targets], timeout=120)
        if drained is not None:
            drained()
        latencies, last, first = [], started, time.time()
        for message_id in ids:
            record = client.message(message_id)
            if record["status"] != "delivered":
                raise BenchError(f"message {message_id} ended {record['status']}: {record}")
            queued = parse_time(record["history"]["queued"])
            delivered = parse_time(record["history"]["delivered"])
            latencies.append((delivered - queued) * 1000)
            first, last = min(first, queued), max(last, delivered)
        phase = Phase()
        phase.add(last - first, [kind for _, kind in targets], latencies)
        return phase

    def warm_up(self) -> None:
        """Open a conversation with every warm recipient: one message each, not measured."""
        self.bridge_batch([(to, "cold") for to in self.warm], None)

    # -- the baseline ---------------------------------------------------------------------------
    def baseline_batch(self, targets: list[tuple[str, str]], rate: float | None) -> Phase:
        if self.baseline is None:
            raise BenchError("the baseline is not started")
        started = time.time()
        latencies = self.baseline.run([to for to, _ in targets], TEXT_100, rate)
        phase = Phase()
        # Every baseline message starts from scratch, so every one is cold for it.
        phase.add(time.time() - started, ["cold"] * len(targets), latencies)
        return phase

    # -- one measured batch with its request count ----------------------------------------------
    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds so far of each role (gunicorn workers and RQ scheduler included); the
        baseline runs in this process."""
        cpu = {"redis": cpu_s(self.stack.redis_pid), "baseline": own_cpu_s()}
        for child in self.stack.children:
            cpu[child.name] = cpu.get(child.name, 0.0) + tree_cpu_s(child.tree())
        return cpu

    def measure(self, result: Result, system: str, mode: str, count: int) -> None:
        rate = result.paced_rate if mode == "paced" else None
        targets = self.mix(count)
        self.stack.sim("DELETE", "/_sim/requests")
        before = self.cpu_by_role()
        after: dict[str, float] = {}
        if system == "bridge":
            # The CPU of every message's whole way, not of the benchmark reading records back.
            batch = self.bridge_batch(targets, rate, lambda: after.update(self.cpu_by_role()))
            users = {BOT}
        else:
            batch = self.baseline_batch(targets, rate)
            users = {s for s, _ in self.naive}
            after = self.cpu_by_role()
        log = self.stack.sim("GET", "/_sim/requests")
        phase = result.phase(system, mode)
        phase.merge(batch)
        for role, seconds in after.items():
            phase.cpu_s[role] = phase.cpu_s.get(role, 0.0) + seconds - before.get(role, 0.0)
        mine = [e for e in log["requests"] if e.get("user") in users]
        phase.requests.update(e["kind"] for e in mine)
        phase.connections += len({e["connection"] for e in mine if e.get("connection") is not None})
        say(
            f"  {system:8} {mode:6} {batch.count:4d} msgs: {batch.rate:6.1f} msg/s, "
            f"p50 {percentile(batch.all_latencies(), 50):.0f} ms"
        )


def run_setting(
    args: argparse.Namespace, latency_ms: int, env: dict[str, str] | None = None, label: str = ""
) -> Result:
    burst, base_burst, rounds = args.messages, args.baseline_messages, args.rounds
    result = Result(latency_ms, label)
    name = f"send_path-{latency_ms}ms" + ("-" + label.replace(" ", "-") if label else "")
    with Stack(name, keep_logs=args.keep_logs) as stack:
        bench = SendPath(stack, args.workers, burst, base_burst, env or {})
        say(
            f"latency {latency_ms} ms{', ' + label if label else ''}: redis, simulator, api, "
            f"poller, {args.workers} worker(s)…"
        )
        bench.start(latency_ms)
        result.rtt_ms = round_trip_ms(stack.discovery_url)
        bench.warm_up()
        order = ("bridge", "baseline")
        for round_no in range(rounds):
            for system in order if round_no % 2 == 0 else order[::-1]:
                bench.measure(result, system, "burst", burst if system == "bridge" else base_burst)
        base_rate = result.phase("baseline", "burst").rate
        result.paced_rate = args.paced_rate or base_rate / 2
        for round_no in range(rounds):
            for system in order if round_no % 2 else order[::-1]:
                bench.measure(result, system, "paced", max(2, args.paced // rounds))
    return result


ROLES = ("api", "worker", "poller")


@dataclass
class Trips:
    """Redis round trips and commands per delivered message, by role (``CountingProxy``)."""

    messages: int = 0
    seconds: float = 0.0
    idle_s: float = 0.0
    counts: dict[str, Counts] = field(default_factory=dict)
    idle: dict[str, Counts] = field(default_factory=dict)

    def per_message(self, role: str, what: str) -> float:
        """Per message, the role's idle traffic over the same time taken off."""
        busy = getattr(self.counts[role], what)
        idle = getattr(self.idle[role], what) * self.seconds / max(self.idle_s, 1e-9)
        return ratio(max(busy - idle, 0.0), self.messages)


def count_round_trips(args: argparse.Namespace, latency_ms: int, idle_s: float = 3.0) -> Trips:
    """A stack of its own whose roles reach Redis through counting proxies: an idle window,
    then a burst of ``args.messages`` (half warm, half cold); speed is not measured here."""
    trips = Trips()
    with Stack(f"send_path-trips-{latency_ms}ms", keep_logs=args.keep_logs) as stack:
        url = urlsplit(stack.start_redis())
        proxies = {
            role: CountingProxy(url.hostname or "127.0.0.1", url.port or 6379) for role in ROLES
        }
        db = int((url.path or "/0").lstrip("/") or 0)
        try:
            bench = SendPath(stack, args.workers, args.messages, 0, {})
            say(f"Redis round trips by role @{latency_ms} ms: the roles behind counting proxies…")
            bench.start(latency_ms, {role: p.url(db) for role, p in proxies.items()})
            bench.warm_up()
            for proxy in proxies.values():
                proxy.reset()
            time.sleep(idle_s)
            trips.idle = {role: p.reset() for role, p in proxies.items()}
            trips.idle_s = idle_s
            targets = bench.mix(args.messages)
            client = bench.client
            assert client is not None
            started = time.monotonic()
            with ThreadPoolExecutor(POST_THREADS) as pool:
                ids = list(pool.map(lambda t: client.post_message(t[0], TEXT_100), targets))
            stack.wait_lines_drained([to for to, _ in targets], timeout=120)
            trips.seconds = time.monotonic() - started
            trips.counts = {role: p.reset() for role, p in proxies.items()}
            trips.messages = len(ids)
            undelivered = [i for i in ids if client.message(i)["status"] != "delivered"]
            if undelivered:
                raise BenchError(f"{len(undelivered)} messages were not delivered")
        finally:
            for proxy in proxies.values():
                proxy.close()
    return trips


def report_trips(report: Report, trips: Trips, latency_ms: int) -> None:
    at = f"@{latency_ms} ms"
    rows = {
        what: ", ".join(f"{r} {trips.per_message(r, what):.1f}" for r in ROLES)
        for what in ("round_trips", "commands")
    }
    total = sum(trips.per_message(r, "round_trips") for r in ROLES)
    report.raw(
        f"Redis round trips per message by role {at}", f"{rows['round_trips']}; all {total:.1f}"
    )
    report.raw(f"Redis commands per message by role {at}", rows["commands"])
    for role in ROLES:
        names = trips.counts[role].names.most_common(10)
        report.raw(
            f"Redis commands per message, {role}, most used {at}",
            ", ".join(f"{n} {ratio(c, trips.messages):.1f}" for n, c in names) or "none",
        )
    report.raw(
        f"Redis round trips per second while idle, by role {at}",
        ", ".join(f"{r} {ratio(trips.idle[r].round_trips, trips.idle_s):.1f}" for r in ROLES),
    )


def latency_figures(values: list[float]) -> str:
    return " / ".join(f"{percentile(values, p):.0f}" for p in (50, 95, 99)) + " ms"


def report_setting(report: Report, result: Result) -> None:
    at = f"@{result.latency_ms} ms"
    report.raw(
        f"UCWA requests per TCP connection, bridge | baseline {at}",
        f"{result.per_connection('bridge'):.1f} | {result.per_connection('baseline'):.1f}",
    )
    rtt = result.rtt_ms
    bridge_burst = result.phase("bridge", "burst")
    base_burst = result.phase("baseline", "burst")
    bridge_paced = result.phase("bridge", "paced")
    base_paced = result.phase("baseline", "paced")
    throughput = ratio(bridge_burst.rate, base_burst.rate)
    report.ratio(
        f"throughput, bridge / baseline {at}",
        throughput,
        f"{bridge_burst.rate:.1f} vs {base_burst.rate:.1f} msg/s",
    )
    bridge_all, bridge_events = result.requests("bridge")
    base_all, base_events = result.requests("baseline")
    requests = ratio(bridge_all, base_all)
    report.ratio(
        f"UCWA requests/message, bridge / baseline {at}",
        requests,
        f"{bridge_all:.2f} vs {base_all:.2f} (event GETs {bridge_events:.2f} vs {base_events:.2f})",
    )
    report.ratio(
        f"UCWA requests/message excl. event GETs, bridge / baseline {at}",
        ratio(bridge_all - bridge_events, base_all - base_events),
        f"{bridge_all - bridge_events:.2f} vs {base_all - base_events:.2f}",
    )
    p50 = {k: percentile(v, 50) for k, v in bridge_paced.latencies_ms.items()}
    floor = {"warm": rtt, "cold": rtt + ACCEPT_DELAY_MS}
    limit = {k: f + LATENCY_SLACK_RTT * rtt + LATENCY_SLACK_MS for k, f in floor.items()}
    for kind in ("warm", "cold"):
        report.ratio(
            f"latency p50 / floor, bridge {kind}, paced {at}",
            ratio(p50[kind], floor[kind]),
            f"{p50[kind]:.0f} vs {floor[kind]:.0f} ms (limit {limit[kind]:.0f} ms)",
        )
    base_p50 = percentile(base_paced.all_latencies(), 50)
    bridge_p50 = percentile(bridge_paced.all_latencies(), 50)
    report.ratio(
        f"latency p50, baseline / bridge, paced {at}",
        ratio(base_p50, bridge_p50),
        f"{base_p50:.0f} vs {bridge_p50:.0f} ms at {result.paced_rate:.1f} msg/s",
    )
    report.target(
        f"throughput >= {THROUGHPUT_TARGET:.0f}x baseline {at}",
        throughput >= THROUGHPUT_TARGET,
        f"{throughput:.2f}x",
    )
    report.target(
        f"UCWA requests/message <= 1/3 of baseline {at}",
        requests <= REQUESTS_TARGET,
        f"{requests:.2f}x (limit {REQUESTS_TARGET:.2f}x)",
    )
    report.target(
        f"p50 <= floor + 2 RTT + 30 ms {at}",
        all(p50[k] <= limit[k] for k in p50),
        "; ".join(f"{k} {p50[k]:.0f} <= {limit[k]:.0f} ms" for k in ("warm", "cold")),
    )
    report.raw(f"one UCWA round trip (floor, warm) {at}", f"{rtt:.1f} ms, measured")
    for name, phase in (("bridge burst", bridge_burst), ("baseline burst", base_burst)):
        report.raw(
            f"{name} {at}",
            f"{phase.rate:.1f} msg/s ({phase.count} msgs in {phase.seconds:.1f} s), "
            f"p50/p95/p99 {latency_figures(phase.all_latencies())}",
        )
    for name, phase in (("bridge paced", bridge_paced), ("baseline paced", base_paced)):
        report.raw(
            f"{name} {at}",
            f"{phase.count} msgs offered at {result.paced_rate:.1f} msg/s, "
            f"p50/p95/p99 {latency_figures(phase.all_latencies())}",
        )
    for kind in ("warm", "cold"):
        report.raw(
            f"bridge {kind} latency, burst | paced {at}",
            f"{latency_figures(bridge_burst.latencies_ms[kind])} | "
            f"{latency_figures(bridge_paced.latencies_ms[kind])}",
        )
    for name, phase, roles in (
        ("bridge burst", bridge_burst, ("api", "worker", "poller", "sim", "redis")),
        ("baseline burst", base_burst, ("baseline", "sim")),
    ):
        report.raw(
            f"{name}, CPU ms/message {at}",
            ", ".join(f"{r} {ratio(phase.cpu_s[r] * 1000, phase.count):.1f}" for r in roles),
        )
    for system in ("bridge", "baseline"):
        kinds = result.kinds(system)
        count = sum(p.count for (s, _), p in result.phases.items() if s == system)
        report.raw(
            f"{system} UCWA requests/message by kind {at}",
            ", ".join(f"{k} {v / count:.2f}" for k, v in sorted(kinds.items())) or "none",
        )


def report_connections(report: Report, kept: Result, fresh: Result) -> None:
    """The bridge with kept-alive connections against one connection per request."""
    at = f"@{kept.latency_ms} ms"
    burst = (kept.phase("bridge", "burst"), fresh.phase("bridge", "burst"))
    paced = [percentile(r.phase("bridge", "paced").all_latencies(), 50) for r in (kept, fresh)]
    report.ratio(
        f"bridge burst throughput, kept-alive / a connection per request {at}",
        ratio(burst[0].rate, burst[1].rate),
        f"{burst[0].rate:.1f} vs {burst[1].rate:.1f} msg/s",
    )
    report.ratio(
        f"bridge paced latency p50, a connection per request / kept-alive {at}",
        ratio(paced[1], paced[0]),
        f"{paced[1]:.0f} vs {paced[0]:.0f} ms",
    )
    for role in ("worker", "poller"):
        cpu = [ratio(p.cpu_s.get(role, 0.0) * 1000, p.count) for p in burst]
        report.ratio(
            f"{role} CPU per message, kept-alive / a connection per request {at}",
            ratio(cpu[0], cpu[1]),
            f"{cpu[0]:.1f} vs {cpu[1]:.1f} ms",
        )
    report.raw(
        f"UCWA requests per TCP connection, bridge kept-alive | a connection per request {at}",
        f"{kept.per_connection('bridge'):.1f} | {fresh.per_connection('bridge'):.1f}",
    )


def main() -> Report:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--latency-ms", default="", help="simulator latencies, e.g. 20,50")
    parser.add_argument("--workers", type=int, default=2, help="bridge workers = baseline threads")
    parser.add_argument("--messages", type=int, help="messages per bridge burst")
    parser.add_argument("--baseline-messages", type=int, help="messages per baseline burst")
    parser.add_argument("--paced", type=int, help="paced messages per system")
    parser.add_argument("--paced-rate", type=float, default=0.0, help="msg/s (default: auto)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    parser.add_argument(
        "--compare-connections",
        action="store_true",
        help="also run the first latency with a new UCWA connection per request",
    )
    args = parser.parse_args()
    latencies = [int(v) for v in (args.latency_ms or ("20" if args.quick else "20,50")).split(",")]
    args.messages = args.messages or (40 if args.quick else 200)
    args.baseline_messages = args.baseline_messages or (8 if args.quick else 40)
    args.paced = args.paced or (8 if args.quick else 40)
    report = Report("send_path: bridge vs the documented SendAnIM flow, per UCWA latency")
    results = [run_setting(args, latency) for latency in latencies]
    trips = count_round_trips(args, latencies[0])
    for result in results:
        report_setting(report, result)
    report_trips(report, trips, latencies[0])
    if args.compare_connections:
        fresh = run_setting(
            args, latencies[0], {"BRIDGE_UCWA_CONNECTION_IDLE_S": "0"}, "a connection per request"
        )
        report_connections(report, results[0], fresh)
    report.note(
        f"{args.workers} bridge workers vs {args.workers} baseline threads (one application per "
        f"send); bursts of {args.messages} (bridge) and {args.baseline_messages} (baseline) "
        f"messages, half to warm recipients; {args.paced} paced messages each at half the "
        f"baseline's burst rate; {args.rounds} alternating round(s); simulator time scale "
        f"{TIME_SCALE}: a cold recipient accepts after {ACCEPT_DELAY_MS:.0f} ms, which the cold "
        "floor includes"
    )
    return report


if __name__ == "__main__":
    raise SystemExit(run_main(main))
