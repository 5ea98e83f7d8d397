"""Each benchmark runs end to end with its smallest settings and prints its labelled figures.

Structure only: no timing thresholds. Every process a benchmark starts inherits a marker in its
environment, so the test can check that none is left running afterwards.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MARKER = "UCWA_BENCH_SMOKE"
TIMEOUT_S = 60

CASES = {
    "send_path": (
        [
            "--messages",
            "6",
            "--baseline-messages",
            "2",
            "--paced",
            "4",
            "--rounds",
            "1",
            "--compare-connections",
        ],
        [
            "throughput, bridge / baseline @20 ms",
            "UCWA requests/message, bridge / baseline @20 ms",
            "UCWA requests/message excl. event GETs, bridge / baseline @20 ms",
            "latency p50 / floor, bridge warm, paced @20 ms",
            "latency p50 / floor, bridge cold, paced @20 ms",
            "bridge burst throughput, kept-alive / a connection per request @20 ms",
            "worker CPU per message, kept-alive / a connection per request @20 ms",
        ],
        [
            "throughput >= 5x baseline @20 ms",
            "UCWA requests/message <= 1/3 of baseline @20 ms",
            "p50 <= floor + 2 RTT + 30 ms @20 ms",
            "baseline UCWA requests/message by kind @20 ms",
            "bridge burst @20 ms",
            "UCWA requests per TCP connection, bridge | baseline @20 ms",
            "UCWA requests per TCP connection, bridge kept-alive | a connection per request @20 ms",
            "Redis round trips per message by role @20 ms",
            "Redis commands per message by role @20 ms",
            "Redis round trips per second while idle, by role @20 ms",
        ],
    ),
    "intake": (
        ["--messages", "5", "--threads", "2"],
        [
            "requests/s, intake / healthz",
            "latency p99, intake / healthz",
            "Redis bytes per accepted message / text bytes",
        ],
        ["requests/s within 2.5x of healthz", "POST /messages: latency", "msg:* (message record)"],
    ),
    "slow_clients": (
        ["--slow", "10", "--threads", "2"],
        ["GET /healthz p99, slow clients / none", "POST /messages p99, slow clients / none"],
        ["GET /healthz p99 with slow clients <= 2.0x", "POST /messages, slow clients"],
    ),
    "inbound": (
        ["--messages", "8"],
        ["webhook latency p50 / UCWA round trip, paced"],
        ["webhook latency p50/p95/p99, burst", "throughput, burst"],
    ),
    "webhooks": (
        # enough jobs that the worker's CPU time (10 ms ticks) is not zero for a batch
        ["--messages", "60", "--rounds", "1"],
        [
            "deliveries/s / no-op jobs/s",
            "deliveries/s, a job each / no-op jobs/s",
            "worker CPU, per delivery / per no-op job",
            "worker CPU per delivery, a job each / in jobs of several",
            "deliveries/s, kept-alive / a connection each",
            "bare urllib3 POSTs/s / no-op jobs/s (the most deliveries/s could reach)",
            "deliveries/s / bare urllib3 POSTs/s",
            "CPU, per delivery (worker) / per bare POST (child)",
            "deliveries/s / no-op jobs/s on RQ's own SimpleWorker",
            "no-op jobs/s, the bridge's worker / RQ's own SimpleWorker",
        ],
        [
            "bare urllib3 POSTs: throughput",
            "no-op jobs, RQ's own SimpleWorker: throughput",
            "deliveries: throughput",
            "no-op jobs: throughput",
            "deliveries, a job each: throughput",
            "deliveries, a connection each: throughput",
            "deliveries per TCP connection, kept-alive receiver",
        ],
    ),
    "list_messages": (
        ["--large", "3000", "--requests", "5"],
        [
            "p50 latency, 3,000 / 1,000: newest page (limit 50)",
            "p50 latency, 3,000 / 1,000: to=<person>&status=failed (limit 10)",
        ],
        ["idempotency_key lookup: large within 1.5x of small", "status=failed (limit 50)"],
    ),
    "broadcast": (
        # enough messages that the API's CPU time (10 ms ticks) is not zero for broadcasts
        ["--recipients", "300", "--rounds", "2", "--threads", "4"],
        [
            "intake time, 300 single POSTs / one broadcast",
            "API CPU per message, singles / broadcast",
        ],
        ["broadcast intake ms (min | p50 | max)", "messages stored"],
    ),
    "person_burst": (
        ["--sizes", "1,4"],
        ["burst of 4: messages/s / 1 / (POST + event)", "burst of 1: messages/s / 1 / RTT"],
        ["burst of 4: hand-off gap p50 / p99 / max", "one UCWA round trip"],
    ),
    "curves": (
        [
            "--workers",
            "1,2",
            "--messages",
            "6",
            "--loads",
            "0.5,1.5",
            "--step-s",
            "0.5",
            "--trace-jobs",
        ],
        [
            "1 workers: delivered / bound (workers / RTT)",
            "2 workers: delivered / (2 x the per-worker rate of 1)",
            "2 workers: the parts' floor / bound",
            "2 workers: delivered / the parts' floor",
        ],
        [
            "2 workers: CPU ms per message",
            "2 workers: a worker's time per message (simulator log)",
            "2 workers: send POSTs at the simulator at once, most",
            "2 workers: a send job, traced in the workers",
            "2 workers: traced, post start → post end",
            "2 workers: >= 90% of the bound",
            "saturation, 2 workers",
        ],
    ),
    "accounts": (
        ["--accounts", "1,2", "--messages", "4", "--idle-s", "1"],
        [
            "1 accounts: delivered / (1 x the per-account rate with 1)",
            "2 accounts: delivered / (2 x the per-account rate with 1)",
            "2 accounts: delivered / the rate the cores allow",
            "idle poller RSS, 2 / 1 accounts",
        ],
        [
            "2 accounts: CPU ms per message",
            "2 accounts: CPU-bound rate (cores / CPU per message)",
            "2 accounts: cores busy during the burst",
            "2 accounts: UCWA event GETs per message",
            "2 accounts: >= 80% of min(2 x per-account rate, what the cores allow)",
            "2 accounts: idle pollers, CPU",
            "2 accounts: idle pollers, RSS",
            "idle poller CPU per account, 2 / 1 accounts",
        ],
    ),
    "floor": (
        # 30 messages: a burst long enough for py-spy to sample on a busy machine (6 once ended
        # before it took a sample).
        ["--messages", "30", "--samples", "20", "--profile"],
        [
            "CPU per message, bridge / floor, worker",
            "CPU per message, bridge / floor, poller",
            "CPU per message, bridge / floor, all roles",
            "UCWA POST client CPU, the bridge's transport / plain requests",
            "POST client CPU, plain requests / http.client alone",
        ],
        [
            "CPU per message <= 8 ms",
            "no-op RQ job, worker | redis CPU",
            "requests on a kept-alive connection, client CPU, POST | GET",
        ],
    ),
    "memory": (
        ["--messages", "10", "--rounds", "2"],
        ["bridge RSS after 10 messages / idle", "poller RSS after 10 / idle"],
        ["no growth after round 1 (each later round <= 1 MB)", "worker RSS MB: idle, +5, +10"],
    ),
}


def _per_connection(label: str) -> Callable[[str], tuple[float, float | None]]:
    def read(output: str) -> tuple[float, float | None]:
        match = re.search(rf"^ +{re.escape(label)}\s+([0-9.]+)(?: \| ([0-9.]+))?", output, re.M)
        assert match, f"no line {label!r} in:\n{output}"
        return float(match.group(1)), None if match.group(2) is None else float(match.group(2))

    return read


REUSE = {
    "send_path": _per_connection(
        "UCWA requests per TCP connection, bridge kept-alive | a connection per request @20 ms"
    ),
    "webhooks": _per_connection("deliveries per TCP connection, kept-alive receiver"),
}


def ratio_value(output: str, label: str) -> float:
    match = re.search(rf"^  {re.escape(label)}\s+(\S+)x\s", output + "\n", re.MULTILINE)
    assert match, f"no ratio line {label!r} in:\n{output}"
    return float(match.group(1))


def marked_processes(token: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if f"{MARKER}={token}".encode() in (entry / "environ").read_bytes():
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
                found.append(f"{entry.name}: {cmdline.decode(errors='replace')[:120]}")
        except OSError:
            continue
    return found


# bench.accounts starts a bridge per account count: its smoke run is a long one.
LONG_CASES = {"accounts"}


@pytest.mark.timeout(TIMEOUT_S + 30)
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.long) if n in LONG_CASES else n for n in CASES]
)
def test_benchmark_runs_and_prints_its_figures(name: str) -> None:
    args, ratios, raws = CASES[name]
    token = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env[MARKER] = token
    proc = subprocess.Popen(
        [sys.executable, "-m", f"bench.{name}", "--quick", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the benchmark stops what it started
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"bench.{name} took longer than {TIMEOUT_S}s\n{out}\n{err}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
    assert out.startswith(f"== {name}:"), out
    assert "ratios (measured side by side in this run):" in out
    assert "raw figures:" in out
    for label in ratios:
        value = ratio_value(out, label)
        assert math.isfinite(value) and value > 0, f"{label}: {value}"
    for label in raws:  # raw figures and targets (met or MISSED: only their presence counts)
        assert re.search(rf"^ +{re.escape(label)}\s+\S", out, re.MULTILINE), (label, out)
    if "--profile" in args:  # py-spy sampled the roles: at least one says where its CPU went
        where = r"^ +where (api|worker|poller) CPU goes, self \(\d+ samples\)\s+\S"
        assert re.search(where, out, re.MULTILINE), out
    if name in REUSE:  # connections kept alive carry several requests; closed ones, one each
        kept, fresh = REUSE[name](out)
        assert kept > 1.5 and (fresh is None or fresh == 1.0), (kept, fresh, out)
    deadline = time.monotonic() + 5
    while (left := marked_processes(token)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"bench.{name} left processes running: {left}"
