"""GET /messages: page latency with 1,000 stored messages against 100,000, side by side.

One private Redis holds two databases: db 0 with the small set, db 1 with the large one, both
written through the intake's own script (records, lines and indexes) with the statuses,
people and idempotency keys spread alike. Two APIs (one gunicorn worker each) serve one
database each; the benchmark alternates the same request between them, so both see the same
machine at the same moment, and reports the large / small latency ratio per query (target:
at most 1.5x, the cost of a page does not grow with the number of messages), with the Redis
commands one page ran in each.

    python -m bench.list_messages [--quick] [--small N] [--large N] [--requests R]
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import replace
from typing import Any

import redis

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
)
from bridge.outbound.messages import MessageRecord, MessageStatus, MessageStore

TARGET = 1.5
PEOPLE = 20
STATUSES = [  # roughly what a day of traffic leaves: mostly delivered, a few failures
    (MessageStatus.DELIVERED, 90),
    (MessageStatus.FAILED, 4),
    (MessageStatus.EXPIRED, 2),
    (MessageStatus.QUEUED, 3),
    (MessageStatus.CANCELLED, 1),
]
BATCH = 2_000


def person(index: int) -> str:
    return f"sip:user{index % PEOPLE:02d}@contoso.com"


def populate(client: redis.Redis, count: int, seed: int) -> None:
    """``count`` messages over the past day, through the intake's script in pipelined batches."""
    rng = random.Random(seed)
    store = MessageStore(client, record_ttl_s=7 * 86_400)
    now = time.time()
    statuses = [s for s, _ in STATUSES]
    weights = [w for _, w in STATUSES]
    for start in range(0, count, BATCH):
        with client.pipeline(transaction=False) as pipe:
            for n in range(start, min(count, start + BATCH)):
                at = now - 86_400 + 86_400 * n / count
                record = MessageRecord.new(to=person(n), text=TEXT_100, validity_s=600, now=at)
                status = rng.choices(statuses, weights)[0]
                record = replace(record, status=status, idempotency_key=f"job-{n}")
                store.accept(record, pipe)
            pipe.execute()


def queries(count: int) -> dict[str, str]:
    """The same requests for both sizes: each finds matches near the newest end, as a user's
    question usually does, plus one that pages deep."""
    return {
        "newest page (limit 50)": "/messages?limit=50",
        "status=failed (limit 50)": "/messages?status=failed&limit=50",
        "status=failed,expired (limit 20)": "/messages?status=failed,expired&limit=20",
        "to=<person> (limit 20)": f"/messages?to={person(7)}&limit=20",
        "to=<person>&status=failed (limit 10)": f"/messages?to={person(7)}&status=failed&limit=10",
        "idempotency_key lookup": f"/messages?idempotency_key=job-{count - 3}",
        "since=<1 h ago> (limit 50)": "/messages?limit=50&since=__HOUR_AGO__",
    }


def timed_get(url: str) -> tuple[float, Any]:
    started = time.perf_counter()
    status, body = http("GET", url, headers={"Authorization": f"Bearer {API_KEY}"})
    elapsed = (time.perf_counter() - started) * 1000
    if status != 200:
        raise BenchError(f"GET {url} answered {status}: {body[:200]!r}")
    return elapsed, json.loads(body)


def commands_per_page(client: redis.Redis, url: str) -> int:
    client.config_resetstat()
    timed_get(url)
    stats = client.info("commandstats")
    return sum(
        int(v["calls"])
        for name, v in stats.items()
        if not name.startswith(("cmdstat_info", "cmdstat_config", "cmdstat_ping"))
    )


def main() -> Report:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200, help="per query and size")
    args = parser.parse_args()
    if args.quick:
        args.large, args.requests = min(args.large, 20_000), min(args.requests, 40)
    report = Report(
        f"list_messages: GET /messages, {args.small:,} against {args.large:,} stored messages"
    )
    with Stack("list-messages", keep_logs=args.keep_logs) as stack:
        stack.start_redis()
        base = stack.redis_url.rstrip("/")
        small_db = redis.Redis.from_url(base + "/0")
        large_db = redis.Redis.from_url(base + "/1")
        say(f"storing {args.small:,} and {args.large:,} messages")
        started = time.perf_counter()
        populate(small_db, args.small, seed=1)
        populate(large_db, args.large, seed=2)
        say(f"stored in {time.perf_counter() - started:.1f} s")
        urls = {}
        for name, db in (("small", 0), ("large", 1)):
            stack.start_api(workers=1, BRIDGE_REDIS_URL=f"{base}/{db}", BRIDGE_LOG_LEVEL="WARNING")
            urls[name] = stack.api_url
        hour_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
        counts = {"small": args.small, "large": args.large}
        clients = {"small": small_db, "large": large_db}
        for label in queries(args.small):
            paths = {
                size: queries(counts[size])[label].replace("__HOUR_AGO__", hour_ago)
                for size in urls
            }
            times: dict[str, list[float]] = {"small": [], "large": []}
            items: dict[str, int] = {}
            for turn in range(args.requests + 5):
                order = ("small", "large") if turn % 2 == 0 else ("large", "small")
                for size in order:
                    elapsed, page = timed_get(urls[size] + paths[size])
                    items[size] = len(page["items"])
                    if turn >= 5:  # warm-up: connections, script cache, the Python side
                        times[size].append(elapsed)
            p50 = {size: percentile(times[size], 50) for size in times}
            p99 = {size: percentile(times[size], 99) for size in times}
            commands = {
                size: commands_per_page(clients[size], urls[size] + paths[size]) for size in urls
            }
            report.ratio(
                f"p50 latency, {args.large:,} / {args.small:,}: {label}",
                ratio(p50["large"], p50["small"]),
                f"{p50['large']:.2f} / {p50['small']:.2f} ms",
            )
            report.raw(
                f"{label}",
                f"p50 {p50['small']:.2f} | {p50['large']:.2f} ms, p99 {p99['small']:.2f} | "
                f"{p99['large']:.2f} ms, items {items['small']} | {items['large']}, "
                f"Redis commands/page {commands['small']} | {commands['large']}",
            )
            report.target(
                f"{label}: large within {TARGET}x of small",
                ratio(p50["large"], p50["small"]) <= TARGET,
                f"{ratio(p50['large'], p50['small']):.2f}x",
            )
        memory = {
            size: int(client.info("keyspace").get(f"db{db}", {}).get("keys", 0))
            for size, client, db in (("small", small_db, 0), ("large", large_db, 1))
        }
        used = large_db.info("memory")["used_memory"]
        report.raw(
            "keys per database (small | large)", f"{memory['small']:,} | {memory['large']:,}"
        )
        report.raw("Redis used_memory, both databases", f"{used / 2**20:.0f} MB")
        report.note("latencies are of a whole HTTP request to a one-worker gunicorn on this host")
        small_db.close()
        large_db.close()
    return report


if __name__ == "__main__":
    raise SystemExit(run_main(main))
