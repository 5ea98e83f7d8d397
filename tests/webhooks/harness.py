"""Test helpers: configure endpoints, publish events, run real RQ workers and the scheduler."""

from __future__ import annotations

import base64
import faulthandler
import json
import os
import time
from datetime import UTC, datetime
from typing import Any, cast

import pytest
import redis
from rq import Queue
from rq.registry import ScheduledJobRegistry
from rq.scheduler import RQScheduler

from bridge.webhooks.endpoints import WebhookEndpoint, load_endpoints
from bridge.webhooks.jobs import QUEUE_NAME
from bridge.webhooks.log import DeliveryLog, DeliveryRecord
from bridge.webhooks.outbox import new_event, stage_event
from bridge.webhooks.settings import WebhookSettings
from workers.rq_worker import BridgeWorker


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


def configure(monkeypatch: pytest.MonkeyPatch, *endpoints: dict[str, Any]) -> list[WebhookEndpoint]:
    """Set BRIDGE_WEBHOOKS (what workers read) and return the parsed endpoints."""
    monkeypatch.setenv("BRIDGE_WEBHOOKS", json.dumps(list(endpoints)))
    return load_endpoints(os.environ)


def publish(
    conn: redis.Redis,
    endpoints: list[WebhookEndpoint],
    event_type: str = "message.received",
    data: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    event = new_event(event_type, data or {"text": "hello"}, datetime.now(UTC))
    with conn.pipeline() as pipe:
        pipe.multi()
        ids = stage_event(pipe, event, endpoints, WebhookSettings.from_env(os.environ))
        pipe.execute()
    return event, ids


def record(conn: redis.Redis, delivery_id: str) -> DeliveryRecord:
    found = DeliveryLog(conn, 3600).get(delivery_id)
    assert found is not None, delivery_id
    return found


def attempts(conn: redis.Redis, delivery_id: str) -> list[dict[str, Any]]:
    return DeliveryLog(conn, 3600).attempts(delivery_id)


def run_deliveries(conn: redis.Redis, wait_scheduled_s: float = 0.0, timeout_s: float = 60) -> None:
    """Burst-work the webhooks queue, moving due scheduled retries over as RQ's scheduler does,
    until nothing is queued and nothing is scheduled within ``wait_scheduled_s``."""
    queue = Queue(QUEUE_NAME, connection=conn)
    registry = ScheduledJobRegistry(queue=queue)
    scheduler = RQScheduler([QUEUE_NAME], connection=conn, logging_level="WARNING")
    # This harness is the queue's scheduler: a lock left by another one (a worker of an earlier
    # test still shutting down) would make it move nothing.
    conn.delete(RQScheduler.get_locking_key(QUEUE_NAME))
    scheduler.acquire_locks()
    deadline = time.monotonic() + timeout_s
    bursts = 0
    try:
        while time.monotonic() < deadline:
            scheduler.enqueue_scheduled_jobs()
            if queue.count:
                # Generous deadline: on two busy cores one burst can take seconds.
                bursts += 1
                # A burst that hangs prints every thread's stack, so a CI failure says where.
                faulthandler.dump_traceback_later(20, exit=False)
                try:
                    BridgeWorker([queue], connection=conn).work(burst=True, logging_level="WARNING")
                finally:
                    faulthandler.cancel_dump_traceback_later()
                continue
            earliest = cast(
                list[tuple[bytes, float]], conn.zrange(registry.key, 0, 0, withscores=True)
            )
            if not earliest or earliest[0][1] > time.time() + wait_scheduled_s:
                return
            time.sleep(0.1)
        queued = [(job.id, job.get_status(refresh=False)) for job in queue.get_jobs()]
        scheduled = conn.zrange(registry.key, 0, -1, withscores=True)
        raise AssertionError(
            f"webhook jobs still pending after {timeout_s} s and {bursts} bursts: queued {queued} "
            f"({queue.count} ids), scheduled {scheduled}, locks {scheduler._acquired_locks}"
        )
    finally:
        scheduler.release_locks()
