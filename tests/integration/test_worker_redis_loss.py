"""``ucwa-bridge worker`` outlives Redis vanishing under a running job, and works on afterwards.

RQ's own loop gives up when its bookkeeping after a job hits a dead connection; the worker
command must wait for Redis and start the loop again rather than exit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry

from bridge.config.embedded_redis import EmbeddedRedis, free_port


def wait_until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():  # type: ignore[operator]
                return
        except redis.ConnectionError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture()
def server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as embedded:
        yield embedded


def test_worker_survives_redis_loss_under_a_running_job(
    server: EmbeddedRedis, tmp_path: Path
) -> None:
    log_path = tmp_path / "worker.log"
    worker = start_worker(server.url, log_path)
    try:
        client = redis.Redis.from_url(server.url)
        queue = Queue("send", connection=client)
        slow = queue.enqueue_call("time.sleep", args=(1.5,), job_id="slow", result_ttl=60)
        started = StartedJobRegistry(queue=queue)
        wait_until(lambda: slow.id in started.get_job_ids(), 20, "the slow job to start")

        server.stop(kill=True)  # the job is still sleeping: its bookkeeping will hit no Redis
        time.sleep(3)
        assert worker.poll() is None, log_path.read_text()

        server.start()
        client = redis.Redis.from_url(server.url)
        after = Queue("send", connection=client).enqueue_call(
            "builtins.len", args=([1, 2, 3],), job_id="after", result_ttl=60
        )
        wait_until(
            lambda: Job.fetch(after.id, connection=client).get_status() == JobStatus.FINISHED,
            30,
            "a job enqueued after Redis came back to finish",
        )
        assert Job.fetch(after.id, connection=client).return_value() == 3
        assert worker.poll() is None
        # Its RQ scheduler is a thread, not a child forked from a process with threads, which
        # could inherit a lock one of them held (the log stream's) and then never exit.
        assert children(worker.pid) == [], "the worker forked"
        assert client.exists("rq:scheduler-lock:send")
    finally:
        code, _ = stop_within(worker, 20, log_path)
    assert code == 0, log_path.read_text()
    assert client.keys("rq:scheduler-lock:*") == []  # the scheduler gave its locks back


def children(pid: int) -> list[int]:
    """The processes ``pid`` started that still run."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def worker_env(url: str) -> dict[str, str]:
    return {
        **os.environ,
        "BRIDGE_REDIS_URL": url,
        "BRIDGE_UCWA_DISCOVERY_URL": "https://lyncdiscover.contoso.example",
        "BRIDGE_UCWA_USERNAME": "sip:bot@contoso.example",
        "BRIDGE_UCWA_PASSWORD": "not-used-by-this-test",
        "BRIDGE_MAINTENANCE_INTERVAL_S": "5",
    }


def start_worker(url: str, log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "worker"],
            env=worker_env(url),
            stdout=log,
            stderr=log,
        )


def stop_within(
    worker: subprocess.Popen[bytes], seconds: float, log_path: Path | None = None
) -> tuple[int, float]:
    """SIGTERM; the exit code and how long the worker took."""
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    try:
        code = worker.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        stacks = ""
        if shutil.which("py-spy") or Path(sys.executable).with_name("py-spy").exists():
            spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
            dump = subprocess.run(  # the worker and what it started
                [spy, "dump", "--subprocesses", "--pid", str(worker.pid)],
                capture_output=True,
                text=True,
            )
            stacks = dump.stdout + dump.stderr
        worker.kill()
        worker.wait()
        log = log_path.read_text() if log_path else ""
        raise AssertionError(
            f"the worker ignored SIGTERM for {seconds}s\n{stacks}\n{log}"
        ) from None
    return code, time.monotonic() - started


def runs_a_job(url: str, job_id: str) -> None:
    client = redis.Redis.from_url(url)
    job = Queue("send", connection=client).enqueue_call(
        "builtins.len", args=([1, 2, 3],), job_id=job_id, result_ttl=60
    )
    wait_until(
        lambda: Job.fetch(job.id, connection=client).get_status() == JobStatus.FINISHED,
        30,
        f"job {job_id} to finish",
    )


def test_worker_started_with_redis_down_waits_then_works(tmp_path: Path) -> None:
    server = EmbeddedRedis()  # not started yet
    log_path = tmp_path / "worker.log"
    worker = start_worker(server.url, log_path)
    try:
        time.sleep(2.5)
        assert worker.poll() is None, log_path.read_text()
        text = log_path.read_text()
        assert "Traceback" not in text, text
        waiting = [line for line in text.splitlines() if "Redis unavailable" in line]
        assert len(waiting) == 1, text
        assert json.loads(waiting[0])["role"] == "worker"
        server.start()
        runs_a_job(server.url, "after-start")
        code, _ = stop_within(worker, 10, log_path)
        assert code == 0, log_path.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
        server.close()


def test_worker_stops_on_sigterm_while_redis_is_down(server: EmbeddedRedis, tmp_path: Path) -> None:
    log_path = tmp_path / "worker.log"
    worker = start_worker(server.url, log_path)
    try:
        runs_a_job(server.url, "before")
        server.stop(kill=True)
        time.sleep(2)  # inside RQ's reconnection loop, or the worker's own wait
        assert worker.poll() is None, log_path.read_text()
        code, took = stop_within(worker, 10, log_path)
        print(f"\nworker stopped {took:.1f}s after SIGTERM with Redis down")
        assert code == 0, log_path.read_text()
        assert took < 5
    finally:
        if worker.poll() is None:
            worker.kill()


def test_worker_outlives_a_read_only_and_a_full_redis(
    server: EmbeddedRedis, tmp_path: Path
) -> None:
    log_path = tmp_path / "worker.log"
    worker = start_worker(server.url, log_path)
    admin = redis.Redis.from_url(server.url)
    faults = {
        "read_only": (
            lambda: admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port())),
            lambda: admin.execute_command("REPLICAOF", "NO", "ONE"),
        ),
        "out_of_memory": (
            lambda: admin.config_set("maxmemory", "1"),
            lambda: admin.config_set("maxmemory", "0"),
        ),
    }
    try:
        runs_a_job(server.url, "before")
        for name, (begin, end) in faults.items():
            begin()
            time.sleep(3)
            assert worker.poll() is None, f"{name}\n{log_path.read_text()}"
            end()
            runs_a_job(server.url, f"after-{name}")
        assert worker.poll() is None
        code, _ = stop_within(worker, 10, log_path)
        assert code == 0, log_path.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
