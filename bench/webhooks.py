"""Webhook delivery throughput: signed deliveries/s against no-op RQ jobs/s on the same worker.

One ``python -m bridge.cli worker`` (the production worker: RQ SimpleWorker on the send and
webhooks queues, with the scheduler) delivers N staged ``message.received`` events to a local
receiver (a ThreadingHTTPServer answering 200), several deliveries to a job as a poller's event
batch stages them (``BRIDGE_WEBHOOK_BATCH_SIZE``); side by side, the same worker runs N no-op
jobs on the ``webhooks`` queue, delivers N events with a job each (batches of one, as every
delivery was before jobs carried several), and delivers N events to a second receiver that
closes every connection after its answer (HTTP/1.0, as every delivery was before the worker
kept connections alive), so each saving is measured against its absence in the same run. The
floor of a delivery runs beside them: a child process POSTs the same body with the same headers
to the same receiver with a plain kept-alive urllib3 connection pool (the layer a delivery POSTs
through) and nothing else (no signing, no check of the address, no log in Redis, no job), which
no delivery can beat; and no-op jobs on RQ as it comes (``rq worker`` with its SimpleWorker, on a
queue of its own), the job cost the bridge's worker class started from. Each batch is written
in one MULTI/EXEC so the worker finds all of it at once; its rate runs from that commit until RQ
has removed the last job (all kinds are enqueued with ``result_ttl=0``, as the bridge enqueues
its jobs). The six kinds rotate, each taking each place in turn.

    python -m bench.webhooks [--quick] [--messages N] [--rounds R]
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import redis
from rq import Queue

from bench._common import (
    BOT,
    BOT_PASSWORD,
    TEXT_100,
    BenchError,
    Child,
    Report,
    Stack,
    base_parser,
    cpu_s,
    ratio,
    run_main,
    say,
)
from bridge.webhooks.endpoints import WebhookEndpoint
from bridge.webhooks.jobs import QUEUE_NAME
from bridge.webhooks.log import DeliveryLog, DeliveryStatus
from bridge.webhooks.outbox import Outbox, new_event
from bridge.webhooks.settings import WebhookSettings

SET_BY_CLIENT = {"host", "content-length", "connection", "accept-encoding"}
NOOP_FUNC = "operator.truth"  # a C function: the job costs RQ's bookkeeping and nothing else
JOB_TIMEOUT_S = WebhookSettings().job_timeout_s


class Receiver:
    """Answers every POST with 200; counts them and keeps each one's arrival time and body."""

    def __init__(self, keep_alive: bool = True) -> None:
        self.count = 0
        self.connections = 0
        self.arrivals: list[tuple[float, bytes]] = []
        self.last_headers: dict[str, str] | None = None  # the last POST's, as sent
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.0 answers end the connection: the sender opens one per delivery.
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                arrived = time.time()
                with receiver.lock:
                    receiver.count += 1
                    receiver.arrivals.append((arrived, body))
                    receiver.last_headers = {
                        k: v for k, v in self.headers.items() if k.lower() not in SET_BY_CLIENT
                    }
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def get_request(self) -> Any:
                accepted = super().get_request()
                with receiver.lock:
                    receiver.connections += 1
                return accepted

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Batch:
    kind: str
    count: int = 0
    seconds: float = 0.0
    cpu_s: float = 0.0

    @property
    def rate(self) -> float:
        return ratio(self.count, self.seconds)

    def add(self, other: Batch) -> None:
        self.count += other.count
        self.seconds += other.seconds
        self.cpu_s += other.cpu_s


DELIVERIES, SINGLE = "deliveries", "deliveries, a job each"
CLOSING, NOOPS = "deliveries, a connection each", "no-op jobs"
BARE = "bare urllib3 POSTs"
STOCK = "no-op jobs, RQ's own SimpleWorker"
STOCK_QUEUE = "bench-stock-noop"

