"""A job's timeout in a job runner that runs in a thread of its own (``BRIDGE_WORKER_RUNNERS``):
SIGALRM is the main thread's, so ``RunnerDeathPenalty`` raises the job's timeout in the runner's
thread from one watcher thread, as RQ's ``TimerDeathPenalty`` does with a timer per job.
"""

from __future__ import annotations

import threading
import time

import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.timeouts import JobTimeoutException

from workers.rq_worker import BridgeWorker, RunnerDeathPenalty


def busy_for(seconds: float) -> str:
    """A job that takes ``seconds`` in short steps (an async exception lands between two)."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        time.sleep(0.02)
    return "done"


def _in_thread(work: object) -> dict[str, object]:
    seen: dict[str, object] = {}

    def run() -> None:
        started = time.monotonic()
        try:
            seen["result"] = work()  # type: ignore[operator]
        except BaseException as exc:
            seen["error"] = exc
        seen["took"] = time.monotonic() - started

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    return seen


def test_a_job_past_its_timeout_is_stopped_in_its_own_thread_only() -> None:
    def late() -> str:
        with RunnerDeathPenalty(1, JobTimeoutException):
            return busy_for(3)

    def beside() -> str:
        with RunnerDeathPenalty(5, JobTimeoutException):
            return busy_for(1.5)

    other: dict[str, object] = {}
    neighbour = threading.Thread(target=lambda: other.update(_in_thread(beside)))
    neighbour.start()
    seen = _in_thread(late)
    neighbour.join(10)
    error = seen.get("error")
    assert isinstance(error, JobTimeoutException), seen
    assert str(error) == "Task exceeded maximum timeout value (1 seconds)"
    assert 0.9 < float(seen["took"]) < 2.0  # type: ignore[arg-type]
    assert other.get("result") == "done", other  # the other thread's job went on


def test_a_job_that_ends_in_time_is_never_interrupted_later() -> None:
    def quick() -> str:
        with RunnerDeathPenalty(1, JobTimeoutException):
            busy_for(0.1)
        return busy_for(1.5)  # past the cancelled deadline

    seen = _in_thread(quick)
    assert seen.get("result") == "done" and "error" not in seen, seen


def test_a_runner_in_a_thread_fails_a_job_that_overruns(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    queue = Queue("runner-timeouts", connection=client)
    slow = queue.enqueue(busy_for, 5, job_timeout=1)
    fine = queue.enqueue(busy_for, 0.1, job_timeout=1)

    def work() -> bool:
        worker = BridgeWorker([queue], connection=client)
        assert worker.in_thread
        return worker.work(burst=True)

    seen = _in_thread(work)
    assert "error" not in seen, seen
    slow_job = Job.fetch(slow.id, connection=client)
    assert slow_job.get_status() == JobStatus.FAILED
    result = slow_job.latest_result()
    assert result is not None
    assert "exceeded maximum timeout value (1 seconds)" in (result.exc_string or "")
    assert Job.fetch(fine.id, connection=client).get_status() == JobStatus.FINISHED
