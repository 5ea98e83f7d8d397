"""Operator actions behind the API: list and inspect deliveries, retry, replay, endpoint state.

Returns plain JSON-ready dicts; raises the package's errors for the API to map to problems.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import redis
from redis.client import Pipeline

from bridge.webhooks.endpoint_status import EndpointStatusStore
from bridge.webhooks.endpoints import WebhookEndpoint
from bridge.webhooks.errors import DeliveryInFlight, DeliveryNotFound, EndpointNotFound
from bridge.webhooks.events import rfc3339
from bridge.webhooks.jobs import DeliveryJobs
from bridge.webhooks.log import DeliveryLog, DeliveryRecord
from bridge.webhooks.settings import WebhookSettings


def _iso(ms: int | None) -> str | None:
    return None if ms is None else rfc3339(datetime.fromtimestamp(ms / 1000, tz=UTC))


def encode_cursor(cursor: tuple[int, str] | None) -> str | None:
    return None if cursor is None else f"{cursor[0]}.{cursor[1]}"


def decode_cursor(text: str) -> tuple[int, str]:
    """Inverse of ``encode_cursor``; raises ValueError on anything else."""
    ms, _, delivery_id = text.partition(".")
    if not delivery_id.startswith("dlv_"):
        raise ValueError("malformed cursor")
    return int(ms), delivery_id


class WebhookAdmin:
    def __init__(
        self,
        connection: redis.Redis,
        settings: WebhookSettings,
        endpoints: Iterable[WebhookEndpoint],
    ) -> None:
        self.endpoints = {e.id: e for e in endpoints}
        self.log = DeliveryLog(connection, settings.retention_s)
        self.jobs = DeliveryJobs(connection, job_timeout_s=settings.job_timeout_s)
        self.status = EndpointStatusStore(connection)

    def list_deliveries(
        self,
        *,
        status: str | None = None,
        endpoint_id: str | None = None,
        event_type: str | None = None,
        limit: int = 50,
        cursor: tuple[int, str] | None = None,
    ) -> dict[str, Any]:
        records, next_cursor = self.log.page(
            status=status,
            endpoint_id=endpoint_id,
            event_type=event_type,
            limit=limit,
            cursor=cursor,
        )
        now_ms = _now_ms()
        return {
            "items": [self._render(r, now_ms) for r in records],
            "next_cursor": encode_cursor(next_cursor),
        }

    def get_delivery(self, delivery_id: str) -> dict[str, Any]:
        record = self.log.get(delivery_id)
        if record is None:
            raise DeliveryNotFound(delivery_id)
        view = self._render(record, _now_ms())
        view["attempts"] = [
            {
                "at": _iso(a["at_ms"]),
                "try": a["try"],
                "status_code": a["status_code"],
                "error": a["error"],
                "latency_ms": a["latency_ms"],
                "response_excerpt": a["response_excerpt"],
            }
            for a in self.log.attempts(delivery_id)
        ]
        return view

    def retry(self, delivery_id: str) -> dict[str, Any]:
        """Enqueue a new try now (same event id, fresh schedule); DeliveryInFlight if busy."""
        now_ms = _now_ms()

        def enqueue(pipe: Pipeline, try_no: int) -> None:
            # Same job id as a retry already on the schedule: enqueue_now also unschedules it.
            self.jobs.enqueue_now(pipe, delivery_id, try_no)

        return self._render(self.log.requeue(delivery_id, now_ms, enqueue), now_ms)

    def replay(self, since: datetime, endpoint_id: str | None = None) -> int:
        """Retry every dead or failed delivery created since ``since``; returns how many."""
        if endpoint_id is not None and endpoint_id not in self.endpoints:
            raise EndpointNotFound(endpoint_id)
        count = 0
        for delivery_id in self.log.replayable_since(int(since.timestamp() * 1000), endpoint_id):
            try:
                self.retry(delivery_id)
            except (DeliveryInFlight, DeliveryNotFound):
                continue  # changed state meanwhile; nothing to replay
            count += 1
        return count

    def list_endpoints(self) -> list[dict[str, Any]]:
        disabled = self.status.disabled_many(self.endpoints)
        return [self._render_endpoint(e, disabled.get(e.id)) for e in self.endpoints.values()]

    def enable_endpoint(self, endpoint_id: str) -> dict[str, Any]:
        endpoint = self.endpoints.get(endpoint_id)
        if endpoint is None:
            raise EndpointNotFound(endpoint_id)
        self.status.enable(endpoint_id)
        return self._render_endpoint(endpoint, None)

    @staticmethod
    def _render_endpoint(endpoint: WebhookEndpoint, disabled: Any) -> dict[str, Any]:
        view = endpoint.public_view()
        view["disabled"] = (
            None
            if disabled is None
            else {
                "reason": disabled.reason,
                "at": _iso(disabled.at_ms),
                "delivery_id": disabled.delivery_id,
            }
        )
        view["active"] = endpoint.enabled and disabled is None
        return view

    @staticmethod
    def _render(record: DeliveryRecord, now_ms: int) -> dict[str, Any]:
        return {
            "id": record.id,
            "event_id": record.event_id,
            "event_type": record.event_type,
            "endpoint_id": record.endpoint_id,
            "status": record.status.value,
            "reason": record.reason or None,
            "attempt_count": record.attempt_count,
            "created_at": _iso(record.created_ms),
            "updated_at": _iso(record.updated_ms),
            "next_attempt_at": _iso(record.next_attempt_ms)
            if record.status.value in ("pending", "failed")
            else None,
            "in_flight": record.in_flight(now_ms),
        }


def _now_ms() -> int:
    return int(time.time() * 1000)
