"""How a worker of several queues takes its next job: one round trip while a queue holds jobs,
and in every case what RQ's own ``dequeue_any`` would have taken, in the same order, with the
same errors, leaving the queues as RQ would.

Each case is set up once, copied (DUMP), taken by RQ's ``Queue.dequeue_any``, put back exactly
(RESTORE), and taken again by ``BridgeQueue.dequeue_any``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from rq import Queue
from rq.job import Job

from bench._redis_trips import CountingProxy
from bridge.config.redis_conn import connect
from bridge.outbound.intake import send_job_id
from tests.integration.test_stalled_lines import queued_jobs, sweep, waiting_heads
from tests.redis_cutting_proxy import CuttingProxy
from workers.rq_worker import _FORGET_AND_TAKE, BridgeJob, BridgeQueue, BridgeWorker

Setup = Callable[[redis.Redis], None]


def _queues(client: redis.Redis) -> list[Queue]:
    return [Queue("send", connection=client), Queue("webhooks", connection=client)]


def _snapshot(client: redis.Redis) -> dict[bytes, bytes]:
    return {key: client.dump(key) for key in client.scan_iter()}  # type: ignore[misc]


def _restore(client: redis.Redis, snapshot: dict[bytes, bytes]) -> None:
    client.flushdb()
    for key, value in snapshot.items():
        client.restore(key, 0, value)


def _state(client: redis.Redis) -> dict[str, Any]:
    """The queues' contents and the job hashes: what a dequeue may change."""
    out: dict[str, Any] = {}
    for key in sorted(client.scan_iter("rq:*")):
        kind = client.type(key)
        if kind == b"list":
            out[key.decode()] = client.lrange(key, 0, -1)
        elif kind == b"hash":
            out[key.decode()] = client.hgetall(key)
    return out


def _take_all(
    kind: type[Queue], client: redis.Redis, timeout: int | None = None
) -> list[tuple[str, Any]]:
    """Dequeue until the queues are empty: each job taken, or the error raised instead."""
    taken: list[tuple[str, Any]] = []
    for _ in range(20):
        try:
            found = kind.dequeue_any(_queues(client), timeout, client, job_class=BridgeJob)
        except Exception as exc:
            taken.append(("error", (type(exc), getattr(exc, "job_id", None), str(exc))))
            continue
        if found is None:
            return taken
        job, queue = found
        assert isinstance(job, BridgeJob)
        taken.append(("job", (job.id, queue.name, job.to_dict())))
    raise AssertionError("the queues never emptied")


def _both(client: redis.Redis, setup: Setup) -> None:
    setup(client)
    before = _snapshot(client)
    theirs = _take_all(Queue, client)
    after_theirs = _state(client)
    _restore(client, before)
    ours = _take_all(BridgeQueue, client)
    assert ours == theirs
    assert _state(client) == after_theirs


def _jobs_in_both_queues(client: redis.Redis) -> None:
    send, webhooks = _queues(client)
    for n in range(3):
        webhooks.enqueue("builtins.len", [n], job_id=f"hook-{n}", result_ttl=0)
        send.enqueue("builtins.len", [n, n], job_id=f"send-{n}", result_ttl=0)


def _a_job_whose_hash_is_gone(client: redis.Redis) -> None:
    send, _ = _queues(client)
    send.enqueue("builtins.len", [1], job_id="gone", result_ttl=0)
    send.enqueue("builtins.len", [2], job_id="kept", result_ttl=0)
    client.delete(Job.key_for("gone"))


def _a_job_whose_hash_is_corrupt(client: redis.Redis) -> None:
    send, webhooks = _queues(client)
    send.enqueue("builtins.len", [1], job_id="corrupt", result_ttl=0)
    webhooks.enqueue("builtins.len", [2], job_id="after", result_ttl=0)
    client.hset(Job.key_for("corrupt"), "created_at", "not a date")


def _only_the_second_queue(client: redis.Redis) -> None:
    _, webhooks = _queues(client)
    webhooks.enqueue("builtins.len", [3], job_id="late", result_ttl=0)


def _nothing(client: redis.Redis) -> None:
    return None


@pytest.mark.parametrize(
    "setup",
    [
        _jobs_in_both_queues,
        _a_job_whose_hash_is_gone,
        _a_job_whose_hash_is_corrupt,
        _only_the_second_queue,
        _nothing,
    ],
)
def test_a_worker_of_two_queues_takes_what_rq_would(
    redis_client: redis.Redis, setup: Setup
) -> None:
    _both(redis_client, setup)


