"""``ucwa-bridge worker`` outlives Redis vanishing under a running job, and works on afterwards.

RQ's own loop gives up when its bookkeeping after a job hits a dead connection; the worker
command must wait for Redis and start the loop again rather than exit.
"""

from __future__ import annotations

import os
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

from bridge.config.embedded_redis import EmbeddedRedis


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
    env = {
        **os.environ,
        "BRIDGE_REDIS_URL": server.url,
        "BRIDGE_UCWA_DISCOVERY_URL": "https://lyncdiscover.contoso.example",
        "BRIDGE_UCWA_USERNAME": "sip:bot@contoso.example",
        "BRIDGE_UCWA_PASSWORD": "not-used-by-this-test",
        "BRIDGE_MAINTENANCE_INTERVAL_S": "5",
    }
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "worker"], env=env, stdout=log, stderr=log
        )
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
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            code = worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            raise
    assert code == 0, log_path.read_text()
