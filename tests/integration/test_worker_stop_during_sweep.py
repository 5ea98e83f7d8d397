"""SIGTERM on an idle worker: RQ's handler raises StopRequested wherever the main thread is. When
it lands in the worker's sweep for lost webhook tries, the stop must not be taken for a failed
sweep (logged and swallowed): the worker then sat in its next 45 s wait for a job.
"""

from __future__ import annotations

import contextlib
import signal
import time

import pytest
import redis
from rq import Queue
from rq.exceptions import StopRequested

import workers.webhook_jobs
from workers.rq_worker import BridgeWorker, stopping


@pytest.fixture(autouse=True)
def _not_stopping() -> object:
    stopping.clear()
    yield
    stopping.clear()


def worker_stopped_in_its_sweep(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, swallow: bool
) -> BridgeWorker:
    """A worker of both queues whose sweep for lost webhook tries gets SIGTERM (RQ's handler
    raises StopRequested there, the worker being idle); ``swallow``: something eats it."""
    client = redis.Redis.from_url(redis_url)
    queues = [Queue("send", connection=client), Queue("webhooks", connection=client)]
    worker = BridgeWorker(queues, connection=client, maintenance_interval=1)

    def sweep(connection: redis.Redis) -> list[str]:
        if swallow:
            with contextlib.suppress(StopRequested):
                worker.request_stop(signal.SIGTERM, None)
        else:
            worker.request_stop(signal.SIGTERM, None)
        return []

    monkeypatch.setattr(workers.webhook_jobs, "recover_lost_webhook_tries", sweep)
    return worker


def test_a_stop_that_lands_in_the_webhook_sweep_stops_the_worker(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = worker_stopped_in_its_sweep(redis_url, monkeypatch, swallow=False)
    with pytest.raises(StopRequested):
        worker.run_maintenance_tasks()
    assert worker.stop_requested


@pytest.mark.timeout(60)
def test_a_stop_swallowed_on_the_way_still_ends_the_loop(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever swallows the StopRequested in the loop, its next look at the flag ends it."""
    worker = worker_stopped_in_its_sweep(redis_url, monkeypatch, swallow=True)
    started = time.monotonic()
    worker.work(burst=False)  # its first maintenance sweeps; RQ's wait for a job lasts 45 s
    assert time.monotonic() - started < 5
