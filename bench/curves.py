"""Curves of the send path: throughput and CPU per message against the number of workers, and
latency against offered load until it saturates.

Workers: for each worker count (``--workers``, default 1,2,4,8) a fresh stack (Redis, the
simulator at ``--latency-ms`` per UCWA request, the API, the poller and that many RQ workers)
takes a burst of messages, half to warm recipients and half to cold ones (as ``bench.send_path``)
and prints delivered messages/s against the I/O bound ``workers / one UCWA round trip`` measured
in the same stack (a send job holds its worker for one round trip), with the CPU per delivered
message of each role. Where the CPU of every role together reaches the machine's cores, the curve
flattens: the CPU figures show where that happens. Each worker runs ``--runners`` job runners
(default: the bridge's own, ``BRIDGE_WORKER_RUNNERS``), which share its one UCWA request in
flight; the most send POSTs the simulator held at once is printed, and is never above the
workers.

Beside the bound, the floor of a worker's time per message with these parts, on the same stack
after the burst: the bound's round trip, a no-op job on the same workers (RQ's part of any job)
and two round trips writing a record (sent at most once needs a durable mark before the POST and
one after it). No code on these parts can beat it; delivered / that floor says how much of what
the parts allow the bridge reaches.

Load: on one stack with ``--load-workers`` workers, messages are offered at a rising rate, as
fractions of that stack's bound (``--loads``, default 0.2 to 1.2), each step for about
``--step-s`` seconds; every step prints the delivered rate and the latency percentiles from
``queued`` to ``delivered``. Steps stop after the first one that saturates: it delivers less than
90 % of what was offered, or its p50 is above ten times the paced floor.

    python -m bench.curves [--quick] [--latency-ms L] [--workers 1,2,4,8] [--messages N]
                           [--runners R] [--load-workers W] [--loads 0.2,0.4,...] [--step-s S]
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._common import (
    Report,
    Stack,
    base_parser,
    metric_totals,
    percentile,
    ratio,
    round_trip_ms,
    run_main,
    say,
)
from bench._job_trace import analyse, handover, stamp_counts
from bench.floor import noop_job_ms, record_write_ms
from bench.send_path import Result, SendPath
from bridge.config.variables import BridgeEnvironment

ROLES = ("api", "worker", "poller", "redis")
HERE = Path(__file__).resolve().parent
TRACE_FLUSH_S = 1.2  # the workers write their stamps every half second
SEND_KINDS = frozenset({"sendMessage", "startMessaging"})  # the one UCWA request of a send job
POST_METRIC = "ucwa_bridge_ucwa_request_seconds"
SATURATED_RATE = 0.9  # a step delivering less than this share of the offered rate is saturated
SATURATED_P50 = 10.0  # ... or with a p50 above this many times the floor
TARGET = 0.9  # of the I/O bound
FLOOR_JOBS = 300  # no-op jobs per worker for the floor of a worker's time per message
FLOOR_WRITES = 300  # record writes for it
CORES = os.cpu_count() or 1


@dataclass
class Cycle:
    """A worker's time per message in a burst, from the simulator's request log: the time from
    one of its send POSTs to its next (each worker keeps one UCWA connection), and how much of
    it the simulator took to answer the POST (``ms`` in the log: the latency and its own work).
    The rest is HTTP at both ends with the network (the POST as the workers timed it, less the
    simulator's part) and the worker's time outside the POST: RQ, the job's round trips, Python."""

    gaps: int = 0
    cycle_ms: float = 0.0
    server_ms: float = 0.0
    # The POST as the workers saw it, their own HTTP work included (their metrics'
    # ``ucwa_request_seconds``); 0 when they could not be read.
    post_ms: float = 0.0
    # ``--trace-jobs``: (send jobs, mean ms per job, [(from stamp → to stamp, mean ms per job)])
    traced: tuple[int, float, list[tuple[str, float, float]]] | None = None
    # ``--trace-jobs`` with runners: (hand-overs, [(span, mean ms, median ms)]), ``handover``
    handed: tuple[int, list[tuple[str, float, float]]] | None = None
    floor: tuple[float, float, float] | None = None  # (RTT, no-op job, record write) ms
    # The most send POSTs the simulator held at once: never more than the workers, whatever
    # their runners (they share one request in flight per worker).
    in_flight: int = 0

    @property
    def floor_ms(self) -> float:
        return self.floor[0] + self.floor[1] + 2 * self.floor[2] if self.floor else 0.0

    @property
    def rest_ms(self) -> float:
        return self.cycle_ms - self.server_ms

    @classmethod
    def of(cls, log: list[dict[str, Any]], runners: int = 1) -> Cycle:
        """``runners``: job runners per worker, each with a connection of its own, taking turns
        with the worker's one request: a worker's time per message is a runner's / runners."""
        posts: dict[Any, list[dict[str, Any]]] = {}
        for entry in log:
            if entry.get("kind") in SEND_KINDS and entry.get("connection") is not None:
                posts.setdefault(entry["connection"], []).append(entry)
        gaps: list[float] = []
        served: list[float] = []
        for entries in posts.values():
            entries.sort(key=lambda e: e["time"])
            gaps += [
                (b["time"] - a["time"]) * 1000 / runners for a, b in itertools.pairwise(entries)
            ]
            served += [e["ms"] for e in entries[:-1] if "ms" in e]
        if not gaps or not served:
            return cls()
        return cls(
            len(gaps),
            sum(gaps) / len(gaps),
            sum(served) / len(served),
            in_flight=most_at_once(itertools.chain(*posts.values())),
        )


def most_at_once(entries: Iterable[dict[str, Any]]) -> int:
    """The most of the simulator's logged requests ``entries`` it was serving at one moment
    (arrival to answer)."""
    edges = []
    for entry in entries:
        if "ms" in entry:
            edges += [(entry["time"], 1), (entry["time"] + entry["ms"] / 1000, -1)]
    most = now = 0
    for _, step in sorted(edges):  # an answer at the moment of an arrival counts first
        now += step
        most = max(most, now)
    return most


def _posts_seen(stack: Stack) -> tuple[float, float]:
    """(seconds, count) of every worker's send POSTs so far, from its metrics."""
    seconds = count = 0.0
    for child in stack.children:
        if child.name == "worker" and child.metrics_url:
            more = metric_totals(child.metrics_url, POST_METRIC, {"kind": SEND_KINDS})
            seconds, count = seconds + more[0], count + more[1]
    return seconds, count


def measure_workers(
    args: argparse.Namespace, workers: int
) -> tuple[float, float, float, dict[str, float], Cycle]:
    """(delivered msg/s, bound msg/s, RTT ms, CPU ms per message by role, a worker's cycle)
    with ``workers``."""
    with Stack(f"curves-w{workers}", keep_logs=args.keep_logs) as stack:
        traces = stack.workdir / "job-trace"
        env: dict[str, str] = {"BRIDGE_WORKER_RUNNERS": str(args.runners)}
        if args.trace_jobs:
            traces.mkdir()
            env |= {
                "PYTHONPATH": os.pathsep.join([str(HERE / "_trace_site"), str(HERE.parent)]),
                "UCWA_BENCH_TRACE_DIR": str(traces),
            }
        bench = SendPath(stack, workers, args.messages, 0, env)
        say(f"{workers} worker(s): redis, simulator, api, poller…")
        bench.start(args.latency_ms)
        rtt = round_trip_ms(stack.discovery_url)
        bench.warm_up()
        result = Result(args.latency_ms)
        posts_before = _posts_seen(stack)
        if args.trace_jobs:
            time.sleep(TRACE_FLUSH_S)  # the warm-up's stamps are written: the burst's follow
            since = stamp_counts(str(traces))
        bench.measure(result, "bridge", "burst", args.messages)
        posts_after = _posts_seen(stack)
        if args.trace_jobs:
            time.sleep(TRACE_FLUSH_S)
            cycle_trace = analyse(str(traces), since)
            handed = handover(str(traces), since)
        phase = result.phase("bridge", "burst")
        cpu = {
            role: ratio(phase.cpu_s.get(role, 0.0) * 1000, phase.count) for role in (*ROLES, "sim")
        }
        cycle = Cycle.of(stack.sim("GET", "/_sim/requests")["requests"], args.runners)
        # The least a worker's time per message could be with these parts, on the same stack:
        # the bound's round trip, a no-op job on these workers (RQ's part of any job), and two
        # round trips writing a record (sent at most once: a durable mark before the POST and
        # one after it).
        floor_jobs = (FLOOR_JOBS // 5 if args.quick else FLOOR_JOBS) * workers
        _, _, noop_ms = noop_job_ms(stack, floor_jobs, poll_s=0.003)
        _, _, write_ms = record_write_ms(stack, FLOOR_WRITES)
        cycle.floor = (rtt, noop_ms, write_ms)
        cycle.post_ms = ratio(
            (posts_after[0] - posts_before[0]) * 1000, posts_after[1] - posts_before[1]
        )
        if args.trace_jobs:
            cycle.traced = cycle_trace
            cycle.handed = handed
        return phase.rate, workers * 1000 / rtt, rtt, cpu, cycle


def measure_load(args: argparse.Namespace, report: Report) -> None:
    workers = args.load_workers
    with Stack(f"curves-load-w{workers}", keep_logs=args.keep_logs) as stack:
        # Room for every step's warm recipients: each is warmed once, then used once.
        steps = [float(v) for v in args.loads.split(",")]
        env = {"BRIDGE_WORKER_RUNNERS": str(args.runners)}
        bench = SendPath(stack, workers, 2 * args.messages, 0, env)
        say(f"latency against offered load, {workers} worker(s)…")
        bench.start(args.latency_ms)
        rtt = round_trip_ms(stack.discovery_url)
        bound = workers * 1000 / rtt
        bench.warm_up()
        floor = rtt
        for share in steps:
            offered = share * bound
            count = max(4, round(offered * args.step_s))
            result = Result(args.latency_ms)
            result.paced_rate = offered
            bench.measure(result, "bridge", "paced", count)
            phase = result.phase("bridge", "paced")
            latencies = phase.all_latencies()
            p50 = percentile(latencies, 50)
            delivered = ratio(phase.count, phase.seconds)
            report.raw(
                f"offered {share:.1f}x bound ({offered:.1f} msg/s), {workers} workers",
                f"delivered {delivered:.1f} msg/s ({ratio(delivered, offered):.2f}x offered), "
                f"latency p50 / p95 / p99 {p50:.0f} / {percentile(latencies, 95):.0f} / "
                f"{percentile(latencies, 99):.0f} ms ({count} messages, half cold)",
            )
            if delivered < SATURATED_RATE * offered or p50 > SATURATED_P50 * floor:
                report.raw(
                    f"saturation, {workers} workers",
                    f"at {share:.1f}x the bound ({offered:.1f} msg/s offered)",
                )
                break
        else:
            report.raw(f"saturation, {workers} workers", "not reached at the highest step")


def main() -> Report:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument("--workers", default="", help="worker counts, comma-separated")
    parser.add_argument("--messages", type=int, help="messages per burst")
    parser.add_argument("--load-workers", type=int, default=2)
    parser.add_argument(
        "--runners",
        type=int,
        default=BridgeEnvironment.model_fields["worker_runners"].default,
        help="job runners per worker (BRIDGE_WORKER_RUNNERS; the bridge's default)",
    )
    parser.add_argument("--loads", default="", help="offered load as fractions of the bound")
    parser.add_argument("--step-s", type=float, default=0.0, help="seconds per load step")
    parser.add_argument(
        "--trace-jobs",
        action="store_true",
        help="stamp each step of a send job in the workers and print where the time goes",
    )
    args = parser.parse_args()
    counts = [int(v) for v in (args.workers or ("1,2" if args.quick else "1,2,4,8")).split(",")]
    args.messages = args.messages or (20 if args.quick else 300)
    args.loads = args.loads or ("0.5,1.2" if args.quick else "0.2,0.4,0.6,0.8,1.0,1.2")
    args.step_s = args.step_s or (1.0 if args.quick else 4.0)
    report = Report(f"curves: the send path against workers and offered load @{args.latency_ms} ms")
    single = 0.0
    for workers in counts:
        rate, bound, rtt, cpu, cycle = measure_workers(args, workers)
        single = single or rate / workers
        total = sum(cpu[role] for role in ROLES)
        report.ratio(
            f"{workers} workers: delivered / bound (workers / RTT)",
            ratio(rate, bound),
            f"{rate:.1f} vs {bound:.1f} msg/s (RTT {rtt:.1f} ms)",
        )
        if cycle.floor:
            floor_bound = workers * 1000 / cycle.floor_ms
            report.ratio(
                f"{workers} workers: the parts' floor / bound",
                ratio(floor_bound, bound),
                f"the least time per message these parts allow: the round trip {rtt:.1f} + a "
                f"no-op job {cycle.floor[1]:.2f} + two record writes {2 * cycle.floor[2]:.2f} = "
                f"{cycle.floor_ms:.1f} ms",
            )
            report.ratio(
                f"{workers} workers: delivered / the parts' floor",
                ratio(rate, floor_bound),
                f"{rate:.1f} vs {floor_bound:.1f} msg/s",
            )
        report.ratio(
            f"{workers} workers: delivered / ({workers} x the per-worker rate of {counts[0]})",
            ratio(rate, single * workers),
            f"{rate:.1f} vs {single * workers:.1f} msg/s",
        )
        report.raw(
            f"{workers} workers: CPU ms per message",
            ", ".join(f"{role} {cpu[role]:.1f}" for role in ROLES)
            + f"; total {total:.1f} (and the simulator, on the same cores: {cpu['sim']:.1f})",
        )
        if cycle.gaps:
            report.raw(
                f"{workers} workers: send POSTs at the simulator at once, most",
                f"{cycle.in_flight} (each worker holds one UCWA request in flight at most; "
                f"{args.runners} job runner(s) per worker share it)",
            )
            if args.runners > 1:
                report.note(
                    "the parts' floor (the round trip + a no-op job + two record writes) is that "
                    "of one job at a time per worker; with several runners a worker's UCWA "
                    "request can be busy all the time, and the bridge may pass that floor: the "
                    "bound itself is its floor"
                )
                report.note(
                    f"with {args.runners} job runners per worker, a worker's time per message is "
                    f"a runner's from one send POST to its next, divided by {args.runners}; the "
                    "worker's time outside the POST is the time its UCWA request stands idle"
                )
            seen = (
                f"; the POST as the worker saw it {cycle.post_ms:.1f} ms (HTTP at both ends "
                f"and the network {cycle.post_ms - cycle.server_ms:.1f} ms), the worker "
                f"outside it {cycle.cycle_ms - cycle.post_ms:.1f} ms"
                if cycle.post_ms
                else ""
            )
            report.raw(
                f"{workers} workers: a worker's time per message (simulator log)",
                f"{cycle.cycle_ms:.1f} ms from one send POST to its next = the simulator's "
                f"answer {cycle.server_ms:.1f} ms + the rest {cycle.rest_ms:.1f} ms{seen}; "
                f"{TARGET:.0%} of the bound needs the whole under RTT / {TARGET} = "
                f"{rtt / TARGET:.1f} ms",
            )
        if cycle.traced and cycle.traced[0]:
            jobs, per_job, steps = cycle.traced
            report.raw(
                f"{workers} workers: a send job, traced in the workers",
                f"{per_job:.2f} ms from taking one job to taking the next ({jobs} send jobs)",
            )
            for name, ms, cpu_ms in steps:
                report.raw(
                    f"{workers} workers: traced, {name}",
                    f"{ms:.3f} ms per job (the worker's CPU {cpu_ms:.3f})",
                )
        if cycle.handed and cycle.handed[0]:
            count, spans = cycle.handed
            report.raw(
                f"{workers} workers: the slot handed over, traced",
                f"{count} times a runner waited for the slot as another got its POST's answer: "
                "the worker's UCWA request stood idle from that answer to the next POST written",
            )
            for name, mean_ms, median_ms in spans:
                report.raw(
                    f"{workers} workers: handed over, {name}",
                    f"{mean_ms:.3f} ms mean, {median_ms:.3f} ms median",
                )
        report.raw(
            f"{workers} workers: CPU-bound rate (cores / total CPU per message)",
            f"{ratio(CORES * 1000, total):.0f} msg/s on {CORES} cores",
        )
        if workers == 2:
            report.target(
                f"2 workers: >= {TARGET:.0%} of the bound",
                ratio(rate, bound) >= TARGET,
                f"{ratio(rate, bound):.2f}x",
            )
    measure_load(args, report)
    report.note(
        f"bursts of {args.messages} messages, half to warm recipients; simulator at "
        f"{args.latency_ms} ms per UCWA request; the load steps last about {args.step_s:g} s each"
    )
    return report


if __name__ == "__main__":
    raise SystemExit(run_main(main))
