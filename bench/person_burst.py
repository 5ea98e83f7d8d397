"""Per-person bursts: N messages to one person at once, sent one after another in accepted order.

Messages to one person go one at a time (ordering), so a burst to one person is bound by how
fast one message follows the last: its send POST and the event that says it was delivered (the
poller's parked event GET, answered at once). That protocol time is measured per message in the
same run, from its ``sending`` to its ``delivered`` (record history); the bound is
1 / (its mean), and the target 80 % of it. Also printed: the hand-off gap, from one message's
``delivered`` to the next one's ``sending``, the bridge's own share between two messages, and
the rate against 1 / (one UCWA round trip), what no client can beat.

Redis, the simulator (``--latency-ms`` per UCWA request, time scale 0.05), the API, the poller
and ``--workers`` workers; the recipient's conversation is warm before the bursts start.

    python -m bench.person_burst [--quick] [--sizes 1,10,100] [--latency-ms L] [--workers W]
"""

from __future__ import annotations

import itertools
import time
from datetime import datetime

from bench._common import (
    BOT,
    BOT_PASSWORD,
    TEXT_100,
    ApiClient,
    BenchError,
    Report,
    Stack,
    base_parser,
    percentile,
    ratio,
    round_trip_ms,
    run_main,
    say,
)

PERSON = "sip:alice@contoso.com"
TIME_SCALE = 0.05
TARGET = 0.8


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def burst(
    api: ApiClient, size: int, label: str, timeout: float
) -> tuple[float, list[float], list[float]]:
    """Accept ``size`` messages to one person at once; the messages/s from the first accept to
    the last delivery, the hand-off gaps and the protocol times (sending to delivered), ms."""
    started = time.time()
    ids = [api.post_message(PERSON, f"{label} {n:04d} {TEXT_100}"[:100]) for n in range(size)]
    deadline = time.monotonic() + timeout
    records: dict[str, dict[str, object]] = {}
    while len(records) < size:
        if time.monotonic() > deadline:
            raise BenchError(f"{size - len(records)} of the {label} burst not final in time")
        for message_id in ids:
            if message_id not in records:
                record = api.message(message_id)
                if record["status"] in ("delivered", "failed", "expired", "cancelled"):
                    records[message_id] = record
        time.sleep(0.05)
    ordered = [records[m] for m in ids]
    if any(r["status"] != "delivered" for r in ordered):
        raise BenchError(f"not every message of the {label} burst was delivered")
    histories = [dict(r["history"]) for r in ordered]  # type: ignore[call-overload]
    last = max(epoch(h["delivered"]) for h in histories)
    gaps = [
        (epoch(after["sending"]) - epoch(before["delivered"])) * 1000
        for before, after in itertools.pairwise(histories)
    ]
    protocol = [(epoch(h["delivered"]) - epoch(h["sending"])) * 1000 for h in histories]
    return ratio(size, last - started), gaps, protocol


def main() -> Report:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--sizes", default="1,10,100", help="burst sizes, comma-separated")
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.quick:
        sizes = [min(s, 10) for s in sizes]
    report = Report(f"person_burst: bursts to one person @{args.latency_ms} ms")
    with Stack("person-burst", keep_logs=args.keep_logs) as stack:
        stack.start_redis()
        users = [
            {"sip": BOT, "password": BOT_PASSWORD, "name": "Bridge Bot"},
            {"sip": PERSON, "password": "pw"},
        ]
        stack.start_sim(users, time_scale=TIME_SCALE, latency_ms=args.latency_ms)
        stack.start_api(workers=2)
        stack.start_poller()
        for _ in range(args.workers):
            stack.start_worker()
        api = ApiClient(stack.api_url)
        burst(api, 2, "warm-up", 60)  # opens the conversation: every burst below is warm
        rtt = round_trip_ms(stack.discovery_url)
        for size in sizes:
            say(f"a burst of {size} to one person…")
            rate, gaps, protocol = burst(api, size, f"burst{size}", 30 + size * 2)
            bound = 1000 / (sum(protocol) / len(protocol))
            report.ratio(
                f"burst of {size}: messages/s / 1 / (POST + event)",
                ratio(rate, bound),
                f"{rate:.1f} vs {bound:.1f} msg/s",
            )
            report.ratio(
                f"burst of {size}: messages/s / 1 / RTT",
                ratio(rate, 1000 / rtt),
                f"{rate:.1f} vs {1000 / rtt:.1f} msg/s",
            )
            report.raw(
                f"burst of {size}: POST + event (sending to delivered) p50 / p99",
                f"{percentile(protocol, 50):.0f} / {percentile(protocol, 99):.0f} ms",
            )
            if gaps:
                report.raw(
                    f"burst of {size}: hand-off gap p50 / p99 / max",
                    f"{percentile(gaps, 50):.0f} / {percentile(gaps, 99):.0f} / {max(gaps):.0f} ms",
                )
            report.target(
                f"burst of {size}: >= {TARGET:.0%} of the bound",
                ratio(rate, bound) >= TARGET,
                f"{ratio(rate, bound):.2f}x",
            )
        report.raw("one UCWA round trip", f"{rtt:.1f} ms, measured")
        report.note(
            "the rate runs from the first POST /messages to the last delivery; the hand-off gap "
            "is the bridge's own time between two messages to one person (record history, ms)"
        )
    return report


if __name__ == "__main__":
    raise SystemExit(run_main(main))
