"""Slow clients: GET /healthz and POST /messages p50/p99 through gunicorn with and without 100
connections trickling headers and 100 trickling bodies (target: p99 with them within 2x).

Windows alternate (calm, trickled, trickled, calm, …) so both see the same machine. A trickled
window opens the slow connections first and closes them after; each sends one byte a second,
and the read deadlines are set long enough that none is cut off during a window.

    python -m bench.slow_clients [--quick] [--slow N] [--threads T] [--api-workers W]
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bench._common import (
    API_KEY,
    TEXT_100,
    Report,
    Stack,
    base_parser,
    http,
    percentile,
    ratio,
    run_main,
    say,
)

TARGET = 2.0  # p99 with the slow connections within 2x of p99 without
KINDS = ("healthz", "intake")
LABELS = {"healthz": "GET /healthz", "intake": "POST /messages"}


@dataclass
class Latencies:
    ms: list[float] = field(default_factory=list)
    errors: int = 0


class SlowClients:
    """``count`` connections trickling a request line and headers, and ``count`` that sent
    their headers with ``Content-Length: 1000`` and trickle the body, a byte a second each."""

    def __init__(self, api_url: str, count: int) -> None:
        parts = urlsplit(api_url)
        address = (parts.hostname or "127.0.0.1", parts.port or 80)
        head = (
            "POST /messages HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {API_KEY}\r\nContent-Length: 1000\r\n\r\n"
        ).encode()
        self.headers = [socket.create_connection(address) for _ in range(count)]
        self.bodies = [socket.create_connection(address) for _ in range(count)]
        for sock in self.bodies:
            sock.sendall(head)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._trickle, daemon=True)
        self.thread.start()

    def _trickle(self) -> None:
        line = b"POST /messages HTTP/1.1\r\nHost: bench\r\nX-Padding: " + b"x" * 1000
        body = b"x" * 1000
        index = 0
        while not self.stopped.is_set():
            for sock, data in [(s, line) for s in self.headers] + [(s, body) for s in self.bodies]:
                with contextlib.suppress(OSError):
                    sock.send(data[index : index + 1])
            index += 1
            self.stopped.wait(1)

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)
        for sock in self.headers + self.bodies:
            sock.close()


def measure(api_url: str, threads: int, seconds: float, into: dict[str, Latencies]) -> None:
    """``threads`` clients alternating GET /healthz and POST /messages until the deadline."""
    deadline = time.monotonic() + seconds
    lock = threading.Lock()
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}

    def run(offset: int) -> None:
        done: dict[str, list[float]] = {kind: [] for kind in KINDS}
        errors = dict.fromkeys(KINDS, 0)
        count = offset
        while time.monotonic() < deadline:
            kind = KINDS[count % 2]
            count += 1
            started = time.monotonic()
            try:
                if kind == "healthz":
                    ok = http("GET", api_url + "/healthz")[0] == 200
                else:
                    body = json.dumps({"to": f"sip:u{count % 50}@contoso.com", "text": TEXT_100})
                    ok = http("POST", api_url + "/messages", body.encode(), headers)[0] == 202
            except OSError:
                ok = False
            if ok:
                done[kind].append((time.monotonic() - started) * 1000)
            else:
                errors[kind] += 1
        with lock:
            for kind in KINDS:
                into[kind].ms += done[kind]
                into[kind].errors += errors[kind]

    workers = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def main() -> Report:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--slow", type=int, default=100, help="connections of each slow kind")
    parser.add_argument("--threads", type=int, default=4, help="client threads")
    parser.add_argument("--api-workers", type=int, default=2, help="BRIDGE_API_WORKERS")
    args = parser.parse_args()
    windows, seconds = (4, 1.0) if args.quick else (8, 3.0)
    report = Report("slow_clients: /healthz and POST /messages with and without slow clients")
    results = {state: {kind: Latencies() for kind in KINDS} for state in ("calm", "trickled")}
    with Stack("slow_clients", keep_logs=args.keep_logs) as stack:
        say(f"starting redis and the api ({args.api_workers} gunicorn workers)…")
        stack.start_redis()
        stack.start_api(
            workers=args.api_workers,
            BRIDGE_RATE_LIMIT="off",
            BRIDGE_API_HEADER_TIMEOUT_S="600",
            BRIDGE_API_BODY_TIMEOUT_S="600",
        )
        measure(stack.api_url, 1, 0.3, {kind: Latencies() for kind in KINDS})  # warm-up
        say(f"{windows} alternating windows of {seconds:.1f} s, {2 * args.slow} slow clients…")
        for index in range(windows):
            trickled = (index + index // 2) % 2 == 1  # ABBA
            slow = SlowClients(stack.api_url, args.slow) if trickled else None
            try:
                if slow:
                    time.sleep(1)  # every slow connection accepted and part-way through
                measure(
                    stack.api_url,
                    args.threads,
                    seconds,
                    results["trickled" if trickled else "calm"],
                )
            finally:
                if slow:
                    slow.close()

    for kind in KINDS:
        calm, slowed = results["calm"][kind], results["trickled"][kind]
        for pct in (50, 99):
            with_slow, without = percentile(slowed.ms, pct), percentile(calm.ms, pct)
            report.ratio(
                f"{LABELS[kind]} p{pct}, slow clients / none",
                ratio(with_slow, without),
                f"{with_slow:.1f} vs {without:.1f} ms",
            )
    for kind in KINDS:
        p99 = ratio(
            percentile(results["trickled"][kind].ms, 99), percentile(results["calm"][kind].ms, 99)
        )
        report.target(
            f"{LABELS[kind]} p99 with slow clients <= {TARGET}x",
            p99 <= TARGET,
            f"{p99:.2f}x (limit {TARGET}x)",
        )
    for state in ("calm", "trickled"):
        for kind in KINDS:
            found = results[state][kind]
            report.raw(
                f"{LABELS[kind]}, {'no slow clients' if state == 'calm' else 'slow clients'}",
                f"p50 {percentile(found.ms, 50):.1f} ms, p99 {percentile(found.ms, 99):.1f} ms "
                f"({len(found.ms)} requests, {found.errors} errors)",
            )
    report.note(
        f"{args.api_workers} gunicorn gevent workers, {args.threads} client threads, "
        f"{args.slow} connections trickling headers and {args.slow} trickling bodies"
    )
    return report


if __name__ == "__main__":
    raise SystemExit(run_main(main))
