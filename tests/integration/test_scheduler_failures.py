"""The worker's RQ scheduler, whatever stops it, logs one JSON line, backs off and goes on.

RQ's scheduler ends on an exception that leaves it, with no scheduler until a later maintenance.
Two such failures, against a real redis-server: an error of the scheduler itself, and Redis back
from a restart but refusing the bridge's ACL user a write (NOPERM) while the scheduler waits out
the outage. And the scheduler of a worker whose loop is started again after an outage, which
must be the same one, scheduling at once.

This module is also the harness (``python -m tests.integration.test_scheduler_failures URL``):
the worker's logging, a ``BridgeWorker`` that starts its scheduler as ``ucwa-bridge worker``
does (a thread of the process), and nothing else touching Redis, so every line is the
scheduler's.
"""

from __future__ import annotations

import itertools
import json
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus

from bridge.config.embedded_redis import EmbeddedRedis
from workers.rq_worker import REACQUIRE_LOCKS_S

ROOT = Path(__file__).resolve().parents[2]
USER, PASSWORD = "bridge", "scheduler-test-password"
# While this key exists the harness's scheduler fails every pass with a RuntimeError.
FAULT_KEY = "test:scheduler-fault"


def serve(redis_url: str) -> None:
    """The harness: start a scheduler the worker's way and wait for SIGTERM."""
    from bridge.observability.logging import configure_logging, install_excepthooks
    from workers.rq_worker import BridgeScheduler, BridgeWorker, stop_process_scheduler

    configure_logging("INFO", json=True, role="worker")
    install_excepthooks()
    log = logging.getLogger("tests.scheduler_harness")
    enqueue = BridgeScheduler.enqueue_scheduled_jobs

    def failing(self: BridgeScheduler) -> None:
        if self.connection.exists(FAULT_KEY):
            raise RuntimeError("a scheduler bug")
        enqueue(self)

    BridgeScheduler.enqueue_scheduled_jobs = failing  # type: ignore[method-assign]
    connection = redis.Redis.from_url(redis_url)
    worker = BridgeWorker([Queue("webhooks", connection=connection)], connection=connection)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker._start_scheduler(logging_level="WARNING")
    assert worker.scheduler is not None
    thread = cast(BridgeScheduler, worker.scheduler).thread
    assert thread is not None
    log.info("scheduler started", extra={"thread_id": thread.ident})
    stop.wait()
    running = thread.is_alive()
    stop_process_scheduler(20)
    log.info(
        "scheduler ended",
        extra={"thread_id": thread.ident, "ran_to_the_stop": running, "alive": thread.is_alive()},
    )


class Harness:
    def __init__(self, server: EmbeddedRedis, log_path: Path) -> None:
        self.server = server
        self.admin = redis.Redis(port=server.port)
        self.add_user()
        self.url = f"redis://{USER}:{PASSWORD}@127.0.0.1:{server.port}/0"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def add_user(self, *rules: str) -> None:
        """The bridge's ACL user, allowed everything but ``rules`` take away."""
        self.admin.execute_command(
            "ACL", "SETUSER", USER, "on", f">{PASSWORD}", "~*", "&*", "+@all", *rules
        )

    def start(self) -> None:
        with open(self.log_path, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.integration.test_scheduler_failures", self.url],
                cwd=ROOT,
                stdout=out,
                stderr=out,
            )
        self.wait_for_line(lambda e: e["message"] == "scheduler started", "the scheduler")

    def stop(self) -> list[dict[str, Any]]:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=30) == 0, self.log_path.read_text()
        return self.lines()

    def lines(self) -> list[dict[str, Any]]:
        """Every complete line so far, each a JSON object, or the test fails."""
        text = self.log_path.read_text()
        entries = []
        for line in text.splitlines(keepends=True):
            if not line.endswith("\n"):
                break  # still being written
            try:
                entry = json.loads(line)
            except ValueError:
                raise AssertionError(f"a line that is no JSON: {line!r}\n{text}") from None
            assert isinstance(entry, dict), line
            entries.append(entry)
        return entries

    def wait_for_line(self, matches: Callable[[dict[str, Any]], bool], what: str) -> None:
        wait_until(lambda: any(matches(e) for e in self.lines()), 20, what, self.log_path)

    def schedules_again(self) -> None:
        """A job due now reaches its queue: the scheduler works."""
        queue = Queue("webhooks", connection=self.admin)
        job = queue.enqueue_at(datetime.now(UTC), "builtins.len", [1, 2])
        wait_until(
            lambda: Job.fetch(job.id, connection=self.admin).get_status() == JobStatus.QUEUED,
            30,
            "a scheduled job to be enqueued",
            self.log_path,
        )


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}\n{log.read_text()}")


