"""The worker's own bookkeeping per job: what a finished job leaves in Redis, and what it costs.

A job that succeeds with ``result_ttl=0`` (every bridge job) is forgotten in one script call
instead of RQ's eleven extra round trips; anything else (a kept result, dependents, a failure)
takes RQ's own path. Both must leave Redis exactly as RQ would.
"""

from __future__ import annotations

import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry

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


def test_forgetting_a_job_costs_at_most_a_dozen_commands_beyond_the_work(
    redis_client: redis.Redis,
) -> None:
    """RQ's own success path ran 59 commands per no-op job (24 of them for the success alone)."""
    queue = Queue("send", connection=redis_client)
    for _ in range(20):
        queue.enqueue("builtins.len", [1, 2], result_ttl=0)
    worker = BridgeWorker([queue], connection=redis_client)
    before = _commands(redis_client)

    worker.work(burst=True, logging_level="WARNING")

    per_job = (_commands(redis_client) - before) / 20
    assert per_job <= 45, per_job


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