# The floor's child: N kept-alive POSTs after a warm-up; prints its seconds and CPU seconds.
_BARE_POSTS = """
import json, sys, time, urllib3
url, count = urllib3.util.parse_url(sys.argv[1]), int(sys.argv[2])
body, headers = sys.argv[3].encode(), json.loads(sys.argv[4])
pool = urllib3.HTTPConnectionPool(url.host, url.port, maxsize=1, retries=False)
def post():
    if pool.request("POST", url.request_uri, body=body, headers=headers).status >= 400:
        raise SystemExit("the receiver refused a bare POST")
for _ in range(50):
    post()
started, cpu = time.perf_counter(), time.process_time()
for _ in range(count):
    post()
print(time.perf_counter() - started, time.process_time() - cpu)
"""


class WebhookBench:
    def __init__(self, stack: Stack, receivers: dict[str, Receiver], count: int) -> None:
        """``receivers``: DELIVERIES (keeps connections alive) and CLOSING (closes each)."""
        self.stack = stack
        self.receivers = receivers
        self.count = count
        secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
        names = {DELIVERIES: "bench", CLOSING: "bench-closing"}
        self.endpoint_config = [
            {"id": names[k], "url": r.url, "secrets": [secret], "allow_private": True}
            for k, r in receivers.items()
        ]
        self.endpoints = {
            k: WebhookEndpoint(id=names[k], url=r.url, secrets=[secret], allow_private=True)
            for k, r in receivers.items()
        }
        self.client: redis.Redis = stack.redis()
        self.worker: Child | None = None
        self.stock: Child | None = None

    def start_worker(self) -> None:
        self.worker = self.stack.start_worker(BRIDGE_WEBHOOKS=json.dumps(self.endpoint_config))
        # RQ as it comes (``rq worker``, its SimpleWorker), on a queue of its own: the no-op
        # job the bridge's worker class started from, beside the one it runs now.
        self.stock = self.stack.spawn(
            "rq-stock",
            [
                "-m",
                "rq.cli",
                "worker",
                "--url",
                self.stack.redis_url,
                "--worker-class",
                "rq.worker.SimpleWorker",
                "--logging_level",
                "WARNING",
                STOCK_QUEUE,
            ],
            self.stack._plain_env(),
        )

    def deliveries(self, kind: str = DELIVERIES) -> Batch:
        """The batch's events staged in one transaction, as a poller stages an event batch:
        jobs of ``BRIDGE_WEBHOOK_BATCH_SIZE`` deliveries (default), or one each (SINGLE)."""
        settings = WebhookSettings(batch_size=1) if kind == SINGLE else WebhookSettings()
        endpoint_kind = DELIVERIES if kind == SINGLE else kind
        receiver = self.receivers[endpoint_kind]
        data = {"from": "sip:alice@contoso.com", "conversation_id": "conv-bench", "text": TEXT_100}
        now = datetime.now(UTC)
        received = receiver.count
        with self.client.pipeline() as pipe:
            pipe.multi()
            ids: list[str] = []
            with Outbox(pipe, [self.endpoints[endpoint_kind]], settings) as outbox:
                for _ in range(self.count):
                    ids += outbox.stage(new_event("message.received", data, now))
                job_ids = outbox.flush()
            batch = self._run(kind, job_ids, pipe, deliveries=len(ids))
        log = DeliveryLog(self.client, settings.retention_s)
        failed = [
            i for i in ids if (r := log.get(i)) is None or r.status != DeliveryStatus.SUCCEEDED
        ]
        if failed or receiver.count - received != len(ids):
            raise BenchError(
                f"{len(failed)} deliveries did not succeed; the receiver got "
                f"{receiver.count - received} of {len(ids)}"
            )
        return batch

    def bare_posts(self) -> Batch:
        """The floor: ``count`` plain POSTs of a delivery's body and headers, from a child."""
        receiver = self.receivers[DELIVERIES]
        if not receiver.arrivals or receiver.last_headers is None:
            raise BenchError("no delivery has arrived yet to copy")
        body = receiver.arrivals[-1][1].decode()
        headers = json.dumps(receiver.last_headers)
        before = receiver.count
        done = subprocess.run(
            [sys.executable, "-c", _BARE_POSTS, receiver.url, str(self.count), body, headers],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise BenchError(f"the bare POSTs failed: {done.stderr.strip()[-300:]}")
        seconds, cpu = (float(v) for v in done.stdout.split())
        if receiver.count - before != self.count + 50:
            raise BenchError(f"the receiver got {receiver.count - before} bare POSTs")
        return Batch(BARE, count=self.count, seconds=seconds, cpu_s=cpu)

    def noops(self, kind: str = NOOPS) -> Batch:
        """``count`` no-op jobs at once: on the bridge's worker (NOOPS) or on RQ's own (STOCK)."""
        stock = kind == STOCK
        queue = Queue(STOCK_QUEUE if stock else QUEUE_NAME, connection=self.client)
        stamp = time.monotonic_ns()
        job_ids = [f"bench-noop-{stamp}-{i}" for i in range(self.count)]
        with self.client.pipeline() as pipe:
            pipe.multi()
            queue.enqueue_many(
                [
                    Queue.prepare_data(
                        NOOP_FUNC,
                        args=(0,),
                        job_id=job_id,
                        timeout=JOB_TIMEOUT_S,
                        result_ttl=0,
                        description=f"no-op {job_id}",
                    )
                    for job_id in job_ids
                ],
                pipeline=pipe,
            )
            if stock:
                return self._run(kind, job_ids, pipe, worker=self.stock, queue=queue)
            return self._run(kind, job_ids, pipe)

    def _run(
        self,
        kind: str,
        job_ids: Sequence[str],
        pipe: redis.client.Pipeline,
        deliveries: int | None = None,
        worker: Child | None = None,
        queue: Queue | None = None,
    ) -> Batch:
        """Wall time from the batch's commit until RQ has removed every job of it.

        Both kinds are enqueued with ``result_ttl=0``, as the bridge enqueues its jobs: RQ
        deletes a job the moment it finishes, so "every key gone" is "every job done".
        """
        worker = worker or self.worker
        if worker is None:
            raise BenchError("the worker is not started")
        keys = [f"rq:job:{job_id}" for job_id in job_ids]
        cpu_before = cpu_s(worker.pid)
        pipe.execute()  # the whole batch appears at once
        started = time.monotonic()
        self.stack.wait_for(
            lambda: int(self.client.exists(*keys)) == 0,
            120,
            f"{len(job_ids)} {kind} to finish",
            interval=0.005,
        )
        seconds = time.monotonic() - started
        cpu_after = cpu_s(worker.pid)
        queue = queue or Queue(QUEUE_NAME, connection=self.client)
        failed = queue.failed_job_registry.get_job_ids()
        if set(failed) & set(job_ids):
            raise BenchError(f"{len(set(failed) & set(job_ids))} of the {kind} failed")
        count = len(keys) if deliveries is None else deliveries
        return Batch(kind, count=count, seconds=seconds, cpu_s=cpu_after - cpu_before)


def main() -> Report:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--messages", type=int, help="events (and no-op jobs) per batch")
    parser.add_argument("--rounds", type=int, help="alternating rounds (one batch of each)")
    args = parser.parse_args()
    count = args.messages or (100 if args.quick else 400)
    rounds = args.rounds or (3 if args.quick else 6)
    report = Report("webhooks: deliveries/s vs no-op RQ jobs/s, one worker")
    receivers = {DELIVERIES: Receiver(), CLOSING: Receiver(keep_alive=False)}
    order = (DELIVERIES, NOOPS, SINGLE, CLOSING, BARE, STOCK)
    totals = {kind: Batch(kind) for kind in order}
    try:
        with Stack("webhooks", keep_logs=args.keep_logs) as stack:
            say("starting redis, the simulator (for the worker's settings) and one worker…")
            stack.start_redis()
            stack.start_sim([{"sip": BOT, "password": BOT_PASSWORD}])
            bench = WebhookBench(stack, receivers, count)
            bench.start_worker()
            bench.noops()  # warm-up: imports, connections
            bench.noops(STOCK)
            bench.deliveries()  # ... and a delivery for the floor to copy
            for round_no in range(rounds):
                shift = round_no % len(order)  # each kind takes each place in turn
                for kind in order[shift:] + order[:shift]:
                    if kind in (NOOPS, STOCK):
                        batch = bench.noops(kind)
                    elif kind == BARE:
                        batch = bench.bare_posts()
                    else:
                        batch = bench.deliveries(kind)
                    say(f"  round {round_no + 1}: {kind} {batch.rate:.0f}/s")
                    totals[kind].add(batch)
            bench.client.close()
    finally:
        for receiver in receivers.values():
            receiver.close()

    hooks, noop, closing = totals[DELIVERIES], totals[NOOPS], totals[CLOSING]
    single, bare, stock = totals[SINGLE], totals[BARE], totals[STOCK]
    size = WebhookSettings().batch_size
    for label, a, b, detail in (
        (
            "deliveries/s / no-op jobs/s",
            hooks,
            noop,
            f"{hooks.rate:.0f} deliveries/s ({size} a job), {noop.rate:.0f} no-op jobs/s",
        ),
        (
            "bare urllib3 POSTs/s / no-op jobs/s (the most deliveries/s could reach)",
            bare,
            noop,
            f"{bare.rate:.0f} bare POSTs/s, {noop.rate:.0f} no-op jobs/s",
        ),
        (
            "deliveries/s / bare urllib3 POSTs/s",
            hooks,
            bare,
            f"a delivery {ratio(1000, hooks.rate):.2f} ms, its POST alone "
            f"{ratio(1000, bare.rate):.2f} ms, a no-op job {ratio(1000, noop.rate):.2f} ms",
        ),
        (
            "deliveries/s / no-op jobs/s on RQ's own SimpleWorker",
            hooks,
            stock,
            f"{hooks.rate:.0f} deliveries/s, {stock.rate:.0f} no-op jobs/s on `rq worker`",
        ),
        (
            "no-op jobs/s, the bridge's worker / RQ's own SimpleWorker",
            noop,
            stock,
            f"{noop.rate:.0f} vs {stock.rate:.0f} per s",
        ),
        (
            "deliveries/s, a job each / no-op jobs/s",
            single,
            noop,
            f"{single.rate:.0f} deliveries/s, {noop.rate:.0f} no-op jobs/s",
        ),
        (
            "deliveries/s, kept-alive / a connection each",
            hooks,
            closing,
            f"{hooks.rate:.0f} vs {closing.rate:.0f} deliveries/s",
        ),
    ):
        report.ratio(label, ratio(a.rate, b.rate), detail)
    kept = receivers[DELIVERIES]
    report.raw(
        "deliveries per TCP connection, kept-alive receiver",
        f"{ratio(kept.count, kept.connections):.1f} ({kept.count} on {kept.connections})",
    )
    cpu = {k: ratio(b.cpu_s * 1000, b.count) for k, b in totals.items()}
    for label, over, under in (
        ("worker CPU, per delivery / per no-op job", DELIVERIES, NOOPS),
        ("CPU, per delivery (worker) / per bare POST (child)", DELIVERIES, BARE),
        ("worker CPU per delivery, a job each / in jobs of several", SINGLE, DELIVERIES),
        ("worker CPU per delivery, kept-alive / a connection each", DELIVERIES, CLOSING),
    ):
        report.ratio(label, ratio(cpu[over], cpu[under]), f"{cpu[over]:.2f} vs {cpu[under]:.2f} ms")
    for kind, batch in totals.items():
        report.raw(
            f"{kind}: throughput", f"{batch.rate:.0f}/s ({batch.count} in {batch.seconds:.2f} s)"
        )
        who = "the child's CPU" if kind == BARE else "worker CPU"
        report.raw(f"{kind}: {who} ms each", f"{cpu[kind]:.2f}")
    report.note(
        f"{count} events (or no-op jobs) per batch, staged in one transaction, {rounds} "
        f"round(s), the six kinds rotating; deliveries go {size} to a job, or one each; every "
        "delivery is signed, POSTed and logged in Redis; the receivers run in this process"
    )
    return report


if __name__ == "__main__":
    raise SystemExit(run_main(main))
