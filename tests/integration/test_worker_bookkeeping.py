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

import pytest
import redis
from rq import Queue, get_current_job
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from bench._redis_trips import CountingProxy
from tests.redis_cutting_proxy import CuttingProxy
from workers.rq_worker import _FORGET_AND_TAKE, BridgeWorker


def _rq_keys(client: redis.Redis) -> set[str]:
    return {key.decode() for key in client.scan_iter("rq:*")}


def _leftovers(client: redis.Redis, worker: BridgeWorker) -> set[str]:
    """Keys a finished burst may leave: the queue list, the worker's hash and the queue's name."""
    return _rq_keys(client) - {"rq:queues", worker.key}


def _worker_process(
    redis_url: str, queues: list[str], name: str, work_args: str = ""
) -> subprocess.Popen[bytes]:
    """A worker in a process of its own (RQ's signal handlers need a main thread)."""
    code = (
        "import redis, sys; from workers.rq_worker import BridgeWorker; "
        "c = redis.Redis.from_url(sys.argv[1]); "
        f"BridgeWorker({queues!r}, connection=c, name={name!r})"
        f".work({work_args}logging_level='WARNING')"
    )
    return subprocess.Popen([sys.executable, "-c", code, redis_url])


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
    worker = _worker_process(redis_url, ["send"], "idle-check", "max_idle_time=3, ")
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


# -- a job's forgetting, held for the worker's next call ----------------------------------------


def _worker_state(client: redis.Redis, name: str) -> dict[bytes, bytes]:
    return client.hgetall(f"rq:worker:{name}")  # type: ignore[return-value]


@pytest.mark.parametrize("queue_names", [["send"], ["send", "webhooks"]])
def test_dependents_of_a_held_forget_still_run(
    redis_client: redis.Redis, queue_names: list[str]
) -> None:
    """The forget goes with the next take (two queues) or on its own before RQ's take (one
    queue); either way a job with dependents is handed to RQ's own path, and the take goes on."""
    queues = [Queue(name, connection=redis_client) for name in queue_names]
    first = queues[0].enqueue("builtins.len", [1], result_ttl=0)
    second = queues[0].enqueue("builtins.len", [1, 2], depends_on=first, result_ttl=60)
    other = queues[-1].enqueue("builtins.len", [1, 2, 3], result_ttl=60)

    worker = BridgeWorker(queues, connection=redis_client)
    worker.work(burst=True, logging_level="WARNING")

    assert Job.fetch(second.id, connection=redis_client).return_value() == 2
    assert Job.fetch(other.id, connection=redis_client).return_value() == 3
    assert not redis_client.exists(first.key)
    assert StartedJobRegistry(queue_names[0], connection=redis_client).count == 0
    assert int(redis_client.hget(worker.key, "successful_job_count") or 0) == 3


def suspend_then_wait() -> int:
    """A job that asks for ``rq suspend`` and runs long enough for the worker to look at it."""
    job = get_current_job()
    assert job is not None
    job.connection.set("rq:suspended", 1)
    time.sleep(1.2)
    return 1


def test_a_worker_forgets_its_last_job_before_it_waits_suspended(
    redis_client: redis.Redis, redis_url: str
) -> None:
    """A worker told to suspend waits without taking: the job it just ended must not stay
    ``started`` for as long as the suspension lasts."""
    send = Queue("send", connection=redis_client)
    job = send.enqueue("tests.integration.test_worker_bookkeeping.suspend_then_wait", result_ttl=0)
    waiting = send.enqueue("builtins.len", [1], result_ttl=0)
    worker = _worker_process(redis_url, ["send", "webhooks"], "suspends")
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if _worker_state(redis_client, "suspends").get(b"state") == b"suspended":
                break
            time.sleep(0.02)
        state = _worker_state(redis_client, "suspends")
        assert state.get(b"state") == b"suspended"
        assert not redis_client.exists(job.key)
        assert StartedJobRegistry("send", connection=redis_client).count == 0
        assert state.get(b"successful_job_count") == b"1"
        assert waiting.get_status() == JobStatus.QUEUED  # suspended: nothing more was taken
    finally:
        worker.terminate()
        worker.wait(timeout=15)
        redis_client.delete("rq:suspended")


def test_a_forget_and_take_whose_answer_was_lost_counts_the_job_once(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """The call that forgets a job and takes the next one ran, and its answer was lost:
    redis-py runs it again. The forgotten job counts once, and the job the lost answer took is
    in no list and still ``queued``, as after a lost BLPOP (a send job's message is started again
    by the sweep: ``test_worker_dequeue``)."""
    port = urlsplit(redis_url).port
    assert port is not None
    proxy = CuttingProxy(port, every=False)
    try:
        send = Queue("send", connection=redis_client)
        done = send.enqueue("builtins.len", [1], result_ttl=0)
        lost = send.enqueue("builtins.len", [1, 2], result_ttl=0)
        redis_client.script_load(_FORGET_AND_TAKE.script)
        through = redis.Redis.from_url(proxy.url())
        worker = BridgeWorker(
            [Queue("send", connection=through), Queue("webhooks", connection=through)],
            connection=through,
        )
        # the call that carries a held forget names the worker's key
        proxy.cut_when(lambda data: _FORGET_AND_TAKE.sha.encode() in data and b"rq:worker:" in data)

        worker.work(burst=True, logging_level="WARNING")

        assert proxy.cuts == 1
        assert int(redis_client.hget(worker.key, "successful_job_count") or 0) == 1
        assert not redis_client.exists(done.key)
        assert StartedJobRegistry("send", connection=redis_client).count == 0
        assert lost.get_status() == JobStatus.QUEUED
        assert lost.id not in send.get_job_ids()
    finally:
        proxy.close()
