"""The event channel of one application: queued events, numbered batches and the parked P-GET.

All methods expect the simulator's lock to be held; ``poll`` waits on the shared condition.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from ucwasim.errors import UcwaError, conflict


class Priority(IntEnum):
    LOW = 1
    MEDIUM = 2
    HIGH = 3


@dataclass
class QueuedEvent:
    sender_rel: str
    sender_href: str
    body: dict[str, Any]
    priority: Priority
    queued_at: float
    on_delivered: Callable[[], None] | None = None
    key: object | None = None


@dataclass
class Batch:
    number: int
    events: list[QueuedEvent]
    resume: bool = False


@dataclass
class Params:
    """P-GET query parameters in protocol seconds; sticky until the client changes them."""

    timeout: float
    low: float
    medium: float


@dataclass
class _Waiter:
    priority: int
    replaced: bool = False


@dataclass
class PollResult:
    status: int
    body: dict[str, Any]
    delivered: list[Callable[[], None]] = field(default_factory=list)


class EventChannel:
    def __init__(
        self,
        href: str,
        cond: threading.Condition,
        defaults: Params,
        scale: float,
    ) -> None:
        self.href = href
        self._cond = cond
        self._defaults = defaults
        self._scale = scale
        self.params = Params(defaults.timeout, defaults.low, defaults.medium)
        self.first_unacked = 1
        self.formed: Batch | None = None
        self.pending: list[QueuedEvent] = []
        self._parked: _Waiter | None = None
        self.resume_pending = False
        self.closed: UcwaError | None = None
        self.last_release = time.monotonic()

    # -- producers ---------------------------------------------------------------------------

    def emit(
        self,
        sender_rel: str,
        sender_href: str,
        body: dict[str, Any],
        priority: Priority = Priority.HIGH,
        on_delivered: Callable[[], None] | None = None,
        key: object | None = None,
    ) -> None:
        if self.closed:
            return
        event = QueuedEvent(
            sender_rel, sender_href, body, priority, time.monotonic(), on_delivered, key
        )
        self.pending.append(event)
        self._cond.notify_all()

    def withdraw(self, key: object) -> bool:
        """Drop a queued event that no response carried yet; False if it was fetched."""
        for event in self.pending:
            if event.key is key:
                self.pending.remove(event)
                return True
        return False

    def holds(self, key: object) -> bool:
        return any(e.key is key for e in self.pending)

    def close(self, error: UcwaError) -> None:
        self.closed = error
        self.pending.clear()
        self._cond.notify_all()

    def reset_for_resume(self) -> None:
        """Long absence: drop what the client missed and forget its parameters."""
        self.pending.clear()
        self.params = Params(self._defaults.timeout, self._defaults.low, self._defaults.medium)
        self.resume_pending = True

    # -- state -------------------------------------------------------------------------------

    @property
    def parked(self) -> bool:
        return self._parked is not None

    def idle_for(self) -> float:
        """Protocol-agnostic real seconds since the last P-GET was released (0 while parked)."""
        return 0.0 if self._parked else time.monotonic() - self.last_release

    def link(self, ack: int) -> dict[str, str]:
        return {"href": f"{self.href}?ack={ack}"}

    # -- the P-GET ----------------------------------------------------------------------------

    def resync(self, ack: int) -> dict[str, Any]:
        """An injected loss of position: take the ack, then point the client at where it is."""
        if self.closed:
            raise self.closed
        if self.formed is not None and ack == self.formed.number + 1:
            self.formed = None
            self.first_unacked = ack
        return {"_links": {"resync": self.link(self.first_unacked)}}

    def poll(self, ack: int, params: Params, priority: int) -> PollResult:
        if self.closed:
            raise self.closed
        if self.formed is not None and ack == self.formed.number + 1:
            self.formed = None
            self.first_unacked = ack
        if ack != self.first_unacked:
            return PollResult(200, {"_links": {"resync": self.link(self.first_unacked)}})
        self.params = params
        if self._parked is not None:
            if priority < self._parked.priority:
                raise conflict("A newer event channel request replaced this one.", "PGetReplaced")
            self._parked.replaced = True
            self._cond.notify_all()
        if self.formed is not None:
            return PollResult(200, self._render(self.formed))
        waiter = _Waiter(priority)
        self._parked = waiter
        started = time.monotonic()
        try:
            while True:
                if waiter.replaced:
                    raise conflict(
                        "A newer event channel request replaced this one.", "PGetReplaced"
                    )
                if self.closed:
                    raise self.closed
                due = self._release_due(started)
                now = time.monotonic()
                if due <= now:
                    break
                self._cond.wait(due - now)
        finally:
            if self._parked is waiter:
                self._parked = None
                self.last_release = time.monotonic()
        batch = Batch(self.first_unacked, self.pending, self.resume_pending)
        self.pending = []
        self.resume_pending = False
        self.formed = batch
        callbacks = [e.on_delivered for e in batch.events if e.on_delivered]
        return PollResult(200, self._render(batch), callbacks)

    def _release_due(self, started: float) -> float:
        if self.resume_pending:
            return 0.0
        due = started + self.params.timeout * self._scale
        for event in self.pending:
            if event.priority == Priority.HIGH:
                return 0.0
            window = self.params.medium if event.priority == Priority.MEDIUM else self.params.low
            due = min(due, event.queued_at + window * self._scale)
        return due

    def _render(self, batch: Batch) -> dict[str, Any]:
        links = {"self": self.link(batch.number)}
        links["resume" if batch.resume else "next"] = self.link(batch.number + 1)
        senders: list[dict[str, Any]] = []
        for event in batch.events:
            last = senders[-1] if senders else None
            if last and last["rel"] == event.sender_rel and last["href"] == event.sender_href:
                last["events"].append(event.body)
            else:
                senders.append(
                    {"rel": event.sender_rel, "href": event.sender_href, "events": [event.body]}
                )
        return {"_links": links, "sender": senders}
