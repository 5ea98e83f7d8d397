"""What one message costs in CPU against the least its parts can cost, on one stack, in one run.

A stack (Redis, the simulator at ``--latency-ms``, the API, ``--workers`` RQ workers, the poller)
first takes a burst of ``--messages`` (half to warm recipients, half to cold ones, as
``bench.send_path``): CPU per delivered message by role. Then, on the same processes and with the
same libraries, the floor of each role, the least that role's part of a message can cost:

- api: a ``GET /healthz`` on the bridge's own gunicorn (HTTP and WSGI, no work at all), and one
  Redis round trip writing a message-sized record (a message is accepted only once it is stored);
- worker: a no-op RQ job on the bridge's own workers (RQ's bookkeeping of a job), one ``requests``
  POST on a kept-alive connection (UCWA takes one request per message), and two round trips
  writing the record (sent at most once needs a durable mark before the POST and one after it);
- poller: as many ``requests`` GETs per message as the burst's event channel took, and one round
  trip writing the record (the outcome);
- redis: the server's CPU for the no-op job and for those four writes.

The client-side figures (``requests``, redis-py) are this process's thread CPU against a local
kept-alive HTTP server and the stack's Redis. Prints bridge / floor for each role and in all, and
the floor against the 8 ms per message target: a target under the floor cannot be met by any
code on these parts. Beside them, a message's POST three ways against the same server, in
alternating rounds: through the bridge's UCWA transport, as a plain ``requests`` POST, and with
``http.client`` alone (as the bound of ``bench.curves`` measures a round trip). ``--profile``
samples the api, worker and poller with py-spy during the burst and prints, per role, the
functions that hold most of its CPU (``bench/_profile.py``).

    python -m bench.floor [--quick] [--latency-ms L] [--workers W] [--messages N] [--samples S]
                          [--profile]
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import requests
from rq import Queue

from bench._common import (
    TEXT_100,
    BenchError,
    Report,
    Stack,
    base_parser,
    cpu_s,
    ratio,
    run_main,
    say,
    tree_cpu_s,
)
from bench._profile import Profiles
from bench.send_path import POST_THREADS, Result, SendPath
from bridge.outbound.intake import SEND_QUEUE
from bridge.session.transport import UcwaTransport
from bridge.ucwa.messages import HttpRequest

ROLES = ("api", "worker", "poller", "redis")
TARGET_MS = 8.0
RECORD = ('{"text": "' + TEXT_100 * 8 + '"}').encode()  # about the size of a message record


class _Answer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # kept alive, as UCWA's IIS keeps connections

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer()

    def _answer(self) -> None:
        self.send_response(201)
        self.send_header("Location", "/ucwa/oauth/v1/applications/1/communication/messages/1")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def http_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def thread_ms(count: int, step: Callable[[], object]) -> float:
    """CPU ms of this thread per call of ``step``, after a few unmeasured calls."""
    for _ in range(10):
        step()
    started = time.thread_time()
    for _ in range(count):
        step()
    return (time.thread_time() - started) * 1000 / count


def requests_ms(url: str, count: int) -> dict[str, float]:
    """A ``requests`` POST of a message and a GET, each on a kept-alive connection."""
    session = requests.Session()
    session.trust_env = False
    headers = {"Authorization": "Bearer token", "Content-Type": "text/plain"}

    def post() -> None:
        session.post(url + "/send", data=TEXT_100, headers=headers, timeout=10).close()

    def get() -> None:
        session.get(url + "/events?ack=1", headers=headers, timeout=10).close()

    try:
        return {"post": thread_ms(count, post), "get": thread_ms(count, get)}
    finally:
        session.close()


def post_paths_ms(url: str, count: int, rounds: int = 4) -> dict[str, float]:
    """Client CPU ms of one POST of a message on a kept-alive connection, three ways,
    alternating in ``rounds``: the bridge's UCWA transport (deadline, capped read, metrics), a
    plain ``requests.Session.post``, and ``http.client`` alone (what the bound's round trip
    uses)."""
    headers = {"Authorization": "Bearer " + "t" * 200, "Content-Type": "text/plain"}
    transport = UcwaTransport()
    request = HttpRequest("POST", url + "/send", headers=tuple(headers.items()), content=TEXT_100)
    session = requests.Session()
    session.trust_env = False
    parts = urlsplit(url)
    conn = HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    body = TEXT_100.encode()

    def plain() -> None:
        conn.request("POST", "/send", body=body, headers=headers)
        conn.getresponse().read()

    ways: dict[str, Callable[[], object]] = {
        "bridge": lambda: transport.send(request, kind="sendMessage"),
        "requests": lambda: session.post(
            url + "/send", data=TEXT_100, headers=headers, timeout=10
        ).close(),
        "http.client": plain,
    }
    spent = dict.fromkeys(ways, 0.0)
    try:
        for _ in range(rounds):
            for name, call in ways.items():
                spent[name] += thread_ms(max(1, count // rounds), call)
        return {name: ms / rounds for name, ms in spent.items()}
    finally:
        transport.close()
        session.close()
        conn.close()


def record_write_ms(stack: Stack, count: int) -> tuple[float, float, float]:
    """(client CPU ms, server CPU ms, wall ms) of one round trip writing a record in
    MULTI … EXEC."""
    client = stack.redis()
    key = "bench:floor:record"

    def write() -> None:
        with client.pipeline() as pipe:
            pipe.set(key, RECORD)
            pipe.expire(key, 3600)
            pipe.execute()

    try:
        before, started = cpu_s(stack.redis_pid), time.perf_counter()
        client_ms = thread_ms(count, write)
        wall_ms = (time.perf_counter() - started) * 1000 / (count + 10)
        server_ms = (cpu_s(stack.redis_pid) - before) * 1000 / (count + 10)
        client.delete(key)
        return client_ms, server_ms, wall_ms
    finally:
        client.close()


def healthz_ms(stack: Stack, bench: SendPath, count: int) -> float:
    """CPU ms of the API (gunicorn and its workers) per ``GET /healthz``, from as many client
    threads as the bursts post from."""
    local = threading.local()

    def get(_: int) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
            session.trust_env = False
        response = session.get(stack.api_url + "/healthz", timeout=10)
        if response.status_code != 200:
            raise BenchError(f"/healthz answered {response.status_code}")

    api = [c for c in stack.children if c.name == "api"]
    with ThreadPoolExecutor(POST_THREADS) as pool:
        list(pool.map(get, range(20)))
        before = sum(tree_cpu_s(c.tree()) for c in api)
        list(pool.map(get, range(count)))
        after = sum(tree_cpu_s(c.tree()) for c in api)
    return (after - before) * 1000 / count


def noop_job_ms(stack: Stack, count: int, poll_s: float = 0.01) -> tuple[float, float, float]:
    """(worker CPU ms, redis CPU ms, wall ms of one worker) per no-op RQ job run by the bridge's
    own workers, enqueued at once with ``result_ttl=0`` as the bridge enqueues its send jobs."""
    client = stack.redis()
    queue = Queue(SEND_QUEUE, connection=client)
    workers = [c for c in stack.children if c.name == "worker"]
    stamp = time.monotonic_ns()
    ids = [f"bench-floor-{stamp}-{n}" for n in range(count)]
    try:
        before = sum(tree_cpu_s(c.tree()) for c in workers), cpu_s(stack.redis_pid)
        with client.pipeline() as pipe:
            queue.enqueue_many(
                [
                    Queue.prepare_data("builtins.len", args=([1, 2],), job_id=i, result_ttl=0)
                    for i in ids
                ],
                pipeline=pipe,
            )
            pipe.execute()
        started = time.perf_counter()
        keys = [f"rq:job:{i}" for i in ids]
        stack.wait_for(lambda: int(client.exists(*keys)) == 0, 120, "the no-op jobs", poll_s)
        wall_ms = (time.perf_counter() - started) * 1000 * len(workers) / count
        after = sum(tree_cpu_s(c.tree()) for c in workers), cpu_s(stack.redis_pid)
        if set(queue.failed_job_registry.get_job_ids()) & set(ids):
            raise BenchError("a no-op job failed")
        worker_ms = (after[0] - before[0]) * 1000 / count
        return worker_ms, (after[1] - before[1]) * 1000 / count, wall_ms
    finally:
        client.close()


def main() -> Report:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--latency-ms", type=int, default=20, help="simulator latency")
    parser.add_argument("--workers", type=int, default=2, help="RQ workers")
    parser.add_argument("--messages", type=int, help="messages in the burst")
    parser.add_argument("--samples", type=int, help="calls of each floor part")
    parser.add_argument(
        "--profile", action="store_true", help="sample the roles with py-spy during the burst"
    )
    args = parser.parse_args()
    messages = args.messages or (60 if args.quick else 400)
    samples = args.samples or (200 if args.quick else 2000)
    report = Report("floor: CPU per message, the bridge against the least its parts cost")
    with Stack("floor", keep_logs=args.keep_logs) as stack:
        bench = SendPath(stack, args.workers, messages, 0, {})
        say("redis, simulator, api, poller, workers…")
        bench.start(args.latency_ms)
        bench.warm_up()
        result = Result(args.latency_ms)
        say(f"bridge: a burst of {messages}…")
        with Profiles(stack, ("api", "worker", "poller")) if args.profile else nullcontext() as spy:
            bench.measure(result, "bridge", "burst", messages)
        phase = result.phase("bridge", "burst")
        bridge = {r: ratio(phase.cpu_s.get(r, 0.0) * 1000, phase.count) for r in ROLES}
        _, events_per_message = result.requests("bridge")
        say("floor: /healthz, no-op jobs, requests, record writes…")
        healthz = healthz_ms(stack, bench, samples)
        job_worker, job_redis, _ = noop_job_ms(stack, samples)
        with http_server() as url:
            http = requests_ms(url, samples)
            posts = post_paths_ms(url, samples)
        write_client, write_server, _ = record_write_ms(stack, samples)
    floor = {
        "api": healthz + write_client,
        "worker": job_worker + http["post"] + 2 * write_client,
        "poller": events_per_message * http["get"] + write_client,
        "redis": job_redis + 4 * write_server,
    }
    total_bridge, total_floor = sum(bridge.values()), sum(floor.values())
    for role in ROLES:
        report.ratio(
            f"CPU per message, bridge / floor, {role}",
            ratio(bridge[role], floor[role]),
            f"{bridge[role]:.2f} vs {floor[role]:.2f} ms",
        )
    report.ratio(
        "CPU per message, bridge / floor, all roles",
        ratio(total_bridge, total_floor),
        f"{total_bridge:.1f} vs {total_floor:.1f} ms",
    )
    report.target(
        f"CPU per message <= {TARGET_MS:g} ms",
        total_bridge <= TARGET_MS,
        f"{total_bridge:.1f} ms; the floor of its parts is {total_floor:.1f} ms "
        f"({ratio(TARGET_MS, total_floor):.2f}x of it allowed)",
    )
    report.ratio(
        "UCWA POST client CPU, the bridge's transport / plain requests",
        ratio(posts["bridge"], posts["requests"]),
        f"{posts['bridge']:.3f} vs {posts['requests']:.3f} ms",
    )
    report.ratio(
        "POST client CPU, plain requests / http.client alone",
        ratio(posts["requests"], posts["http.client"]),
        f"{posts['requests']:.3f} vs {posts['http.client']:.3f} ms (the bound's round trip "
        "uses http.client)",
    )
    report.raw("bridge burst", f"{phase.count} msgs, {phase.rate:.1f} msg/s")
    report.raw("GET /healthz, API CPU per request", f"{healthz:.2f} ms")
    report.raw("no-op RQ job, worker | redis CPU", f"{job_worker:.2f} | {job_redis:.2f} ms")
    report.raw(
        "requests on a kept-alive connection, client CPU, POST | GET",
        f"{http['post']:.2f} | {http['get']:.2f} ms",
    )
    report.raw(
        "one round trip writing a record, redis-py | redis CPU",
        f"{write_client:.3f} | {write_server:.3f} ms",
    )
    report.raw("event GETs per message in the burst", f"{events_per_message:.2f}")
    for label, text in spy.summary() if spy is not None else ():
        report.raw(label, text)
    report.note(
        f"{args.workers} workers, simulator latency {args.latency_ms} ms, a burst of {messages} "
        f"messages; {samples} samples of each floor part"
    )
    return report


if __name__ == "__main__":
    raise SystemExit(run_main(main))
