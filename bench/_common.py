"""Shared plumbing of the benchmarks: a private Redis, the simulator and the bridge processes.

``Stack`` owns every process a benchmark starts and stops all of them on exit, on an exception
and on Ctrl-C / SIGTERM (``trap_signals``). The children run in their own sessions so a Ctrl-C
reaches the benchmark only; it stops them in order and then kills what is left of each
process group (gunicorn workers, the RQ scheduler).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.client import HTTPConnection
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import urlsplit

import redis

from bridge.config.embedded_redis import EmbeddedRedis
from bridge.demo import SIM_BANNER, listen, metrics_port_in

REPO = Path(__file__).resolve().parent.parent
BOT = "sip:bot@contoso.com"
BOT_PASSWORD = "Bench-Bot-Passw0rd"
API_KEY = "bench-api-key-0123456789abcdef"
# The IM text every benchmark sends: exactly 100 characters (ASCII, so 100 bytes too).
TEXT_100 = "Deploy 4711 finished on all hosts: 0 errors, 3 warnings; see the build log.".ljust(
    100, "."
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says why in one line."""


def trap_signals() -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so every ``finally`` and ``__exit__`` runs."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for signum in STOP_SIGNALS:
        if signum != signal.SIGINT:
            signal.signal(signum, interrupt)


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a ~10 s run with fewer samples")
    parser.add_argument("--keep-logs", action="store_true", help="keep the process logs")
    return parser


def say(text: str) -> None:
    """Progress goes to stderr; the figures go to stdout."""
    print(text, file=sys.stderr, flush=True)


# -- /proc --------------------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    """Resident set size (VmRSS) of one process in MB; 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def pss_mb(pid: int) -> float:
    """Proportional set size: shared pages (e.g. gunicorn workers' copy-on-write pages from the
    master) split between the processes sharing them; 0 if unavailable."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds one process has used so far, every thread's, ended ones
    included; 0 if it is gone.

    Read from the process's CPU clock (``clock_gettime`` on the clock id Linux gives every
    process: ``~pid << 3 | CPUCLOCK_SCHED``), in nanoseconds. ``stat`` counts in clock ticks
    (10 ms), which rounded a quick run's few milliseconds to nothing; it is the fallback."""
    try:
        return time.clock_gettime(((~pid) << 3) | 2)
    except OSError:
        pass
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    except (OSError, ValueError, IndexError):
        return 0.0


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (gunicorn workers, the RQ scheduler process)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            found.append(int(entry.name))
    return sorted(found)


def tree_cpu_s(pids: Iterable[int]) -> float:
    return sum(cpu_s(pid) for pid in pids)


