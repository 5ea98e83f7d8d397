"""Several accounts sending at once: delivered messages/s with N accounts against N times the
one-account rate, the CPU per message by role, and what each account costs the idle pollers.

Bursts: for each account count (``--accounts``, default 1,2,4,8) a fresh stack: Redis, the
simulator (``--latency-ms`` per UCWA request, time scale 0.05) with one user per account and its
recipients, the API, two poller processes sharing the accounts as a pool, and ``--workers`` RQ
workers. Each account opens a conversation with half its recipients (not measured); then every
account sends a burst of ``--messages`` at once, half to those warm recipients and half to cold
ones, each message to a recipient of its own. The rate runs from the first accept to the last
delivery (record history). CPU per delivered message is read from /proc for each role over the
burst, and so is the CPU the whole machine spent (/proc/stat: the simulator and the load
generator share the cores here): cores / CPU per message is the rate the cores allow, where N
accounts stop reaching N times one. The workers, a fixed number whatever the accounts, allow at
most workers / (one UCWA round trip + their CPU per message); the target is 80 % of the lowest of
the three bounds.

Idle: one Redis and one simulator, and for every account count its own pair of poller processes
(each pair on its own Redis database and its own simulator users), all started together and
measured in the same ``--idle-s`` seconds once every pool has settled: CPU per account per
second, RSS and threads, side by side.

    python -m bench.accounts [--quick] [--accounts 1,2,4,8] [--messages M] [--workers W]
                             [--latency-ms L] [--idle-s S]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench._common import (
    API_KEY,
    CLOCK_TICKS,
    TEXT_100,
    ApiClient,
    BenchError,
    Child,
    Report,
    Stack,
    base_parser,
    cpu_s,
    http,
    ratio,
    round_trip_ms,
    rss_mb,
    run_main,
    say,
    tree_cpu_s,
)
from bench.send_path import BRIDGE_ENV, POST_THREADS, TIME_SCALE, own_cpu_s
from bridge.config.redis_text import text
from bridge.outbound.messages import parse_time, recipient_key

ROLES = ("api", "worker", "poller", "redis")
POLLERS = 2
TARGET = 0.8  # of N x the one-account rate, or of the rate the cores allow where that is lower
CORES = os.cpu_count() or 1
SETTLE_S = 3.0  # after every pool settled: the sessions' first requests behind them


@dataclass(frozen=True)
class Sender:
    """One configured account and the recipients only it writes to."""

    id: str
    sip: str
    password: str
    warm: tuple[str, ...]
    cold: tuple[str, ...]

    def targets(self) -> list[str]:
        """The burst's recipients, warm and cold alternating."""
        mixed = [to for pair in zip(self.warm, self.cold, strict=False) for to in pair]
        return mixed + list(self.warm[len(self.cold) :]) + list(self.cold[len(self.warm) :])


def make_senders(count: int, messages: int, prefix: str = "") -> list[Sender]:
    def people(i: int, kind: str, n: int) -> tuple[str, ...]:
        return tuple(f"sip:{prefix}a{i}{kind}{j:04d}@contoso.com" for j in range(n))

    warm = (messages + 1) // 2
    return [
        Sender(
            f"a{i}",
            f"sip:{prefix}sender{i}@contoso.com",
            f"Sender-Passw0rd-{i}",
            people(i, "warm", warm),
            people(i, "cold", messages - warm),
        )
        for i in range(1, count + 1)
    ]


def accounts_env(senders: list[Sender]) -> dict[str, str]:
    entries = [
        {"id": s.id, "username": s.sip, "password": s.password, "default": index == 0}
        for index, s in enumerate(senders)
    ]
    return {
        "BRIDGE_ACCOUNTS": json.dumps(entries),
        "BRIDGE_UCWA_USERNAME": "",  # blank: unset, the list names every account
        "BRIDGE_UCWA_PASSWORD": "",
    }


def sim_users(senders: list[Sender]) -> list[dict[str, str]]:
    users = [{"sip": s.sip, "password": s.password, "name": s.id} for s in senders]
    return users + [{"sip": to, "password": "pw"} for s in senders for to in s.targets()]


