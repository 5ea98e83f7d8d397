"""Broadcasts: one request, one message per recipient, stored together or not at all.

Keys: ``bcast:<id>`` (the broadcast: its recipients and their message ids, JSON). Its messages
carry its id and are indexed under its scope (``bridge.outbound.message_index``), so counts per
status are a ``ZCARD`` each and ``GET /messages?broadcast=`` reads one index.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

import redis

from bridge.outbound.intake import Batch
from bridge.outbound.message_index import broadcast_scope, status_key
from bridge.outbound.messages import MessageRecord, MessageStatus, MessageStore

BROADCAST_ID = re.compile(r"^bc_[0-9a-f]{32}$")
MAX_RECIPIENTS = 500


def new_broadcast_id() -> str:
    return "bc_" + uuid.uuid4().hex


def broadcast_key(broadcast_id: str) -> str:
    return f"bcast:{broadcast_id}"


@dataclass(frozen=True)
class Broadcast:
    """What one ``POST /broadcasts`` created."""

    id: str
    created_at: str
    send_at: str | None
    messages: tuple[tuple[str, str], ...]  # (recipient as given, message id), in request order
    idempotency_key: str | None = None

    @classmethod
    def of(cls, broadcast_id: str, records: list[MessageRecord]) -> Broadcast:
        first = records[0]
        return cls(
            id=broadcast_id,
            created_at=first.created_at,
            send_at=first.send_at,
            messages=tuple((r.to or "", r.id) for r in records),
            idempotency_key=first.idempotency_key,
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "created_at": self.created_at,
                "send_at": self.send_at,
                "messages": [list(m) for m in self.messages],
                "idempotency_key": self.idempotency_key,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> Broadcast:
        data = json.loads(raw)
        return cls(
            id=data["id"],
            created_at=data["created_at"],
            send_at=data["send_at"],
            messages=tuple((to, mid) for to, mid in data["messages"]),
            idempotency_key=data.get("idempotency_key"),
        )

    def view(self, counts: dict[str, int]) -> dict[str, Any]:
        """The caller-facing shape (``Broadcast`` in the OpenAPI document)."""
        view: dict[str, Any] = {
            "id": self.id,
            "created_at": self.created_at,
            "total": len(self.messages),
            "counts": counts,
            "messages": [{"to": to, "id": mid} for to, mid in self.messages],
        }
        if self.send_at is not None:
            view["send_at"] = self.send_at
        if self.idempotency_key is not None:
            view["idempotency_key"] = self.idempotency_key
        return view


class BroadcastStore:
    def __init__(self, client: redis.Redis, store: MessageStore) -> None:
        self._redis = client
        self._store = store

    def batch(self, broadcast: Broadcast, records: list[MessageRecord]) -> Batch:
        """The broadcast's own record, to store in the intake's batch script: it lives as long
        as its messages do."""
        ttl = self._store.record_ttl_s + MessageStore.delay_s(records[0])
        return Batch(broadcast_key(broadcast.id), broadcast.to_json(), ttl)

    def get(self, broadcast_id: str) -> Broadcast | None:
        raw = self._redis.get(broadcast_key(broadcast_id))
        return None if raw is None else Broadcast.from_json(raw)

    def counts(self, broadcast_id: str) -> dict[str, int]:
        """Its messages per status now, from the indexes (one ZCARD per status)."""
        scope = broadcast_scope(broadcast_id)
        with self._redis.pipeline(transaction=False) as pipe:
            for status in MessageStatus:
                pipe.zcard(status_key(status.value, scope))
            answers = pipe.execute()
        return {status.value: int(n) for status, n in zip(MessageStatus, answers, strict=True)}