@pytest.fixture()
def harness(tmp_path: Path) -> Iterator[Harness]:
    with EmbeddedRedis() as server:
        running = Harness(server, tmp_path / "scheduler.log")
        try:
            yield running
        finally:
            if running.process is not None and running.process.poll() is None:
                running.process.kill()
                running.process.wait(timeout=10)


def failed(entry: dict[str, Any]) -> bool:
    return entry["message"].startswith("the scheduler failed")


def assert_one_scheduler_ran_throughout(entries: list[dict[str, Any]]) -> None:
    (started,) = [e for e in entries if e["message"] == "scheduler started"]
    (ended,) = [e for e in entries if e["message"] == "scheduler ended"]
    assert ended["thread_id"] == started["thread_id"], entries
    assert ended["ran_to_the_stop"] and not ended["alive"], entries
    assert all(e["level"] != "CRITICAL" for e in entries), entries


def test_a_failing_scheduler_logs_backs_off_and_schedules_again(harness: Harness) -> None:
    harness.admin.set(FAULT_KEY, 1)
    harness.start()
    harness.wait_for_line(failed, "the scheduler's failure")
    harness.admin.delete(FAULT_KEY)
    harness.schedules_again()

    entries = harness.stop()
    failure = next(e for e in entries if failed(e))
    assert failure["level"] == "ERROR" and failure["role"] == "worker"
    assert "RuntimeError: a scheduler bug" in failure["exc_info"]
    assert_one_scheduler_ran_throughout(entries)


def test_redis_refusing_the_user_after_a_restart_is_a_failure_like_any_other(
    harness: Harness,
) -> None:
    harness.start()
    harness.schedules_again()
    harness.server.stop(kill=True)  # the scheduler waits, probing with a write
    harness.wait_for_line(lambda e: e["message"].startswith("Redis unavailable"), "the outage")
    # Back without the bridge's ACL user (WRONGPASS: still an outage), then with the user but
    # not yet allowed to write: NOPERM, an answer, not an outage.
    harness.server.start()
    time.sleep(0.5)
    harness.add_user("-set")
    harness.wait_for_line(failed, "the scheduler's failure")
    harness.add_user("+set")
    harness.schedules_again()

    entries = harness.stop()
    failure = next(e for e in entries if failed(e))
    assert failure["level"] == "ERROR" and "NoPermissionError" in failure["exc_info"]
    assert_one_scheduler_ran_throughout(entries)


def test_a_lock_another_scheduler_took_is_taken_back_soon_after_it_lapses(
    harness: Harness,
) -> None:
    """Another scheduler holds the queue's lock for a while (a worker that took it during this
    one's outage, then died, say). RQ's scheduler drops a queue whose lock it found taken and
    tries for it again only ten minutes later: scheduled sends and retries would wait that long
    once the other is gone. This one tries again within seconds of the lock's lapse."""
    harness.start()
    harness.schedules_again()
    lock = "rq:scheduler-lock:webhooks"
    harness.admin.set(lock, "another-scheduler", ex=3)
    harness.wait_for_line(
        lambda e: "taken over by another scheduler" in e["message"], "the lock to be found taken"
    )
    lapsed = time.monotonic()
    harness.schedules_again()
    took = time.monotonic() - lapsed
    assert harness.admin.get(lock) not in (None, b"another-scheduler")
    entries = harness.stop()
    assert_one_scheduler_ran_throughout(entries)
    assert took < 3 + 2 * REACQUIRE_LOCKS_S + 5, took