# -- small HTTP client --------------------------------------------------------------------------


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    """One request on a fresh connection (gunicorn's sync workers close every connection)."""
    parts = urlsplit(url)
    conn = HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, path or "/", body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def http_json(method: str, url: str, body: Any = None, timeout: float = 10.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    status, raw = http(method, url, data, {"Content-Type": "application/json"}, timeout)
    if status >= 400:
        raise BenchError(f"{method} {url} answered {status}: {raw[:200]!r}")
    return json.loads(raw) if raw else None


class ApiClient:
    """The bridge's HTTP API with the benchmark's key."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.auth = {"Authorization": f"Bearer {API_KEY}"}

    def post_message(self, to: str, text: str) -> str:
        body = json.dumps({"to": to, "text": text}).encode()
        headers = {**self.auth, "Content-Type": "application/json"}
        status, raw = http("POST", self.base_url + "/messages", body, headers)
        if status != 202:
            raise BenchError(f"POST /messages answered {status}: {raw[:300]!r}")
        return str(json.loads(raw)["id"])

    def message(self, message_id: str) -> dict[str, Any]:
        status, raw = http("GET", f"{self.base_url}/messages/{message_id}", headers=self.auth)
        if status != 200:
            raise BenchError(f"GET /messages/{message_id} answered {status}: {raw[:300]!r}")
        return dict(json.loads(raw))


# -- processes ----------------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    metrics_url: str | None = None  # a worker's Prometheus /metrics

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tree(self) -> list[int]:
        """This process and its direct children."""
        return [self.pid, *children(self.pid)]


@dataclass
class Stack:
    """Everything one benchmark run started; ``close()`` (or leaving the ``with``) stops it all."""

    name: str
    keep_logs: bool = False
    workdir: Path = field(init=False)
    redis_server: EmbeddedRedis | None = None
    children: list[Child] = field(default_factory=list)
    sim_url: str = ""
    discovery_url: str = ""
    api_url: str = ""
    env_extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"ucwa-bench-{self.name}-"))
        (self.workdir / "logs").mkdir()

    def __enter__(self) -> Stack:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and not isinstance(exc, KeyboardInterrupt):
            say(self.log_tails())
        self.close()

    # -- Redis ----------------------------------------------------------------------------------
    def start_redis(self) -> str:
        """A private redis-server with append-only persistence, fsync every second as in
        docker-compose.yml and the Helm chart (EmbeddedRedis starts it with ``always``)."""
        data = self.workdir / "redis"
        data.mkdir()
        self.redis_server = EmbeddedRedis(data_dir=str(data))  # owned before it starts
        self.redis_server.start()
        client = self.redis()
        client.config_set("appendfsync", "everysec")
        client.close()
        return self.redis_server.url

    @property
    def redis_url(self) -> str:
        if self.redis_server is None:
            raise BenchError("redis is not started")
        return self.redis_server.url

    @property
    def redis_pid(self) -> int:
        if self.redis_server is None or self.redis_server.process is None:
            raise BenchError("redis is not started")
        return self.redis_server.process.pid

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    # -- the simulator --------------------------------------------------------------------------
    def start_sim(self, users: Sequence[dict[str, str]], **config: Any) -> str:
        """``python -m ucwasim serve`` in its own process, so its threads do not share the
        benchmark's GIL; returns the discovery URL."""
        path = self.workdir / "sim.json"
        path.write_text(json.dumps({"users": list(users), **config}))
        # Port 0: it binds one of its own choosing and names it in its banner (a port picked
        # here could be another process's by the time it binds).
        argv = ["-m", "ucwasim", "serve", "--host", "127.0.0.1", "--port", "0"]
        child = self.spawn("sim", [*argv, "--config", str(path)], self._plain_env())
        self.wait_for(lambda: SIM_BANNER.search(_text(child.log)) is not None, 30, "its banner")
        banner = SIM_BANNER.search(_text(child.log))
        assert banner is not None
        self.sim_url = banner.group(1)
        self.wait_for(lambda: _answers(self.sim_url + "/_sim/users"), 30, "the simulator")
        domain = str(config.get("domain", "contoso.com"))
        self.discovery_url = (
            f"{self.sim_url}/Autodiscover/AutodiscoverService.svc/root?originalDomain={domain}"
        )
        return self.discovery_url

    def sim(self, method: str, path: str, body: Any = None) -> Any:
        return http_json(method, self.sim_url + path, body, timeout=30)

    # -- bridge roles ---------------------------------------------------------------------------
    def bridge_env(self, **extra: str) -> dict[str, str]:
        env = self._plain_env()
        env.update(
            BRIDGE_REDIS_URL=self.redis_url,
            BRIDGE_API_KEYS=API_KEY,
            BRIDGE_UCWA_USERNAME=BOT,
            BRIDGE_UCWA_PASSWORD=BOT_PASSWORD,
            BRIDGE_LOG_LEVEL="INFO",
            # Most benchmarks measure delivery capacity, so the per-key limiter is off; intake
            # turns it back on (start_api's env wins) because it measures what the limiter costs.
            BRIDGE_RATE_LIMIT="off",
        )
        if self.discovery_url:
            env["BRIDGE_UCWA_DISCOVERY_URL"] = self.discovery_url
        env.update(self.env_extra)
        env.update(extra)
        return env

    def start_api(self, workers: int = 2, **env: str) -> Child:
        with listen(0, "API") as sock:  # bound here and handed over: nobody can take it first
            self.api_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
            child = self.spawn(
                "api",
                ["-m", "bridge.cli", "api", "--bind", f"fd://{sock.fileno()}"],
                self.bridge_env(BRIDGE_API_WORKERS=str(workers), **env),
                keep_fds=(sock.fileno(),),
            )
        self.wait_for(lambda: _answers(self.api_url + "/healthz"), 30, "the API")
        # /healthz answers as soon as one gunicorn worker is up: wait for all of them.
        self.wait_for(lambda: len(children(child.pid)) >= workers, 30, "the gunicorn workers")
        return child

    def start_poller(self, **env: str) -> Child:
        child = self.spawn("poller", ["-m", "bridge.cli", "poller"], self.bridge_env(**env))
        client = self.redis()
        try:
            self.wait_for(
                lambda: client.hget(f"session:{BOT}", "state") == b"ready",
                30,
                "the poller's UCWA session",
            )
        finally:
            client.close()
        return child

    def start_worker(self, **env: str) -> Child:
        from rq import Worker

        client = self.redis()
        try:
            before = Worker.count(connection=client)
            # Its metrics, as a deployment scrapes them (``ucwa_request_seconds``), on a port it
            # chooses and logs.
            child = self.spawn(
                "worker",
                ["-m", "bridge.cli", "worker"],
                self.bridge_env(**{"BRIDGE_METRICS_PORT": "0", **env}),
            )
            self.wait_for(
                lambda: Worker.count(connection=client) > before, 30, "the RQ worker to register"
            )
            port: int | str | None = env.get("BRIDGE_METRICS_PORT", "0")
            if port == "0":
                self.wait_for(
                    lambda: metrics_port_in(_text(child.log)) is not None, 30, "its /metrics"
                )
                port = metrics_port_in(_text(child.log))
            child.metrics_url = f"http://127.0.0.1:{port}/metrics"
        finally:
            client.close()
        return child

    def spawn(
        self, name: str, argv: list[str], env: dict[str, str], keep_fds: tuple[int, ...] = ()
    ) -> Child:
        count = sum(1 for c in self.children if c.name == name)
        log = self.workdir / "logs" / f"{name}-{count}.log"
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                [sys.executable, *argv],
                env=env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=keep_fds,
            )
        child = Child(name, popen, log)
        self.children.append(child)
        return child

    def stop(self, *targets: Child, timeout: float = 15.0) -> None:
        """SIGTERM (graceful), then SIGKILL for the whole process group."""
        for child in targets:
            if child.alive():
                with contextlib.suppress(ProcessLookupError):
                    child.popen.terminate()
        deadline = time.monotonic() + timeout
        for child in targets:
            try:
                child.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                say(f"{child.name} (pid {child.pid}) did not stop in {timeout:.0f}s; killing it")
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)
            if child.popen.poll() is None:
                child.popen.wait(timeout=10)
            if child in self.children:
                self.children.remove(child)

    def close(self) -> None:
        # A second Ctrl-C (or a SIGTERM) must not interrupt the clean-up.
        previous = {s: signal.signal(s, signal.SIG_IGN) for s in STOP_SIGNALS}
        try:
            self.stop(*reversed(self.children))
            if self.redis_server is not None:
                self.redis_server.stop()
                self.redis_server = None
        finally:
            if self.keep_logs:
                shutil.rmtree(self.workdir / "redis", ignore_errors=True)
                say(f"logs kept in {self.workdir / 'logs'}")
            else:
                shutil.rmtree(self.workdir, ignore_errors=True)
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    # -- helpers --------------------------------------------------------------------------------
    def wait_lines_drained(self, recipients: Iterable[str], timeout: float = 60.0) -> None:
        """Every recipient's line (``rcpt:<sip>:fifo``) is empty: each message ended."""
        client = self.redis()
        waiting = [f"rcpt:{r}:fifo" for r in set(recipients)]
        total = len(waiting)
        try:

            def drained() -> bool:
                with client.pipeline(transaction=False) as pipe:
                    for key in waiting:
                        pipe.llen(key)
                    lengths = pipe.execute()
                waiting[:] = [key for key, length in zip(waiting, lengths, strict=True) if length]
                return not waiting

            # Light polling: the figures come from the records' timestamps, not from this loop.
            self.wait_for(drained, timeout, f"{total} recipient lines to drain", interval=0.05)
        finally:
            client.close()

    def check_alive(self) -> None:
        for child in self.children:
            if not child.alive():
                raise BenchError(
                    f"the {child.name} exited with code {child.popen.returncode}\n"
                    + _tail(child.log)
                )

    def wait_for(
        self, predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.02
    ) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            with contextlib.suppress(redis.RedisError, OSError):
                if predicate():
                    return
            if time.monotonic() > deadline:
                raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(interval)

    def log_tails(self) -> str:
        logs = sorted((self.workdir / "logs").glob("*.log"))
        return "\n".join(f"----- {p.name}\n{_tail(p)}" for p in logs)

    def _plain_env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("BRIDGE_") and k != "PROMETHEUS_MULTIPROC_DIR"
        }
        env["PYTHONUNBUFFERED"] = "1"
        return env


