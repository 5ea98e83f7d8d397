"""The worker's command channel never holds up its end: a stop is seen within half a second.

RQ's pubsub thread waits up to 60 s between looks at its stop flag and redis-py (8.2+) waits for
that thread on stop, so a thread that had already read its unsubscribe answer kept a burst, and a
SIGTERM'd worker, alive for a minute.
"""

from __future__ import annotations

import time

import redis
from rq import Queue

from workers.rq_worker import PUBSUB_WAIT_S, BridgeWorker


def test_unsubscribing_after_the_thread_saw_its_answer_returns_at_once(
    redis_client: redis.Redis,
) -> None:
    worker = BridgeWorker(["send"], connection=redis_client)
    worker.subscribe()
    assert worker.pubsub is not None
    # The window the race opened: the thread reads the unsubscribe answer before the stop flag.
    worker.pubsub.unsubscribe()
    deadline = time.monotonic() + 5
    while worker.pubsub.subscribed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not worker.pubsub.subscribed
    time.sleep(PUBSUB_WAIT_S / 2)  # the thread is now waiting for a subscription

    started = time.monotonic()
    worker.unsubscribe()
    elapsed = time.monotonic() - started

    assert elapsed < PUBSUB_WAIT_S + 1.0, elapsed
    assert worker.pubsub_thread is not None and not worker.pubsub_thread.is_alive()


def test_twenty_bursts_in_a_row_each_end_promptly(redis_client: redis.Redis) -> None:
    queue = Queue("send", connection=redis_client)
    slowest = 0.0
    for _ in range(20):
        queue.enqueue("builtins.len", [1, 2])
        started = time.monotonic()
        BridgeWorker([queue], connection=redis_client).work(burst=True, logging_level="WARNING")
        slowest = max(slowest, time.monotonic() - started)
    assert queue.count == 0
    assert slowest < 5.0, slowest
