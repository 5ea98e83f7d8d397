"""The producer's entry point: stage one event for every matching endpoint in the caller's MULTI.

The poller saves its event-channel cursor in the same transaction, so a restart neither
loses nor repeats deliveries. Requires a ``decode_responses=False`` client, as RQ does.
"""

from __future__ import annotations

import time
from functools import cached_property
from typing import Any

import redis
from redis.client import Pipeline

from bridge.webhooks.endpoints import WebhookEndpoint
from bridge.webhooks.events import encode_event, new_event
from bridge.webhooks.jobs import DeliveryJobs
from bridge.webhooks.log import DeliveryLog, DeliveryRecord, DeliveryStatus, delivery_id_for
from bridge.webhooks.settings import WebhookSettings

__all__ = ["Outbox", "new_event", "stage_event"]


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
    outbox = Outbox(pipe, endpoints, settings)
    ids = outbox.stage(event)
    outbox.flush()
    return ids


class Outbox:
    """Stages several events in one caller's MULTI; the deliveries to one endpoint share jobs.

    ``stage`` writes each event's body and delivery records at once; ``flush`` (required before
    the caller's ``execute``) writes the jobs: one per ``settings.batch_size`` deliveries to an
    endpoint, in staging order. A job of several runs ``Deliverer.deliver_many``, so RQ's cost
    of a job is paid once for the batch. Used as a context manager, it flushes on leaving.
    """

    def __init__(
        self,
        pipe: Pipeline,
        endpoints: list[WebhookEndpoint],
        settings: WebhookSettings | None = None,
    ) -> None:
        if pipe.watching and not pipe.explicit_transaction:
            raise ValueError("stage_event: call pipe.multi() after WATCH, before staging")
        # A Pipeline's ``transaction`` flag shadows Redis.transaction(); read the flag itself.
        if not (vars(pipe).get("transaction") is True or pipe.explicit_transaction):
            raise ValueError("stage_event: needs a transactional pipeline (MULTI/EXEC)")
        self.pipe = pipe
        self.endpoints = endpoints
        self.settings = settings or WebhookSettings()
        self._unqueued: dict[str, list[str]] = {}  # endpoint id -> delivery ids without a job

    @cached_property
    def _connection(self) -> redis.Redis:  # built at the first delivery: most events have none
        return redis.Redis(connection_pool=self.pipe.connection_pool)

    @cached_property
    def _log(self) -> DeliveryLog:
        return DeliveryLog(self._connection, self.settings.retention_s)

    @cached_property
    def _jobs(self) -> DeliveryJobs:
        return DeliveryJobs(self._connection, job_timeout_s=self.settings.job_timeout_s)

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.flush()

    def stage(self, event: dict[str, Any]) -> list[str]:
        """The event's body and its delivery records, on the pipe; the delivery ids."""
        body = encode_event(event)
        about = (event.get("data") or {}).get("account")
        targets = [e for e in self.endpoints if e.enabled and e.wants(str(event["type"]), about)]
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
            self._log.stage(self.pipe, record, body)
            self._unqueued.setdefault(endpoint.id, []).append(record.id)
            ids.append(record.id)
        return ids

    def flush(self) -> list[str]:
        """The jobs of every delivery staged since the last flush, on the pipe; their ids."""
        size = self.settings.batch_size
        job_ids = []
        for ids in self._unqueued.values():
            for start in range(0, len(ids), size):
                job_ids.append(self._jobs.enqueue_batch(self.pipe, ids[start : start + size]))
        self._unqueued.clear()
        return job_ids
