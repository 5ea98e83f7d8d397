"""A worker's one UCWA request in flight, shared by its job runners (``BRIDGE_WORKER_RUNNERS``).

The slot is reentrant: a send holds it from its claim to its POST's answer, and the transport
takes it again for each exchange. A runner that gives it back while another runner waits for it
steps aside: it blocks (the GIL released) until that runner has written its request, or for at
most ``step_aside_s``. Without that, the runner that just got its answer goes on at once with
its own bookkeeping (the mark, RQ's end of the job, the next job) and holds the interpreter
while the next runner has to take its claim and write its POST: the worker's UCWA request
stands idle meanwhile. The runner that steps aside loses nothing: its request is answered, and
its next one cannot go before the slot is free again anyway.
"""

from __future__ import annotations

import threading
from types import TracebackType

# How long a runner that gave the slot back waits for the next holder's request to be written.
# A claim's round trip and writing a POST take well under this on a loaded machine.
STEP_ASIDE_S = 0.005


class UcwaSlot:
    def __init__(
        self, step_aside_s: float = STEP_ASIDE_S, closed: threading.Event | None = None
    ) -> None:
        self.step_aside_s = step_aside_s
        # Once set (a cold stop), a runner that gets the slot anew never returns with it: no
        # UCWA request starts while the process ends. Its holder's own exchanges go on.
        self.closed = closed
        self._lock = threading.RLock()
        self._depth = 0  # the holder's nesting (only the holder changes it)
        self._state = threading.Condition(threading.Lock())
        self._waiting = 0  # runners blocked in ``acquire``
        self._moves = 0  # requests written and slots given back, so far

    def acquire(self) -> None:
        if not self._lock.acquire(blocking=False):
            with self._state:
                self._waiting += 1
            try:
                self._lock.acquire()
            finally:
                with self._state:
                    self._waiting -= 1
        if self._depth == 0 and self.closed is not None and self.closed.is_set():
            self._lock.release()
            threading.Event().wait()  # until the process ends
        self._depth += 1

    def release(self) -> None:
        """Give the slot back; when that frees it and another runner waits, step aside."""
        self._depth -= 1
        if self._depth:
            self._lock.release()
            return
        with self._state:
            self._moves += 1
            waiting, moves = self._waiting, self._moves
            self._state.notify_all()  # a runner stepping aside for this one: it is done
        self._lock.release()
        if waiting:
            with self._state:
                self._state.wait_for(lambda: self._moves != moves, self.step_aside_s)

    def written(self) -> None:
        """The holder's request went out (called by the transport as its bytes are written)."""
        with self._state:
            self._moves += 1
            self._state.notify_all()

    def __enter__(self) -> UcwaSlot:
        self.acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.release()
