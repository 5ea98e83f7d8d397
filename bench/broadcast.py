"""Broadcast intake: one POST /broadcasts to 500 people against 500 POST /messages, side by side.

One API (gunicorn, 2 workers, the per-key rate limiter on at 1000000/s so it never refuses but
is paid for) on a private Redis; no worker or poller runs, so nothing is sent and only intake is
measured. Rounds alternate (broadcast, singles, singles, broadcast, …): a broadcast is timed
from its request to its 202; the singles are 500 requests from ``--threads`` client threads
(each request on a new connection, as gunicorn's workers close them), timed from the first
until the last 202. Also the API's and Redis's CPU per accepted message for each.

    python -m bench.broadcast [--quick] [--recipients N] [--rounds R] [--threads T]
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from bench._common import (
    API_KEY,
    TEXT_100,
    BenchError,
    Report,
    Stack,
    base_parser,
    http,
    percentile,
    ratio,
    run_main,
    say,
    tree_cpu_s,
)

HEADERS = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}


def people(count: int, round_no: int) -> list[str]:
    return [f"sip:r{round_no}u{n:03d}@contoso.com" for n in range(count)]


def broadcast(api_url: str, to: list[str]) -> float:
    body = json.dumps({"to": to, "text": TEXT_100}).encode()
    started = time.perf_counter()
    status, raw = http("POST", api_url + "/broadcasts", body, HEADERS, timeout=60)
    elapsed = time.perf_counter() - started
    if status != 202:
        raise BenchError(f"POST /broadcasts answered {status}: {raw[:300]!r}")
    if len(json.loads(raw)["messages"]) != len(to):
        raise BenchError("the broadcast did not answer one message per recipient")
    return elapsed


def singles(api_url: str, to: list[str], threads: int) -> float:
    failures: list[int] = []
    lock = threading.Lock()

    def one(uri: str) -> None:
        body = json.dumps({"to": uri, "text": TEXT_100}).encode()
        status, _ = http("POST", api_url + "/messages", body, HEADERS, timeout=60)
        if status != 202:
            with lock:
                failures.append(status)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(one, to))
    elapsed = time.perf_counter() - started
    if failures:
        raise BenchError(f"{len(failures)} POST /messages failed, e.g. {failures[0]}")
    return elapsed


def main() -> Report:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--recipients", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=6, help="of each kind")
    parser.add_argument("--threads", type=int, default=8, help="client threads for singles")
    args = parser.parse_args()
    if args.quick:
        args.rounds = min(args.rounds, 2)
    report = Report(
        f"broadcast: one POST /broadcasts to {args.recipients} against {args.recipients} "
        "POST /messages"
    )
    with Stack("broadcast", keep_logs=args.keep_logs) as stack:
        stack.start_redis()
        api = stack.start_api(workers=2, BRIDGE_RATE_LIMIT="1000000/s", BRIDGE_LOG_LEVEL="WARNING")
        pids = [api.pid, *api.tree()]
        broadcast(stack.api_url, people(min(10, args.recipients), 999))  # warm-up
        singles(stack.api_url, people(10, 998), args.threads)
        times: dict[str, list[float]] = {"broadcast": [], "singles": []}
        cpu: dict[str, float] = {"broadcast": 0.0, "singles": 0.0}
        redis_cpu: dict[str, float] = {"broadcast": 0.0, "singles": 0.0}
        order = ["broadcast", "singles", "singles", "broadcast"]
        for n in range(2 * args.rounds):
            kind = order[n % 4]
            to = people(args.recipients, n)
            api_before, redis_before = tree_cpu_s(pids), tree_cpu_s([stack.redis_pid])
            if kind == "broadcast":
                elapsed = broadcast(stack.api_url, to)
            else:
                elapsed = singles(stack.api_url, to, args.threads)
            cpu[kind] += tree_cpu_s(pids) - api_before
            redis_cpu[kind] += tree_cpu_s([stack.redis_pid]) - redis_before
            times[kind].append(elapsed)
            say(f"round {n + 1}: {kind} {elapsed * 1000:.0f} ms")
        p50 = {kind: percentile(values, 50) for kind, values in times.items()}
        messages = {kind: len(values) * args.recipients for kind, values in times.items()}
        report.ratio(
            f"intake time, {args.recipients} single POSTs / one broadcast",
            ratio(p50["singles"], p50["broadcast"]),
            f"{p50['singles'] * 1000:.0f} vs {p50['broadcast'] * 1000:.0f} ms (p50 of "
            f"{len(times['broadcast'])} each)",
        )
        report.ratio(
            "API CPU per message, singles / broadcast",
            ratio(cpu["singles"] / messages["singles"], cpu["broadcast"] / messages["broadcast"]),
            f"{cpu['singles'] * 1000 / messages['singles']:.3f} vs "
            f"{cpu['broadcast'] * 1000 / messages['broadcast']:.3f} ms",
        )
        report.raw(
            "broadcast intake ms (min | p50 | max)",
            f"{min(times['broadcast']) * 1000:.0f} | {p50['broadcast'] * 1000:.0f} | "
            f"{max(times['broadcast']) * 1000:.0f}",
        )
        report.raw(
            f"singles intake ms, {args.threads} threads (min | p50 | max)",
            f"{min(times['singles']) * 1000:.0f} | {p50['singles'] * 1000:.0f} | "
            f"{max(times['singles']) * 1000:.0f}",
        )
        report.raw(
            "Redis CPU per message ms (broadcast | singles)",
            f"{redis_cpu['broadcast'] * 1000 / messages['broadcast']:.3f} | "
            f"{redis_cpu['singles'] * 1000 / messages['singles']:.3f}",
        )
        accepted = len(stack.redis().keys("msg:*"))
        report.raw("messages stored", f"{accepted:,}")
        report.note(
            "a broadcast is one Redis script call: Redis runs all of it at once, so other "
            "clients wait for it (the raw broadcast time bounds that wait)"
        )
    return report


if __name__ == "__main__":
    raise SystemExit(run_main(main))