def test_a_worker_of_one_queue_keeps_rqs_intermediate_list(redis_client: redis.Redis) -> None:
    """RQ moves a single queue's job into an intermediate list as it takes it, which its cleanup
    recovers a lost job from; that path is RQ's own, and both leave the same state."""
    send, _ = _queues(redis_client)
    send.enqueue("builtins.len", [1], job_id="one", result_ttl=0)
    before = _snapshot(redis_client)
    theirs = Queue.dequeue_any([send], None, redis_client)
    after_theirs = _state(redis_client)
    _restore(redis_client, before)
    ours = BridgeQueue.dequeue_any([send], None, redis_client)
    assert theirs is not None and ours is not None
    assert ours[0].to_dict() == theirs[0].to_dict()
    assert _state(redis_client) == after_theirs
    assert redis_client.lrange(send.intermediate_queue_key, 0, -1) == [b"one"]


def test_an_empty_set_of_queues_still_blocks_until_a_job_comes(redis_client: redis.Redis) -> None:
    """Nothing waiting: the worker waits in RQ's BLPOP and takes a job queued meanwhile."""
    send, _ = _queues(redis_client)
    timer = threading.Timer(
        0.3, lambda: send.enqueue("builtins.len", [1], job_id="later", result_ttl=0)
    )
    started = time.monotonic()
    timer.start()
    try:
        found = BridgeQueue.dequeue_any(_queues(redis_client), 5, redis_client)
    finally:
        timer.join()
    assert found is not None
    assert found[0].id == "later"
    assert 0.2 < time.monotonic() - started < 4


def test_a_job_of_two_queues_in_a_burst_costs_the_worker_under_3_round_trips(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """RQ takes a job from several queues with BLPOP and reads it with HGETALL; one script does
    both while a queue holds jobs, and forgets the job before (4.25 round trips per no-op job
    with RQ's take, 3.4 with the script alone, 2.3 with the forget in it). Counted on the wire,
    at the margin (30 jobs against 10)."""
    url = urlsplit(redis_url)
    proxy = CountingProxy(url.hostname or "127.0.0.1", url.port or 6379)
    through = redis.Redis.from_url(proxy.url(int(url.path.lstrip("/") or 0)))
    try:

        def burst(jobs: int) -> int:
            send, webhooks = _queues(through)
            for _ in range(jobs):
                send.enqueue("builtins.len", [1, 2], result_ttl=0)
            proxy.reset()
            BridgeWorker([send, webhooks], connection=through).work(
                burst=True, logging_level="WARNING"
            )
            return proxy.reset().round_trips

        per_job = (burst(30) - burst(10)) / 20
    finally:
        proxy.close()
    assert per_job < 3, per_job


def test_a_take_whose_answer_was_lost_leaves_its_job_to_the_sweep(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """The script popped a send job and the connection dropped before its answer: redis-py's
    quick retry runs the script again, which takes the next job. The lost one says ``queued``
    but is in no list, as after a lost BLPOP: the sweep starts its message again, once."""
    port = urlsplit(redis_url).port
    assert port is not None
    proxy = CuttingProxy(port, every=False)  # this connection drops; Redis stays up
    try:
        heads = waiting_heads(redis_client)
        redis_client.script_load(_FORGET_AND_TAKE.script)  # the first EVALSHA runs the script
        through = connect(proxy.url())
        proxy.cut_when(lambda data: _FORGET_AND_TAKE.sha.encode() in data)

        found = BridgeQueue.dequeue_any(_queues(through), None, through, job_class=BridgeJob)

        assert proxy.cuts == 1
        assert found is not None
        taken, lost = found[0].id, send_job_id(heads[0].id)
        assert taken == send_job_id(heads[1].id)  # the retry took the next one
        assert lost not in queued_jobs(redis_client) and taken not in queued_jobs(redis_client)
        assert Job.fetch(lost, connection=redis_client).get_status() == "queued"
    finally:
        proxy.close()

    sweep(redis_client)

    restarted = [j for j in queued_jobs(redis_client) if heads[0].id in j]
    assert len(restarted) == 1 and restarted[0] != lost, queued_jobs(redis_client)
