"""Intake: POST /messages requests/s and p50/p99 latency through gunicorn, against GET /healthz
on the same server (target: within 2.5x), and the Redis memory one accepted message costs.

Client threads hammer one kind of request per window; windows alternate (healthz, intake,
intake, healthz, …) so both see the same machine. Then Redis is flushed, a batch of messages
with a 100-character text is accepted, and the memory it added is divided by the batch size.
No poller and no worker run, so every message stays queued; the API never talks to UCWA, so
no simulator is needed either.

    python -m bench.intake [--quick] [--messages N] [--threads T] [--api-workers W]
"""

from __future__ import annotations

import json
import resource
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import redis

from bench._common import (
    API_KEY,
    TEXT_100,
    BenchError,
    Child,
    Report,
    Stack,
    base_parser,
    cpu_s,
    http,
    percentile,
    ratio,
    run_main,
    say,
    tree_cpu_s,
)

TARGET = 2.5  # POST /messages within 2.5x of the trivial endpoint, in requests/s and p99
# The per-key limiter stays on, as by default, but so high that it never refuses: intake's
# figures include what checking it costs on every POST.
RATE_LIMIT = "1000000/s"
RECIPIENTS = 100  # spread over many lines, as real traffic is; one line would serialize on WATCH


def recipient(index: int) -> str:
    return f"sip:user{index % RECIPIENTS:03d}@contoso.com"


@dataclass
class Window:
    """Requests of one kind completed in one or more measurement windows."""

    kind: str
    count: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    cpu: Counter[str] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        return ratio(self.count, self.seconds)

    def cpu_ms(self, role: str) -> float:
        return ratio(self.cpu[role] * 1000, self.count)