def cores_busy_s() -> float:
    """CPU seconds the whole machine has spent not idle (steal included: a core taken away)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / CLOCK_TICKS


def threads(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


@dataclass
class PollerPair:
    """The poller processes serving ``senders`` as a pool, on one Redis database."""

    senders: list[Sender]
    pollers: list[Child]
    connect: Callable[[], redis.Redis]

    def held(self) -> list[int]:
        """Accounts each poller process holds the lease of (a member id ends in -<pid>-<hex>)."""
        client = self.connect()
        try:
            values = client.mget([f"poller:lease:{s.sip.lower()}" for s in self.senders])
        finally:
            client.close()
        pids = Counter(int(text(v).partition("|")[0].split("-")[-2]) for v in values if v)
        return [pids.get(p.pid, 0) for p in self.pollers]

    def settled(self) -> bool:
        """Every account has a ready session, and the pollers hold even shares."""
        client = self.connect()
        try:
            states = [client.hget(f"session:{s.sip.lower()}", "state") for s in self.senders]
        finally:
            client.close()
        share, extra = divmod(len(self.senders), len(self.pollers))
        even = sorted(share + (i < extra) for i in range(len(self.pollers)))
        return all(s == b"ready" for s in states) and sorted(self.held()) == even


def start_pair(stack: Stack, senders: list[Sender], db: int = 0) -> PollerPair:
    """Two pollers started together: they see each other before taking a share (no handovers)."""
    url = f"{stack.redis_url.rpartition('/')[0]}/{db}"
    env = stack.bridge_env(BRIDGE_REDIS_URL=url, **accounts_env(senders))
    argv = ["-m", "bridge.cli", "poller"]
    pollers = [stack.spawn("poller", argv, env) for _ in range(POLLERS)]
    return PollerPair(senders, pollers, lambda: redis.Redis.from_url(url))


@dataclass
class Idle:
    """The poller processes of one account count with nothing to send."""

    seconds: float
    cpu_s: list[float]
    rss_mb: list[float]
    held: list[int]
    threads: list[int]

    def cpu_ms_per_s(self) -> float:
        return ratio(sum(self.cpu_s) * 1000, self.seconds)


def measure_idle(args: argparse.Namespace, counts: list[int]) -> dict[int, Idle]:
    with Stack("accounts-idle", keep_logs=args.keep_logs) as stack:
        groups = {n: make_senders(n, 0, prefix=f"n{n}") for n in counts}
        say(f"idle pollers: a pair for each of {', '.join(map(str, counts))} account(s)…")
        stack.start_redis()
        users = [user for senders in groups.values() for user in sim_users(senders)]
        stack.start_sim(users, time_scale=TIME_SCALE, latency_ms=args.latency_ms)
        stack.env_extra.update(BRIDGE_ENV)
        pairs = {
            n: start_pair(stack, senders, db) for db, (n, senders) in enumerate(groups.items())
        }
        for n, pair in pairs.items():
            stack.wait_for(pair.settled, 90, f"the {n}-account pollers' sessions and shares")
        time.sleep(SETTLE_S)
        pids = {n: [p.pid for p in pair.pollers] for n, pair in pairs.items()}
        before = {n: [cpu_s(pid) for pid in group] for n, group in pids.items()}
        started = time.monotonic()
        time.sleep(args.idle_s)
        spent = {n: [cpu_s(pid) for pid in group] for n, group in pids.items()}
        seconds = time.monotonic() - started
        stack.check_alive()
        return {
            n: Idle(
                seconds,
                [after - first for after, first in zip(spent[n], before[n], strict=True)],
                [rss_mb(pid) for pid in pids[n]],
                pair.held(),
                [threads(pid) for pid in pids[n]],
            )
            for n, pair in pairs.items()
        }


@dataclass
class Burst:
    count: int
    seconds: float
    per_account: dict[str, float]
    cpu_s: dict[str, float] = field(default_factory=dict)  # by role, over the burst
    busy_s: float = 0.0  # the machine's cores, over the burst
    wall_s: float = 0.0
    event_gets: int = 0
    poller_rss_mb: float = 0.0

    @property
    def rate(self) -> float:
        return ratio(self.count, self.seconds)

    def cpu_ms(self, role: str) -> float:
        return ratio(self.cpu_s.get(role, 0.0) * 1000, self.count)

    def bridge_cpu_ms(self) -> float:
        return sum(self.cpu_ms(role) for role in ROLES)

    def machine_cpu_ms(self) -> float:
        return ratio(self.busy_s * 1000, self.count)


class AccountsStack:
    """The whole bridge with ``count`` accounts: start it, warm it up, send a burst."""

    def __init__(self, stack: Stack, args: argparse.Namespace, count: int) -> None:
        self.stack = stack
        self.args = args
        self.senders = make_senders(count, args.messages)
        self.pair: PollerPair | None = None
        self.api: ApiClient | None = None

    def start(self) -> None:
        from rq import Worker

        stack = self.stack
        stack.start_redis()
        stack.start_sim(
            sim_users(self.senders), time_scale=TIME_SCALE, latency_ms=self.args.latency_ms
        )
        stack.env_extra.update(BRIDGE_ENV, **accounts_env(self.senders))
        stack.start_api(workers=2)
        self.pair = start_pair(stack, self.senders)
        for _ in range(self.args.workers):
            stack.spawn("worker", ["-m", "bridge.cli", "worker"], stack.bridge_env())
        client = stack.redis()
        try:
            stack.wait_for(
                lambda: Worker.count(connection=client) >= self.args.workers,
                60,
                f"{self.args.workers} RQ workers to register",
            )
        finally:
            client.close()
        stack.wait_for(self.pair.settled, 60, "every account's session and even poller shares")
        self.api = ApiClient(stack.api_url)

    def cpu_by_role(self) -> dict[str, float]:
        cpu = {"redis": cpu_s(self.stack.redis_pid), "load": own_cpu_s()}
        for child in self.stack.children:
            cpu[child.name] = cpu.get(child.name, 0.0) + tree_cpu_s(child.tree())
        return cpu

    def send(self, targets: list[tuple[Sender, str]]) -> Burst:
        """Accept every message (all accounts interleaved), wait until every line is empty, and
        read the records: every one delivered, from its account."""
        api = self.api
        if api is None or self.pair is None:
            raise BenchError("the bridge is not started")
        headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}

        def post(target: tuple[Sender, str]) -> str:
            body = json.dumps({"to": target[1], "text": TEXT_100, "from": target[0].id}).encode()
            status, raw = http("POST", api.base_url + "/messages", body, headers)
            if status != 202:
                raise BenchError(f"POST /messages answered {status}: {raw[:300]!r}")
            return str(json.loads(raw)["id"])

        self.stack.sim("DELETE", "/_sim/requests")
        cpu, busy, wall = self.cpu_by_role(), cores_busy_s(), time.monotonic()
        with ThreadPoolExecutor(POST_THREADS) as pool:
            ids = list(pool.map(post, targets))
        lines = [recipient_key(to, None, sender.id) for sender, to in targets]
        self.stack.wait_lines_drained(lines, timeout=60 + len(targets) / 5)
        after, busy, wall = self.cpu_by_role(), cores_busy_s() - busy, time.monotonic() - wall
        log = self.stack.sim("GET", "/_sim/requests")["requests"]
        spans: dict[str, list[float]] = {}
        for (sender, _), message_id in zip(targets, ids, strict=True):
            record = api.message(message_id)
            if record["status"] != "delivered" or record.get("from") != sender.id:
                raise BenchError(f"message {message_id} from {sender.id}: {record}")
            history = record["history"]
            span = spans.setdefault(sender.id, [])
            span += [parse_time(history["queued"]), parse_time(history["delivered"])]
        first = min(min(s) for s in spans.values())
        last = max(max(s) for s in spans.values())
        per_account = {a: ratio(len(s) / 2, max(s) - min(s)) for a, s in spans.items()}
        burst = Burst(len(targets), last - first, per_account, busy_s=busy, wall_s=wall)
        burst.cpu_s = {role: after[role] - cpu.get(role, 0.0) for role in after}
        burst.event_gets = sum(1 for entry in log if entry.get("kind") == "events")
        burst.poller_rss_mb = sum(rss_mb(p.pid) for p in self.pair.pollers)
        return burst

    def warm_up(self) -> None:
        """One message from each account to each of its warm recipients, not measured."""
        rounds = max(len(s.warm) for s in self.senders)
        self.send([(s, s.warm[j]) for j in range(rounds) for s in self.senders if j < len(s.warm)])

    def burst(self) -> Burst:
        per = [s.targets() for s in self.senders]
        rounds = max(len(t) for t in per)
        return self.send(
            [(s, t[j]) for j in range(rounds) for s, t in zip(self.senders, per, strict=True)
             if j < len(t)]
        )  # fmt: skip


def measure_burst(args: argparse.Namespace, count: int) -> tuple[Burst, float]:
    with Stack(f"accounts-{count}", keep_logs=args.keep_logs) as stack:
        bench = AccountsStack(stack, args, count)
        say(f"{count} account(s): redis, simulator, api, pollers, {args.workers} workers…")
        bench.start()
        rtt = round_trip_ms(stack.discovery_url)
        bench.warm_up()
        burst = bench.burst()
        say(f"  {burst.count} messages from {count} account(s): {burst.rate:.1f} msg/s")
        return burst, rtt


def report_burst(
    report: Report,
    count: int,
    first: int,
    single: float,
    burst: Burst,
    rtt_ms: float,
    workers: int,
) -> None:
    at = f"{count} accounts"
    expected = single * count
    bridge_bound = ratio(CORES * 1000, burst.bridge_cpu_ms())
    machine_bound = ratio(CORES * 1000, burst.machine_cpu_ms())
    # A send holds its worker for at least its UCWA POST and its own CPU: the most the workers
    # allow, whatever the number of accounts.
    workers_bound = ratio(workers * 1000, rtt_ms + burst.cpu_ms("worker"))
    report.ratio(
        f"{at}: delivered / ({count} x the per-account rate with {first})",
        ratio(burst.rate, expected),
        f"{burst.rate:.1f} vs {expected:.1f} msg/s",
    )
    report.ratio(
        f"{at}: delivered / the rate the cores allow",
        ratio(burst.rate, machine_bound),
        f"{burst.rate:.1f} vs {machine_bound:.1f} msg/s",
    )
    report.raw(
        f"{at}: delivered msg/s",
        f"{burst.rate:.1f} ({burst.count} messages in {burst.seconds:.2f} s); per account "
        f"min {min(burst.per_account.values()):.1f}, max {max(burst.per_account.values()):.1f}",
    )
    report.raw(
        f"{at}: CPU ms per message",
        ", ".join(f"{role} {burst.cpu_ms(role):.1f}" for role in ROLES)
        + f"; total {burst.bridge_cpu_ms():.1f} (simulator {burst.cpu_ms('sim'):.1f}, "
        f"load generator {burst.cpu_ms('load'):.1f}; the whole machine "
        f"{burst.machine_cpu_ms():.1f})",
    )
    report.raw(
        f"{at}: CPU-bound rate (cores / CPU per message)",
        f"{bridge_bound:.0f} msg/s for the bridge's roles alone, {machine_bound:.0f} msg/s for "
        f"everything this run puts on the {CORES} cores",
    )
    report.raw(
        f"{at}: cores busy during the burst",
        f"{ratio(burst.busy_s, burst.wall_s):.2f} of {CORES} (over {burst.wall_s:.1f} s)",
    )
    report.raw(f"{at}: UCWA event GETs per message", f"{ratio(burst.event_gets, burst.count):.2f}")
    report.raw(
        f"{at}: the rate the workers allow",
        f"{workers_bound:.0f} msg/s ({workers} workers / (one UCWA round trip {rtt_ms:.1f} ms + "
        f"worker CPU per message {burst.cpu_ms('worker'):.1f} ms))",
    )
    limit = min(expected, machine_bound, workers_bound)
    report.target(
        f"{at}: >= {TARGET:.0%} of min({count} x per-account rate, what the cores and the "
        "workers allow)",
        burst.rate >= TARGET * limit,
        f"{ratio(burst.rate, limit):.2f}x of {limit:.1f} msg/s",
    )


def report_idle(report: Report, count: int, first: int, idle: Idle, base: Idle) -> None:
    at = f"{count} accounts"
    report.raw(
        f"{at}: idle pollers, CPU",
        f"{idle.cpu_ms_per_s():.1f} ms/s in all ({idle.cpu_ms_per_s() / count:.2f} per account; "
        + ", ".join(
            f"{ratio(spent * 1000, idle.seconds):.1f} with {held}"
            for spent, held in zip(idle.cpu_s, idle.held, strict=True)
        )
        + f" account(s)), over {idle.seconds:.0f} s",
    )
    report.raw(
        f"{at}: idle pollers, RSS",
        f"{sum(idle.rss_mb):.1f} MB in all ("
        + ", ".join(
            f"{mb:.1f} MB and {t} threads with {n}"
            for mb, n, t in zip(idle.rss_mb, idle.held, idle.threads, strict=True)
        )
        + " account(s))",
    )
    if count == first:
        return
    added = ratio(idle.cpu_ms_per_s() - base.cpu_ms_per_s(), count - first)
    report.ratio(
        f"idle poller CPU per account, {count} / {first} accounts",
        ratio(idle.cpu_ms_per_s() / count, base.cpu_ms_per_s() / first),
        f"{idle.cpu_ms_per_s() / count:.2f} vs {base.cpu_ms_per_s() / first:.2f} ms/s; "
        f"{added:.2f} ms/s per account added",
    )
    rss, base_rss = sum(idle.rss_mb), sum(base.rss_mb)
    report.ratio(
        f"idle poller RSS, {count} / {first} accounts",
        ratio(rss, base_rss),
        f"{rss:.1f} vs {base_rss:.1f} MB; {ratio(rss - base_rss, count - first):.2f} MB per "
        "account added",
    )


def main() -> Report:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--accounts", default="", help="account counts, comma-separated")
    parser.add_argument("--messages", type=int, help="messages per account in the burst")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument("--idle-s", type=float, help="seconds the idle pollers are measured")
    args = parser.parse_args()
    counts = [int(v) for v in (args.accounts or ("1,2" if args.quick else "1,2,4,8")).split(",")]
    args.messages = args.messages or (6 if args.quick else 200)
    args.idle_s = args.idle_s or (2.0 if args.quick else 30.0)
    report = Report(
        f"accounts: several accounts sending at once @{args.latency_ms} ms, "
        f"{POLLERS} pollers, {args.workers} workers"
    )
    bursts = {count: measure_burst(args, count) for count in counts}
    idles = measure_idle(args, counts)
    first = counts[0]
    single = bursts[first][0].rate / first
    for count, (burst, rtt) in bursts.items():
        report_burst(report, count, first, single, burst, rtt, args.workers)
        report.raw(f"{count} accounts: poller RSS after the burst", f"{burst.poller_rss_mb:.1f} MB")
        report.raw(f"{count} accounts: one UCWA round trip", f"{rtt:.1f} ms, measured")
    for count in counts:
        report_idle(report, count, first, idles[count], idles[first])
    report.note(
        f"bursts of {args.messages} messages per account, half to warm recipients, every account "
        f"at once; simulator at {args.latency_ms} ms per UCWA request; the rate runs from the "
        "first accept to the last delivery; CPU per message spans the burst, from the first "
        f"POST to the last line drained; {POLLERS} poller processes share the accounts; the idle "
        "pollers of every count ran at the same time, in one window"
    )
    return report


if __name__ == "__main__":
    raise SystemExit(run_main(main))