def _answers(url: str) -> bool:
    try:
        return http("GET", url, timeout=2)[0] == 200
    except OSError:
        return False


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


# -- statistics and the report ------------------------------------------------------------------


def metric_totals(
    url: str, family: str, labels: Mapping[str, Iterable[str]]
) -> tuple[float, float]:
    """(sum, count) of the histogram ``family`` in a Prometheus ``/metrics`` page, over the
    series whose labels take one of the given values; (0, 0) when the page does not answer."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            text = answer.read().decode()
    except OSError:
        return 0.0, 0.0
    wanted = {name: set(values) for name, values in labels.items()}
    total = {"_sum": 0.0, "_count": 0.0}
    for metric in text_string_to_metric_families(text):
        if metric.name != family:
            continue
        for sample in metric.samples:
            suffix = sample.name[len(family) :]
            if suffix in total and all(sample.labels.get(k) in v for k, v in wanted.items()):
                total[suffix] += sample.value
    return total["_sum"], total["_count"]


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def round_trip_ms(url: str, samples: int = 21) -> float:
    """Median time of one GET on a kept-alive connection: what one UCWA request costs a client
    here, the simulator's ``latency_ms`` included."""
    parts = urlsplit(url)
    conn = HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    times = []
    try:
        for _ in range(samples):
            started = time.perf_counter()
            conn.request("GET", path, headers={"Accept": "application/json"})
            conn.getresponse().read()
            times.append((time.perf_counter() - started) * 1000)
    finally:
        conn.close()
    return percentile(times, 50)


