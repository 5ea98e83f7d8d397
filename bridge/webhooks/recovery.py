"""Tries lost with their worker: claimed, never concluded, their lease run out; or queued in a
job that ended without taking them.

A delivery job claims its try before the POST and concludes it after. A worker killed in between
leaves the try taken: a second run of the job steps aside, and RQ files the job as failed. The
workers' maintenance (``BridgeWorker.run_maintenance_tasks``) finds such tries among the oldest
pending deliveries and counts each as a failed try, tried again at once (a receiver may so see
an event twice, as after a timeout: delivery is at least once), or dead past the schedule.

A job can also end before it claims anything: its worker killed between RQ handing it over and
the claim, or the job failing there (Redis gone for longer than the job's time, a worker that
cannot read its configuration). Its tries stay queued with nothing left to take them. The same
sweep finds queued tries overdue by more than a job's time whose job has ended, and gives each a
job of its own; no attempt was made, so none is counted.
"""

from __future__ import annotations

import logging
import time

import redis

from bridge.webhooks.jobs import DeliveryJobs, job_id_for
from bridge.webhooks.log import DeliveryLog, DeliveryStatus
from bridge.webhooks.settings import WebhookSettings

logger = logging.getLogger(__name__)

# Pending deliveries one sweep reads, oldest first: a lost try is older than its lease.
SCAN_LIMIT = 1_000
# Every worker's maintenance calls the sweep; one of them runs it per this many seconds.
SWEEP_LOCK = "webhooks:recovery:lock"
SWEEP_EVERY_S = 10


def recover_lost_tries(
    connection: redis.Redis,
    settings: WebhookSettings,
    now_ms: int | None = None,
    every_s: int = SWEEP_EVERY_S,
) -> list[str]:
    """Try every lost try again (or dead-letter it); the ids of the deliveries it moved. Does
    nothing if another sweep ran in the last ``every_s`` seconds (0: always sweeps)."""
    if every_s > 0 and not connection.set(SWEEP_LOCK, b"1", nx=True, ex=every_s):
        return []
    now = int(time.time() * 1000) if now_ms is None else now_ms
    log = DeliveryLog(connection, settings.retention_s)
    jobs = DeliveryJobs(connection, job_timeout_s=settings.job_timeout_s)
    moved = _queue_stranded(log, jobs, settings, now)
    for lost in log.lost_claims(now, SCAN_LIMIT):

        def enqueue(pipe: redis.client.Pipeline, try_no: int, delivery_id: str = lost.id) -> None:
            jobs.enqueue_now(pipe, delivery_id, try_no)

        again = log.recover(lost.id, now, len(settings.schedule_s), enqueue)
        if again is None:
            continue
        moved.append(again.id)
        logger.warning(
            "a webhook try was lost with its worker; %s",
            "tried again" if again.status is DeliveryStatus.FAILED else "the delivery is dead",
            extra={
                "delivery_id": again.id,
                "endpoint_id": again.endpoint_id,
                "try": again.try_no - 1,
                "status": again.status.value,
            },
        )
    return moved


def _queue_stranded(
    log: DeliveryLog, jobs: DeliveryJobs, settings: WebhookSettings, now_ms: int
) -> list[str]:
    overdue = log.overdue(now_ms - settings.job_timeout_s * 1000, SCAN_LIMIT)
    moved = []
    for stranded in jobs.ended_without_taking(overdue) if overdue else []:
        ended = stranded.job or job_id_for(stranded.id, stranded.try_no)

        def enqueue(
            pipe: redis.client.Pipeline,
            try_no: int,
            delivery_id: str = stranded.id,
            ended: str = ended,
        ) -> None:
            # A job of one try keeps its id: it leaves RQ's failed registry, being queued again.
            if jobs.enqueue_now(pipe, delivery_id, try_no) == ended:
                jobs.forget_failed(pipe, ended)

        if not log.queue_again(stranded, now_ms, enqueue):
            continue
        moved.append(stranded.id)
        logger.warning(
            "a webhook try's job ended without taking it; queued again",
            extra={
                "delivery_id": stranded.id,
                "endpoint_id": stranded.endpoint_id,
                "try": stranded.try_no,
                "job_id": ended,
            },
        )
    return moved
