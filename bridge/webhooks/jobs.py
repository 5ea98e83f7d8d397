"""The RQ side of deliveries: queue name, job function path, job ids, enqueue and schedule.

Everything writes into a caller's pipeline so job creation commits with the delivery record.
"""

from __future__ import annotations

import weakref
from datetime import UTC, datetime
from typing import Any

import redis
from redis.client import Pipeline
from rq import Queue
from rq.registry import ScheduledJobRegistry

from bridge.config.rq_schedule import schedule_job
from bridge.webhooks.log import DeliveryRecord, Keys

QUEUE_NAME = "webhooks"
# A string, not an import: ``bridge`` never imports ``workers``.
JOB_FUNC = "workers.webhook_jobs.deliver_webhook"
BATCH_FUNC = "workers.webhook_jobs.deliver_webhooks"


# RQ asks the server for its version (an INFO round trip) once per Queue object. Producers build
# a DeliveryJobs per staged event, so the version is kept here per connection pool: without it,
# every staged webhook event, inbound or status, cost its process one more round trip.
_SERVER_VERSIONS: weakref.WeakKeyDictionary[Any, tuple[int, int, int]] = weakref.WeakKeyDictionary()


# RQ job statuses after which a job takes nothing more ("finished" only shows with a result TTL).
_ENDED = frozenset({"failed", "stopped", "canceled", "finished"})


def job_id_for(delivery_id: str, try_no: int) -> str:
    """One RQ job id per scheduled try, so enqueueing a try twice cannot double it."""
    return f"{delivery_id}-t{try_no}"


def batch_job_id(delivery_ids: list[str]) -> str:
    """The job of a batch of first tries: named by its first delivery and its size."""
    return f"{delivery_ids[0]}-t1-b{len(delivery_ids)}"


class DeliveryJobs:
    """Creates delivery jobs on the ``webhooks`` queue inside a caller's MULTI pipeline."""

    def __init__(self, connection: redis.Redis, job_timeout_s: int = 120) -> None:
        self.queue = Queue(QUEUE_NAME, connection=connection)
        self._pool = connection.connection_pool
        self.queue.redis_server_version = _SERVER_VERSIONS.get(self._pool)
        self.job_timeout_s = job_timeout_s
        self._scheduled = ScheduledJobRegistry(queue=self.queue)

    @property
    def scheduled_registry(self) -> ScheduledJobRegistry:
        return self._scheduled

    def enqueue_now(self, pipe: Pipeline, delivery_id: str, try_no: int) -> str:
        job_id = job_id_for(delivery_id, try_no)
        description = f"deliver webhook {delivery_id} try {try_no}"
        self._enqueue(pipe, JOB_FUNC, (delivery_id,), job_id, description, [delivery_id])
        pipe.zrem(self._scheduled.key, job_id)
        return job_id

    def enqueue_batch(self, pipe: Pipeline, delivery_ids: list[str]) -> str:
        """One job for the first tries of several deliveries (``Deliverer.deliver_many``);
        a single delivery gets its usual job."""
        if len(delivery_ids) == 1:
            return self.enqueue_now(pipe, delivery_ids[0], 1)
        job_id = batch_job_id(delivery_ids)
        description = f"deliver {len(delivery_ids)} webhooks from {delivery_ids[0]}"
        self._enqueue(pipe, BATCH_FUNC, (list(delivery_ids),), job_id, description, delivery_ids)
        return job_id

    def _enqueue(
        self,
        pipe: Pipeline,
        func: str,
        args: tuple[Any, ...],
        job_id: str,
        description: str,
        delivery_ids: list[str],
    ) -> None:
        """The job on the queue and its name in each of its deliveries' records, on ``pipe``."""
        # enqueue_many never calls pipe.multi(), so it works with explicit and implicit MULTI.
        self.queue.enqueue_many(
            [
                Queue.prepare_data(
                    func,
                    args=args,
                    job_id=job_id,
                    timeout=self.job_timeout_s,
                    result_ttl=0,  # the delivery log holds the outcome
                    description=description,
                )
            ],
            pipeline=pipe,
        )
        if self.queue.redis_server_version:
            _SERVER_VERSIONS[self._pool] = self.queue.redis_server_version
        for delivery_id in delivery_ids:
            pipe.hset(Keys.delivery(delivery_id), "job", job_id)

    def schedule(self, pipe: Pipeline, delivery_id: str, try_no: int, at: datetime) -> str:
        """Put the try on RQ's scheduled registry, in the caller's transaction."""
        job_id = job_id_for(delivery_id, try_no)
        schedule_job(
            pipe,
            self.queue,
            JOB_FUNC,
            at.astimezone(UTC).timestamp(),
            job_id=job_id,
            args=(delivery_id,),
            timeout=self.job_timeout_s,
            result_ttl=0,
            description=f"deliver webhook {delivery_id} try {try_no}",
        )
        pipe.hset(Keys.delivery(delivery_id), "job", job_id)
        return job_id

    def ended_without_taking(self, records: list[DeliveryRecord]) -> list[DeliveryRecord]:
        """Of queued tries, those whose job has ended (failed, stopped, or gone): nothing is
        left to take them. A queued, scheduled or running job still may."""
        jobs = [r.job or job_id_for(r.id, r.try_no) for r in records]
        with self.queue.connection.pipeline(transaction=False) as pipe:
            for job_id in jobs:
                pipe.hget(f"rq:job:{job_id}", "status")
            statuses = pipe.execute()
        return [
            record
            for record, status in zip(records, statuses, strict=True)
            if status is None or status.decode() in _ENDED
        ]

    def forget_failed(self, pipe: Pipeline, job_id: str) -> None:
        """Drop an ended job from RQ's failed registry (its try has a new job)."""
        pipe.zrem(self.queue.failed_job_registry.key, job_id)

    def unschedule(self, pipe: Pipeline, job_id: str) -> None:
        pipe.zrem(self._scheduled.key, job_id)

    def scheduled_at(self, job_id: str) -> datetime | None:
        """When RQ's scheduler will enqueue ``job_id`` (whole seconds), or None."""
        score = self.queue.connection.zscore(self._scheduled.key, job_id)
        return None if score is None else datetime.fromtimestamp(float(score), tz=UTC)