def test_a_worker_started_while_another_holds_the_locks_takes_them_soon_after_they_lapse(
    harness: Harness,
) -> None:
    """A worker starts while another worker's scheduler holds the queues' locks (that worker
    was just killed, say). RQ starts no scheduler then, only at a later maintenance once the
    locks are free: up to a maintenance interval more without retries or scheduled sends. This
    one runs from the start and takes the locks within seconds of their lapse."""
    lock = "rq:scheduler-lock:webhooks"
    harness.admin.set(lock, "a-killed-worker", ex=3)
    harness.start()
    lapsed = time.monotonic()
    harness.schedules_again()
    took = time.monotonic() - lapsed
    assert harness.admin.get(lock) not in (None, b"a-killed-worker")
    assert_one_scheduler_ran_throughout(harness.stop())
    assert took < 3 + 2 * REACQUIRE_LOCKS_S + 5, took


def outage_harness(redis_url: str) -> None:
    """The harness of the outage test, driven line by line on stdin: ``down`` is RQ's teardown
    of the first worker's loop, ``up`` starts a new worker's loop, ``stop`` is the worker's end.
    It answers each with a line of JSON on stdout."""
    from workers.rq_worker import BridgeScheduler, BridgeWorker, stop_process_scheduler

    connection = redis.Redis.from_url(redis_url)
    queues = [Queue(name, connection=connection) for name in ("send", "webhooks")]
    worker: BridgeWorker | None = None
    first: BridgeScheduler | None = None
    commands = (line.strip() for line in iter(sys.stdin.readline, ""))
    for command in itertools.chain(["start"], commands):
        answer: dict[str, Any]
        if command in ("start", "up"):
            worker = BridgeWorker(queues, connection=connection)
            worker._start_scheduler(logging_level="WARNING")
            scheduler = cast(BridgeScheduler, worker.scheduler)
            first = first or scheduler
            answer = {
                "locks": sorted(scheduler.acquired_locks),
                "running": scheduler.running,
                "same": scheduler is first,
            }
        elif command == "down":
            assert worker is not None
            worker.stop_scheduler()
            answer = {"running": cast(BridgeScheduler, worker.scheduler).running}
        else:  # "stop"
            assert worker is not None
            stop_process_scheduler(20)
            answer = {"running": cast(BridgeScheduler, worker.scheduler).running}
        print(json.dumps(answer), flush=True)
        if command == "stop":
            return


def test_the_worker_loop_started_again_after_an_outage_schedules_at_once(tmp_path: Path) -> None:
    """``ucwa-bridge worker`` builds a new RQ worker when RQ's loop gives up on an outage, and
    RQ's teardown of the old loop runs while Redis is still away. The process's scheduler is
    not stopped by it: it waits the outage out, still holding the queues' locks, and the new
    loop keeps it, so every retry and scheduled send is queued as soon as Redis is back. At the
    worker's end it stops and gives the locks back."""
    with EmbeddedRedis() as server:
        admin = redis.Redis(port=server.port)
        url = f"redis://127.0.0.1:{server.port}/0"
        harness = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.test_scheduler_failures", "--outage", url],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=(tmp_path / "harness.log").open("wb"),
            text=True,
        )
        assert harness.stdin is not None and harness.stdout is not None

        def ask(command: str) -> dict[str, Any]:
            if command:
                harness.stdin.write(command + "\n")  # type: ignore[union-attr]
                harness.stdin.flush()  # type: ignore[union-attr]
            line = harness.stdout.readline()  # type: ignore[union-attr]
            assert line, (tmp_path / "harness.log").read_text()
            return json.loads(line)

        try:
            started = {"locks": ["send", "webhooks"], "running": True, "same": True}
            assert ask("") == started
            server.stop(kill=True)
            assert ask("down") == {"running": True}  # RQ's teardown, Redis away
            server.start()
            assert ask("up") == started  # the same scheduler, its locks still its own
            job = Queue("send", connection=admin).enqueue_at(
                datetime.now(UTC), "builtins.len", [1, 2]
            )
            wait_until(
                lambda: Job.fetch(job.id, connection=admin).get_status() == JobStatus.QUEUED,
                20,
                "the job due now to be queued",
                tmp_path / "harness.log",
            )
            assert ask("stop") == {"running": False}
            assert harness.wait(timeout=20) == 0
            assert admin.keys("rq:scheduler-lock:*") == []  # given back
        finally:
            if harness.poll() is None:
                harness.kill()
                harness.wait(timeout=10)


if __name__ == "__main__":
    if sys.argv[1] == "--outage":
        outage_harness(sys.argv[2])
    else:
        serve(sys.argv[1])
