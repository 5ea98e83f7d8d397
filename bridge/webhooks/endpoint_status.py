"""Endpoint disabled state in Redis (set after a 410 Gone), shared by every process.

Key: ``webhooks:endpoint:{endpoint_id}:disabled`` HASH ``{reason, at_ms, delivery_id}``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import redis
from redis.client import Pipeline

from bridge.webhooks.log import Keys


def disabled_key(endpoint_id: str) -> str:
    return str(Keys.endpoint_disabled(endpoint_id))


@dataclass(frozen=True)
class DisabledState:
    reason: str
    at_ms: int
    delivery_id: str


class EndpointStatusStore:
    """Disable, re-enable and inspect endpoints; the config's ``enabled`` flag is separate."""

    def __init__(self, connection: redis.Redis) -> None:
        self._r = connection

    def disable(
        self, pipe: Pipeline, endpoint_id: str, reason: str, at_ms: int, delivery_id: str
    ) -> None:
        pipe.hset(
            disabled_key(endpoint_id),
            mapping={"reason": reason, "at_ms": at_ms, "delivery_id": delivery_id},
        )

    def enable(self, endpoint_id: str) -> bool:
        """Clear the disabled state; True if the endpoint was disabled."""
        return bool(self._r.delete(disabled_key(endpoint_id)))

    def disabled(self, endpoint_id: str) -> DisabledState | None:
        return self.disabled_many([endpoint_id]).get(endpoint_id)

    def disabled_many(self, endpoint_ids: Iterable[str]) -> dict[str, DisabledState]:
        ids = list(endpoint_ids)
        with self._r.pipeline(transaction=False) as pipe:
            for endpoint_id in ids:
                pipe.hgetall(disabled_key(endpoint_id))
            raws = pipe.execute()
        states: dict[str, DisabledState] = {}
        for endpoint_id, raw in zip(ids, raws, strict=True):
            if raw:
                fields = {k.decode(): v.decode() for k, v in raw.items()}
                states[endpoint_id] = DisabledState(
                    reason=fields.get("reason", ""),
                    at_ms=int(fields.get("at_ms", "0")),
                    delivery_id=fields.get("delivery_id", ""),
                )
        return states