class Load:
    """``threads`` client threads sending one kind of request until a deadline."""

    def __init__(self, api_url: str, threads: int) -> None:
        self.api_url = api_url
        self.threads = threads
        self.sequence = 0
        self.lock = threading.Lock()
        self.post_headers = {
            "Authorization": f"Bearer {API_KEY}",
            "Content-Type": "application/json",
        }

    def request(self, kind: str) -> bool:
        if kind == "healthz":
            return http("GET", self.api_url + "/healthz")[0] == 200
        with self.lock:
            self.sequence += 1
            index = self.sequence
        body = json.dumps({"to": recipient(index), "text": TEXT_100}).encode()
        return http("POST", self.api_url + "/messages", body, self.post_headers)[0] == 202

    def window(self, kind: str, seconds: float) -> Window:
        result = Window(kind)
        deadline = time.monotonic() + seconds
        lock = threading.Lock()

        def run() -> None:
            done: list[float] = []
            errors = 0
            while time.monotonic() < deadline:
                started = time.monotonic()
                try:
                    ok = self.request(kind)
                except OSError:
                    ok = False
                if ok:
                    done.append((time.monotonic() - started) * 1000)
                else:
                    errors += 1
            with lock:
                result.latencies_ms += done
                result.count += len(done)
                result.errors += errors

        started = time.monotonic()
        # Daemons: after a Ctrl-C nobody waits for them to reach the deadline.
        workers = [threading.Thread(target=run, daemon=True) for _ in range(self.threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        result.seconds = time.monotonic() - started
        return result


def client_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure_rates(
    stack: Stack, api: Child, threads: int, windows: int, seconds: float
) -> dict[str, Window]:
    load = Load(stack.api_url, threads)
    totals = {kind: Window(kind) for kind in ("healthz", "intake")}
    load.window("healthz", 0.3)  # warm-up: imports, connection pools
    load.window("intake", 0.3)
    for index in range(windows):
        # ABBA: healthz, intake, intake, healthz, …
        kind = ("healthz", "intake")[(index + index // 2) % 2]
        before = _cpu(stack, api)
        window = load.window(kind, seconds)
        after = _cpu(stack, api)
        total = totals[kind]
        total.count += window.count
        total.errors += window.errors
        total.seconds += window.seconds
        total.latencies_ms += window.latencies_ms
        after.subtract(before)
        total.cpu.update(after)
    return totals


def _cpu(stack: Stack, api: Child) -> Counter[str]:
    return Counter(
        {
            "api": tree_cpu_s(api.tree()),
            "redis": cpu_s(stack.redis_pid),
            "client": client_cpu_s(),
        }
    )


@dataclass
class Memory:
    messages: int
    used_delta: int
    by_family: dict[str, int]
    key_count: int


def family(key: str) -> str:
    """``msg:<id>`` → ``msg:*``; recipient lines and RQ keys grouped the same way."""
    if key.startswith("rq:job:"):
        return "rq:job:* (send job hash)"
    if key.startswith("msg:"):
        return "msg:* (message record)"
    if key.startswith("rcpt:") and key.endswith(":fifo"):
        return "rcpt:*:fifo (recipient line)"
    if key.startswith("rcpt:") and key.endswith(":seq"):
        return "rcpt:*:seq (sequence counter)"
    if key.startswith("idem:"):
        return "idem:* (idempotency answer)"
    if key.startswith("msgs:idem:"):
        return "msgs:idem:* (listing index by Idempotency-Key)"
    if key.startswith("msgs:status:") and key.count(":") > 2:
        return "msgs:status:*:to:* (listing index, person by status)"
    if key.startswith("msgs:to:"):
        return "msgs:to:* (listing index by person)"
    if key.startswith("msgs:"):
        return "msgs:all, msgs:status:* (listing indexes)"
    return key


def measure_memory(stack: Stack, count: int, idempotent: bool) -> Memory:
    client = stack.redis()
    try:
        client.flushall()
        time.sleep(0.2)
        before = _used_memory(client)
        headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}

        def post(index: int) -> None:
            body = json.dumps({"to": recipient(index % 10), "text": TEXT_100}).encode()
            extra = {"Idempotency-Key": f"bench-{index}"} if idempotent else {}
            status, raw = http("POST", stack.api_url + "/messages", body, {**headers, **extra})
            if status != 202:
                raise BenchError(f"POST /messages answered {status}: {raw[:200]!r}")

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(post, range(count)))
        time.sleep(0.2)
        used = _used_memory(client) - before
        sizes: Counter[str] = Counter()
        keys = [k.decode() for k in client.scan_iter(count=1000)]
        for key in keys:
            sizes[family(key)] += int(client.memory_usage(key, samples=0) or 0)
        return Memory(count, used, dict(sizes), len(keys))
    finally:
        client.close()


def _used_memory(client: redis.Redis) -> int:
    info: dict[str, Any] = client.info("memory")
    return int(info["used_memory"])


def main() -> Report:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--messages", type=int, help="messages accepted for the memory figure")
    parser.add_argument("--threads", type=int, default=8, help="client threads")
    parser.add_argument("--api-workers", type=int, default=2, help="BRIDGE_API_WORKERS")
    args = parser.parse_args()
    messages = args.messages or (200 if args.quick else 2000)
    windows, seconds = (4, 0.75) if args.quick else (16, 2.0)
    report = Report("intake: POST /messages vs GET /healthz, Redis bytes per message")
    with Stack("intake", keep_logs=args.keep_logs) as stack:
        say(f"starting redis and the api ({args.api_workers} gunicorn workers)…")
        stack.start_redis()
        api = stack.start_api(workers=args.api_workers, BRIDGE_RATE_LIMIT=RATE_LIMIT)
        say(f"{windows} alternating windows of {seconds:.2f} s, {args.threads} client threads…")
        totals = measure_rates(stack, api, args.threads, windows, seconds)
        say(f"memory: {messages} messages without, then with an Idempotency-Key…")
        plain = measure_memory(stack, messages, idempotent=False)
        keyed = measure_memory(stack, messages, idempotent=True)

    health, intake = totals["healthz"], totals["intake"]
    report.ratio(
        "requests/s, intake / healthz",
        ratio(intake.rate, health.rate),
        f"POST /messages {intake.rate:.0f}/s, GET /healthz {health.rate:.0f}/s",
    )
    intake_p50, health_p50 = (
        percentile(intake.latencies_ms, 50),
        percentile(health.latencies_ms, 50),
    )
    intake_p99, health_p99 = (
        percentile(intake.latencies_ms, 99),
        percentile(health.latencies_ms, 99),
    )
    report.ratio(
        "latency p50, intake / healthz",
        ratio(intake_p50, health_p50),
        f"{intake_p50:.1f} vs {health_p50:.1f} ms",
    )
    report.ratio(
        "latency p99, intake / healthz",
        ratio(intake_p99, health_p99),
        f"{intake_p99:.1f} vs {health_p99:.1f} ms",
    )
    slower = ratio(health.rate, intake.rate)
    report.target(
        f"requests/s within {TARGET}x of healthz",
        slower <= TARGET,
        f"healthz / intake {slower:.2f}x (limit {TARGET}x)",
    )
    report.target(
        f"p99 within {TARGET}x of healthz",
        ratio(intake_p99, health_p99) <= TARGET,
        f"intake / healthz {ratio(intake_p99, health_p99):.2f}x (limit {TARGET}x)",
    )
    report.ratio(
        "api CPU per request, intake / healthz",
        ratio(intake.cpu_ms("api"), health.cpu_ms("api")),
        f"{intake.cpu_ms('api'):.2f} vs {health.cpu_ms('api'):.2f} ms",
    )
    text_bytes = len(TEXT_100.encode())
    per_message = plain.used_delta / plain.messages
    keys_per_message = sum(plain.by_family.values()) / plain.messages
    report.ratio(
        "Redis bytes per accepted message / text bytes",
        ratio(per_message, text_bytes),
        f"{per_message:.0f} B (INFO used_memory) for a {text_bytes}-byte text",
    )
    report.ratio(
        "Redis key bytes per message / text bytes",
        ratio(keys_per_message, text_bytes),
        f"{keys_per_message:.0f} B (sum of MEMORY USAGE over the keys)",
    )
    keyed_per_message = keyed.used_delta / keyed.messages
    report.ratio(
        "Redis bytes per message, with / without Idempotency-Key",
        ratio(keyed_per_message, per_message),
        f"{keyed_per_message:.0f} vs {per_message:.0f} B",
    )
    for window in (intake, health):
        name = "POST /messages" if window.kind == "intake" else "GET /healthz"
        report.raw(
            f"{name}: throughput",
            f"{window.rate:.0f} req/s ({window.count} in {window.seconds:.1f} s, "
            f"{window.errors} errors)",
        )
        report.raw(
            f"{name}: latency",
            f"p50 {percentile(window.latencies_ms, 50):.1f} ms, "
            f"p95 {percentile(window.latencies_ms, 95):.1f} ms, "
            f"p99 {percentile(window.latencies_ms, 99):.1f} ms",
        )
        report.raw(
            f"{name}: CPU ms/request",
            f"api {window.cpu_ms('api'):.2f}, redis {window.cpu_ms('redis'):.2f}, "
            f"client {window.cpu_ms('client'):.2f}",
        )
    report.raw(
        "Redis used_memory per message",
        f"{per_message:.0f} B ({plain.used_delta} B for {plain.messages} messages, "
        f"{plain.key_count} keys)",
    )
    for name, size in sorted(plain.by_family.items(), key=lambda item: -item[1]):
        report.raw(f"  {name}", f"{size / plain.messages:.0f} B/message")
    report.raw("Redis used_memory per message, Idempotency-Key", f"{keyed_per_message:.0f} B")
    report.note(
        f"{args.api_workers} gunicorn sync workers, {args.threads} client threads in this "
        f"process (one connection per request), {RECIPIENTS} recipients; no poller or worker"
    )
    return report


if __name__ == "__main__":
    raise SystemExit(run_main(main))
