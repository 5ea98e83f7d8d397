"""The worker's RQ scheduler against a job it cannot read: the schedule goes on, one JSON line."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import ScheduledJobRegistry

from tests.e2e.conftest import MakeBridge, wait_for
from tests.processes import descendants


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
    # Still scheduling: a job due after the unreadable one was dropped runs too.
    later = queue.enqueue_at(datetime.now(UTC), "builtins.len", [[1, 2]], result_ttl=600)
    wait_for(
        lambda: Job.fetch(later.id, connection=connection).get_status() == JobStatus.FINISHED,
        20,
        "a job scheduled later to run",
    )
    assert worker.poll() is None

    lines = [json.loads(line) for line in bridge.full_logs().splitlines() if line.strip()]
    (entry,) = [line for line in lines if "cannot be read" in line["message"]]
    assert entry["level"] == "ERROR" and entry["job_id"] == "unreadable"
    assert "not a date" in entry["exc_info"]


def test_a_worker_starts_no_process_that_could_outlive_it(make_bridge: MakeBridge) -> None:
    """RQ forks its scheduler; the worker runs it in a thread instead. A child forked from a
    process with threads can inherit a lock one of them held (the log stream's) and wait on it
    for ever, holding up the worker's stop, and once the worker is killed it lives on as an
    orphan. So no child at any time: as it waits for jobs, through a Redis outage, and after
    its loop was started again."""
    from bridge.config.embedded_redis import EmbeddedRedis

    own = EmbeddedRedis().start()
    try:
        bridge = make_bridge(start=False, own_redis=own.url)
        worker = bridge.start_worker()
        client = redis.Redis.from_url(own.url)
        wait_for(
            lambda: client.exists("rq:scheduler-lock:send", "rq:scheduler-lock:webhooks") == 2,
            20,
            "the worker's scheduler to hold the queues",
        )
        assert descendants(worker.pid) == []
        own.stop(kill=True)  # RQ's loop gives up; the worker waits and builds it again
        time.sleep(1.5)
        assert descendants(worker.pid) == []
        own.start()
        client = redis.Redis.from_url(own.url)
        job = Queue("send", connection=client).enqueue_at(datetime.now(UTC), "builtins.len", [[1]])
        wait_for(
            lambda: Job.fetch(job.id, connection=client).get_status() == JobStatus.FINISHED,
            30,
            "a job scheduled after the outage to run",
            bridge.logs,
        )
        assert descendants(worker.pid) == []
    finally:
        own.close()
