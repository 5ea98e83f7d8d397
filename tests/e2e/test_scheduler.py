"""The worker's RQ scheduler against a job it cannot read: the schedule goes on, one JSON line."""

from __future__ import annotations

import json
import time

import redis
from rq import Queue, Worker
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry

from tests.e2e.conftest import MakeBridge, wait_for
from tests.processes import alive, descendants


def test_an_unreadable_scheduled_job_holds_back_no_other(make_bridge: MakeBridge) -> None:
    bridge = make_bridge(start=False)
    connection = bridge.redis()
    queue = Queue("webhooks", connection=connection)
    registry = ScheduledJobRegistry(queue=queue)
    # One job whose hash RQ cannot load (a date it cannot parse), due now, beside a good one.
    connection.hset(
        "rq:job:unreadable",
        mapping={
            "created_at": "not a date",
            "status": "scheduled",
            "origin": "webhooks",
            "data": "x",
        },
    )
    connection.zadd(registry.key, {"unreadable": int(time.time()) - 5})
    good = queue.create_job(
        "builtins.len", args=([1, 2, 3],), job_id="readable", result_ttl=600, status="scheduled"
    )
    good.origin = queue.name
    good.save()
    connection.zadd(registry.key, {"readable": int(time.time()) - 5})

    worker = bridge.start_worker()

    def finished() -> bool:
        return Job.fetch("readable", connection=connection).get_status() == JobStatus.FINISHED

    wait_for(finished, 20, "the readable job to run")
    assert Job.fetch("readable", connection=connection).return_value() == 3
    assert connection.zscore(registry.key, "unreadable") is None  # off the schedule
    scheduler_pids = descendants(worker.pid)
    assert scheduler_pids and all(alive(pid) for pid in scheduler_pids)  # still scheduling

    lines = [json.loads(line) for line in bridge.full_logs().splitlines() if line.strip()]
    (entry,) = [line for line in lines if "cannot be read" in line["message"]]
    assert entry["level"] == "ERROR" and entry["job_id"] == "unreadable"
    assert "not a date" in entry["exc_info"]


def test_a_killed_worker_leaves_no_scheduler_behind_even_while_redis_is_down(
    make_bridge: MakeBridge,
) -> None:
    """RQ forks the scheduler; once its worker is gone (SIGKILL, a crash, an OOM kill) it must
    stop too, also while it is waiting for Redis, instead of living on as an orphan."""
    from bridge.config.embedded_redis import EmbeddedRedis

    own = EmbeddedRedis().start()
    try:
        bridge = make_bridge(start=False, own_redis=own.url)
        worker = bridge.start_worker()
        wait_for(lambda: bool(descendants(worker.pid)), 20, "RQ's scheduler process")
        scheduler_pids = descendants(worker.pid)
        # Redis goes while the worker waits for jobs. Gone during the worker's start-up, RQ's
        # loop quits and stops the scheduler on purpose (the worker then waits for Redis and
        # starts a new one), which is not the case under test.
        client = redis.Redis.from_url(own.url)
        wait_for(
            lambda: any(w.get_state() == "idle" for w in Worker.all(connection=client)),
            20,
            "the worker to wait for jobs",
        )
        time.sleep(0.5)  # past its first maintenance, into its wait for a job
        own.stop(kill=True)  # the scheduler now waits for Redis
        time.sleep(1.5)
        assert all(alive(pid) for pid in scheduler_pids)
        worker.kill()
        worker.wait(timeout=10)
        wait_for(
            lambda: not any(alive(pid) for pid in scheduler_pids),
            10,
            "the orphaned scheduler to stop",
            bridge.logs,
        )
    finally:
        own.close()
