"""The one definition of "Redis is unavailable": it cannot take the command now and will again.

Every role asks ``redis_unavailable(exc)`` and then backs off, logs one line and resumes by itself.
"""

from __future__ import annotations

import logging
import threading
import time

import redis
from redis import exceptions as rx
from redis.sentinel import MasterNotFoundError, SlaveNotFoundError

# Down, unreachable, still loading its data, read-only (a demoted master), out of memory under
# ``noeviction``, failing over, or asking to try again. A WatchError or a WRONGTYPE is not here:
# those are answers, and retrying blindly would hide a bug.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    rx.ConnectionError,  # includes BusyLoadingError and Sentinel's Master/SlaveNotFoundError
    rx.TimeoutError,
    rx.BusyLoadingError,
    rx.ReadOnlyError,
    rx.OutOfMemoryError,
    rx.MasterDownError,
    rx.TryAgainError,
    rx.ClusterDownError,
    MasterNotFoundError,
    SlaveNotFoundError,
)

# Error replies redis-py may surface as a plain ResponseError (or inside an EXECABORT), by the
# code the server puts first.
UNAVAILABLE_CODES = (
    "READONLY",
    "OOM",
    "LOADING",
    "MASTERDOWN",
    "NOREPLICAS",
    "MISCONF",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "BUSY",
    "UNBLOCKED",  # a blocking pop released because the server turned replica
)

PROBE_KEY = "probe:writable"


def redis_unavailable(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or an error it wraps) says Redis cannot serve us now but will later."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, UNAVAILABLE):
            return True
        if isinstance(exc, rx.ResponseError) and _code(exc) in UNAVAILABLE_CODES:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


# redis-py words an error met inside a pipeline "Command # 1 (SET k v) of pipeline caused
# error: NOREPLICAS …": the server's own words follow the marker.
_IN_PIPELINE = "of pipeline caused error: "


def _code(exc: BaseException) -> str:
    message = str(exc)
    if _IN_PIPELINE in message:
        message = message.split(_IN_PIPELINE, 1)[1]
    return message.lstrip("-").split(" ", 1)[0].rstrip(":").upper()


def probe_writable(client: redis.Redis) -> None:
    """Raise unless Redis takes a write: a ping also succeeds on a read-only or full server."""
    client.set(PROBE_KEY, b"1", px=10_000)


class Outage:
    """One log line when Redis becomes unavailable and one when it serves again, not one per try."""

    def __init__(self, log: logging.Logger, role: str) -> None:
        self.log = log
        self.role = role
        self.since: float | None = None
        self._lock = threading.Lock()

    def begin(self, exc: BaseException, action: str) -> None:
        with self._lock:
            if self.since is not None:
                return
            self.since = time.monotonic()
        self.log.warning(
            "Redis unavailable; %s",
            action,
            extra={"role": self.role, "error": type(exc).__name__, "detail": str(exc)[:200]},
        )

    def end(self) -> None:
        with self._lock:
            if self.since is None:
                return
            lasted, self.since = time.monotonic() - self.since, None
        self.log.warning(
            "Redis available again; resuming",
            extra={"role": self.role, "outage_s": round(lasted, 1)},
        )

    @property
    def active(self) -> bool:
        return self.since is not None


def wait_until_writable(
    client: redis.Redis,
    stop: threading.Event,
    outage: Outage,
    action: str = "waiting for it",
    cap_s: float = 2.0,
) -> bool:
    """Probe with a growing delay until Redis takes a write (True) or ``stop`` is set (False)."""
    delay = 0.2
    while not stop.is_set():
        try:
            probe_writable(client)
        except rx.RedisError as exc:
            if not redis_unavailable(exc):
                raise
            outage.begin(exc, action)
            stop.wait(delay)
            delay = min(delay * 2, cap_s)
            continue
        outage.end()
        return True
    return False
