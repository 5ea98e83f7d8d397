"""Tries lost with their worker: claimed, never concluded, their lease run out.

A delivery job claims its try before the POST and concludes it after. A worker killed in between
leaves the try taken: a second run of the job steps aside, and RQ files the job as failed. The
workers' maintenance (``BridgeWorker.run_maintenance_tasks``) finds such tries among the oldest
pending deliveries and counts each as a failed try, tried again at once (a receiver may so see
an event twice, as after a timeout: delivery is at least once), or dead past the schedule.
"""

from __future__ import annotations

import logging
import time

import redis

from bridge.webhooks.jobs import DeliveryJobs
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
    moved = []
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