class Report:
    """Ratios first (the figures that survive a noisy machine), then the raw numbers."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.ratios: list[tuple[str, str, str]] = []
        self.raws: list[tuple[str, str]] = []
        self.targets: list[tuple[str, bool, str]] = []
        self.notes: list[str] = []

    def ratio(self, label: str, value: float, detail: str = "") -> None:
        self.ratios.append((label, f"{value:.2f}x", detail))

    def raw(self, label: str, value: str) -> None:
        self.raws.append((label, value))

    def target(self, label: str, met: bool, detail: str) -> None:
        """A target of the issue, judged on figures of this run."""
        self.targets.append((label, met, detail))

    def note(self, text: str) -> None:
        self.notes.append(text)

    def print(self) -> None:
        labels = [label for label, _, _ in self.ratios] + [label for label, _ in self.raws]
        labels += [label for label, _, _ in self.targets]
        width = max([len(label) for label in labels] + [20]) + 2
        print(f"== {self.title} ==")
        print("ratios (measured side by side in this run):")
        for label, value, detail in self.ratios:
            print(f"  {label:<{width}} {value:>9}   {detail}".rstrip())
        if self.targets:
            print("targets:")
            for label, met, detail in self.targets:
                verdict = "met" if met else "MISSED"
                print(f"  {label:<{width}} {verdict:>9}   {detail}".rstrip())
        print("raw figures:")
        for label, value in self.raws:
            print(f"  {label:<{width}} {value}")
        for text in self.notes:
            print(f"note: {text}")
        sys.stdout.flush()


def run_main(main: Callable[[], Report]) -> int:
    """Run a benchmark: print its report, or one line saying why it could not finish."""
    trap_signals()
    try:
        report = main()
    except KeyboardInterrupt:
        say("interrupted; every process was stopped")
        return 130
    except BenchError as exc:
        say(f"benchmark failed: {exc}")
        return 1
    report.print()
    return 0
