"""The worker's own bookkeeping per job: what a finished job leaves in Redis, and what it costs.

A job that succeeds with ``result_ttl=0`` (every bridge job) is forgotten in one script call
instead of RQ's eleven extra round trips; anything else (a kept result, dependents, a failure)
takes RQ's own path. Both must leave Redis exactly as RQ would.
"""

from __future__ import annotations

import subprocess
import sys
import time
from urllib.parse import urlsplit

import redis
from rq import Queue, get_current_job
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from bench._redis_trips import CountingProxy
from workers.rq_worker import BridgeWorker


def _rq_keys(client: redis.Redis) -> set[str]:
    return {key.decode() for key in client.scan_iter("rq:*")}


def _leftovers(client: redis.Redis, worker: BridgeWorker) -> set[str]:
    """Keys a finished burst may leave: the queue list, the worker's hash and the queue's name."""
    return _rq_keys(client) - {"rq:queues", worker.key}


def _commands(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


def test_a_succeeded_job_leaves_nothing_behind_and_counts_for_the_worker(
    redis_client: redis.Redis,
) -> None:
    queue = Queue("send", connection=redis_client)
    jobs = [queue.enqueue("builtins.len", [1, 2], result_ttl=0) for _ in range(5)]
    worker = BridgeWorker([queue], connection=redis_client)

    worker.work(burst=True, logging_level="WARNING")

    assert _leftovers(redis_client, worker) == set()
    assert all(not redis_client.exists(job.key) for job in jobs)
    assert StartedJobRegistry("send", connection=redis_client).count == 0
    assert int(redis_client.hget(worker.key, "successful_job_count") or 0) == 5
    assert float(redis_client.hget(worker.key, "total_working_time") or 0) > 0
    assert redis_client.hget(worker.key, "current_job") is None


def test_a_job_costs_the_worker_at_most_30_redis_commands(redis_client: redis.Redis) -> None:
    """RQ's own bookkeeping ran 59 commands per no-op job, 24 of them for the success alone.
    Measured at the margin (a burst of 30 against one of 10), without the burst's start and end."""
    queue = Queue("send", connection=redis_client)

    def burst(jobs: int) -> int:
        for _ in range(jobs):
            queue.enqueue("builtins.len", [1, 2], result_ttl=0)
        before = _commands(redis_client)
        BridgeWorker([queue], connection=redis_client).work(burst=True, logging_level="WARNING")
        return _commands(redis_client) - before

    per_job = (burst(30) - burst(10)) / 20
    assert per_job <= 30, per_job


def test_a_job_in_a_burst_costs_the_worker_fewer_than_5_round_trips(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """RQ between two jobs sends three heartbeats and asks whether workers are suspended, each a
    round trip, prepares a job in two transactions and persists it in a third: 10 per no-op job.
    Now four: the job taken and read, its preparation (with the PERSIST), its end (with the
    worker's ``idle`` and heartbeat); and a heartbeat a second. Counted on the wire, at the
    margin (30 jobs against 10)."""
    url = urlsplit(redis_url)
    proxy = CountingProxy(url.hostname or "127.0.0.1", url.port or 6379)
    through = redis.Redis.from_url(proxy.url(int(url.path.lstrip("/") or 0)))
    queue = Queue("send", connection=through)
    try:

        def burst(jobs: int) -> int:
            for _ in range(jobs):
                queue.enqueue("builtins.len", [1, 2], result_ttl=0)
            proxy.reset()
            BridgeWorker([queue], connection=through).work(burst=True, logging_level="WARNING")
            return proxy.reset().round_trips

        per_job = (burst(30) - burst(10)) / 20
    finally:
        proxy.close()
    assert per_job < 5, per_job


def own_ttl() -> int:
    """A job that answers the TTL of its own key while it runs."""
    job = get_current_job()
    assert job is not None
    return int(job.connection.ttl(job.key))


def test_a_job_queued_with_a_ttl_runs_without_one(redis_client: redis.Redis) -> None:
    """RQ's ``Job.perform`` persists the job's key; the worker sends that with its preparation."""
    queue = Queue("send", connection=redis_client)
    job = queue.enqueue(own_ttl, ttl=300, result_ttl=60)
    assert redis_client.ttl(job.key) > 0

    BridgeWorker([queue], connection=redis_client).work(burst=True, logging_level="WARNING")

    assert job.get_status(refresh=True) == JobStatus.FINISHED
    assert job.return_value() == -1


def test_a_kept_result_takes_rqs_own_path(redis_client: redis.Redis) -> None:
    queue = Queue("send", connection=redis_client)
    job = queue.enqueue("builtins.len", [1, 2, 3], result_ttl=60)

    BridgeWorker([queue], connection=redis_client).work(burst=True, logging_level="WARNING")

    kept = Job.fetch(job.id, connection=redis_client)
    assert kept.get_status() == JobStatus.FINISHED
    assert kept.return_value() == 3
    assert 0 < redis_client.ttl(kept.key) <= 60


def test_dependents_of_a_forgotten_job_still_run(redis_client: redis.Redis) -> None:
    queue = Queue("send", connection=redis_client)
    first = queue.enqueue("builtins.len", [1], result_ttl=0)
    second = queue.enqueue("builtins.len", [1, 2], depends_on=first, result_ttl=60)

    BridgeWorker([queue], connection=redis_client).work(burst=True, logging_level="WARNING")

    assert Job.fetch(second.id, connection=redis_client).return_value() == 2
    assert not redis_client.exists(first.key)


def test_a_failed_job_still_lands_in_the_failed_registry(redis_client: redis.Redis) -> None:
    queue = Queue("send", connection=redis_client)
    job = queue.enqueue("builtins.len", 5, result_ttl=0)  # len(5) raises TypeError

    BridgeWorker([queue], connection=redis_client).work(burst=True, logging_level="WARNING")

    assert job.id in FailedJobRegistry("send", connection=redis_client).get_job_ids()
    assert Job.fetch(job.id, connection=redis_client).get_status() == JobStatus.FAILED
    assert StartedJobRegistry("send", connection=redis_client).count == 0


def test_a_worker_waiting_for_work_shows_idle_with_a_fresh_heartbeat(
    redis_client: redis.Redis, redis_url: str
) -> None:
    """``idle`` is written with the heartbeat that starts the wait, not in a round trip of its
    own: it must still be there while the worker waits (RQ's signal handlers need a process)."""
    queue = Queue("send", connection=redis_client)
    job = queue.enqueue("builtins.len", [1, 2], result_ttl=0)
    code = (
        "import redis, sys; from workers.rq_worker import BridgeWorker; "
        "c = redis.Redis.from_url(sys.argv[1]); "
        "BridgeWorker(['send'], connection=c, name='idle-check')"
        ".work(max_idle_time=3, logging_level='WARNING')"
    )
    worker = subprocess.Popen([sys.executable, "-c", code, redis_url])
    try:
        deadline = time.monotonic() + 10
        while redis_client.exists(job.key) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not redis_client.exists(job.key)
        state = None
        while time.monotonic() < deadline:
            state = redis_client.hget("rq:worker:idle-check", "state")
            if state == b"idle":
                break
            time.sleep(0.02)
        assert state == b"idle"
        assert redis_client.ttl("rq:worker:idle-check") > 60
    finally:
        assert worker.wait(timeout=15) == 0


def test_rqs_default_serializer_is_passed_on_as_none_and_another_is_kept(
    redis_client: redis.Redis,
) -> None:
    """RQ resolves None to its default serializer without checking it against its typing
    protocol, a check it otherwise runs for every Queue and Job the worker builds."""
    plain = Queue("send", connection=redis_client)
    job = plain.enqueue("builtins.len", [1, 2, 3], result_ttl=60)
    worker = BridgeWorker([plain], connection=redis_client)
    assert worker.serializer is None
    worker.work(burst=True, logging_level="WARNING")
    assert Job.fetch(job.id, connection=redis_client).return_value() == 3

    as_json = Queue("send", connection=redis_client, serializer=JSONSerializer)
    job = as_json.enqueue("builtins.len", [1, 2], result_ttl=60)
    worker = BridgeWorker([as_json], connection=redis_client, serializer=JSONSerializer)
    assert worker.serializer is JSONSerializer
    worker.work(burst=True, logging_level="WARNING")
    assert Job.fetch(job.id, connection=redis_client, serializer=JSONSerializer).return_value() == 2
