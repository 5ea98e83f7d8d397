"""The record of every UCWA request the simulator received, in arrival order.

Entries are created on arrival and completed with the status when the response is ready.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any


class RequestLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[dict[str, Any]] = []

    def start(
        self, method: str, path: str, kind: str, connection: int | None = None
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "time": time.time(),
            "method": method,
            "path": path,
            "kind": kind,
            "user": None,
            "status": None,
            "connection": connection,  # the TCP connection's number (None inside a batch)
        }
        with self._lock:
            self._entries.append(entry)
        return entry

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            entries = [dict(e) for e in self._entries]
        return {"requests": entries, "counts": dict(Counter(e["kind"] for e in entries))}

    def clear(self) -> None:
        with self._lock:
            self._entries = []
