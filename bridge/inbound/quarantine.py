"""Events the poller could not process, kept where an operator can read them.

One bad event never stops the event loop: it is recorded here, logged, and the cursor moves on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any

import redis

from bridge.config.redis_faults import redis_unavailable
from bridge.config.redis_text import text
from bridge.session.lease import LeaseLost

log = logging.getLogger(__name__)

MAX_ENTRIES = 1000
MAX_DETAIL_CHARS = 4096
TTL_S = 30 * 24 * 3600


def passes_through(error: BaseException) -> bool:
    """Faults of the infrastructure, not of one event: Redis unavailable, a transaction that lost
    its watch, the lease gone. The poller handles those; quarantining would lose the event."""
    return isinstance(error, LeaseLost | redis.WatchError) or redis_unavailable(error)


def quarantine_key(account: str) -> str:
    return f"quarantine:{account}"


class Quarantine:
    """``quarantine:<account>``: a capped Redis list of JSON entries, newest first."""

    def __init__(self, client: redis.Redis, account: str) -> None:
        self.redis = client
        self.key = quarantine_key(account)

    def record(
        self,
        pipe: redis.client.Pipeline,
        stage: str,
        error: BaseException,
        item: object = None,
    ) -> dict[str, Any]:
        """Queue the entry on ``pipe`` (the cursor's transaction) and log it at WARNING."""
        ids = _ids(item)
        entry: dict[str, Any] = {
            "at": time.time(),
            "stage": stage,
            "error": type(error).__name__,
            "detail": _short(str(error)),
            "ids": ids,
            "item": _short(_describe(item)),
        }
        pipe.lpush(self.key, json.dumps(entry))  # ensure_ascii: anything at all encodes
        pipe.ltrim(self.key, 0, MAX_ENTRIES - 1)
        pipe.expire(self.key, TTL_S)
        log.warning(
            "an event could not be processed; quarantined and skipped",
            extra={"stage": stage, "error": entry["error"], **ids},
        )
        return entry

    def size(self) -> int:
        return int(self.redis.llen(self.key))

    def entries(self, limit: int = 100) -> list[dict[str, Any]]:
        return [json.loads(text(raw)) for raw in self.redis.lrange(self.key, 0, limit - 1)]


def _ids(item: object) -> dict[str, str]:
    ids: dict[str, str] = {}
    for name in ("href", "conversation_href", "operation_id", "rel", "type"):
        value = getattr(item, name, None)
        if isinstance(value, str) and value:
            ids[name] = _short(value, 300)
    return ids


def _describe(item: object) -> str:
    if item is None:
        return ""
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        try:
            return json.dumps(dataclasses.asdict(item), default=str)
        except Exception:
            pass
    return repr(item)


def _short(value: str, limit: int = MAX_DETAIL_CHARS) -> str:
    return value if len(value) <= limit else value[:limit] + "…"
