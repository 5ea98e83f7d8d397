"""The producer's entry point: stage one event for every matching endpoint in the caller's MULTI.

The poller saves its event-channel cursor in the same transaction, so a restart neither
loses nor repeats deliveries. Requires a ``decode_responses=False`` client, as RQ does.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from redis.client import Pipeline

from bridge.webhooks.endpoints import WebhookEndpoint
from bridge.webhooks.events import encode_event, new_event
from bridge.webhooks.jobs import DeliveryJobs
from bridge.webhooks.log import DeliveryLog, DeliveryRecord, DeliveryStatus, delivery_id_for
from bridge.webhooks.settings import WebhookSettings

__all__ = ["new_event", "stage_event"]


def stage_event(
    pipe: Pipeline,
    event: dict[str, Any],
    endpoints: list[WebhookEndpoint],
    settings: WebhookSettings | None = None,
) -> list[str]:
    """Queue, on ``pipe``, the event body, one delivery record per enabled endpoint that wants
    the event's type, and one RQ job per delivery on queue ``webhooks``; return delivery ids.

    Nothing reaches Redis until the caller's ``pipe.execute()``; if the transaction is
    discarded or a WATCH fails, no event, delivery or job exists. Endpoints disabled in
    Redis (after a 410) still get a record; their job dead-letters it as ``endpoint_disabled``.
    """
    if pipe.watching and not pipe.explicit_transaction:
        raise ValueError("stage_event: call pipe.multi() after WATCH, before staging")
    # A Pipeline's ``transaction`` flag shadows Redis.transaction(); read the flag itself.
    if not (vars(pipe).get("transaction") is True or pipe.explicit_transaction):
        raise ValueError("stage_event: needs a transactional pipeline (MULTI/EXEC)")
    settings = settings or WebhookSettings()
    body = encode_event(event)
    about = (event.get("data") or {}).get("account")
    targets = [e for e in endpoints if e.enabled and e.wants(str(event["type"]), about)]
    if not targets:
        return []
    connection = redis.Redis(connection_pool=pipe.connection_pool)
    log = DeliveryLog(connection, settings.retention_s)
    jobs = DeliveryJobs(connection, job_timeout_s=settings.job_timeout_s)
    now_ms = int(time.time() * 1000)
    ids = []
    for endpoint in targets:
        record = DeliveryRecord(
            id=delivery_id_for(str(event["id"]), endpoint.id),
            event_id=str(event["id"]),
            event_type=str(event["type"]),
            endpoint_id=endpoint.id,
            status=DeliveryStatus.PENDING,
            created_ms=now_ms,
            updated_ms=now_ms,
            next_attempt_ms=now_ms,
        )
        log.stage(pipe, record, body)
        jobs.enqueue_now(pipe, record.id, record.try_no)
        ids.append(record.id)
    return ids
