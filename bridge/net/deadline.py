"""A total deadline for one HTTP exchange, and a capped body read, for ``requests`` sessions.

Per-read timeouts alone let a server that trickles one byte at a time hold a caller forever; a
shared watchdog thread shuts the sockets of an expired exchange down, which ends any blocked read.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.response import BaseHTTPResponse

_current = threading.local()


class Deadline:
    """Expires ``seconds`` after creation; when it does, every watched socket is shut down."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expires_at = time.monotonic() + seconds
        self.expired = False
        self.done = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def remaining(self) -> float:
        return max(0.0, self.expires_at - time.monotonic())

    def watch(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            if self.expired:
                _shutdown(sock)
            elif not self.done and sock not in self._sockets:
                self._sockets.append(sock)

    def fire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.expired = True
            for sock in self._sockets:
                _shutdown(sock)

    def finish(self) -> None:
        with self._lock:
            self.done = True
            self._sockets.clear()


def _shutdown(sock: socket.socket) -> None:
    # The plain socket method on the descriptor: for a TLS socket this ends a blocked read
    # without touching the TLS object another thread is using.
    with contextlib.suppress(OSError):  # already closed
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread firing deadlines in expiry order (lazily skipping finished ones)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._pid = 0

    def arm(self, deadline: Deadline) -> None:
        with self._cond:
            if self._pid != os.getpid():  # first use, or a forked child without the thread
                self._pid = os.getpid()
                self._heap.clear()
                threading.Thread(target=self._run, name="http-deadline", daemon=True).start()
            heapq.heappush(self._heap, (deadline.expires_at, next(self._order), deadline))
            if self._heap[0][2] is deadline:  # only an earlier expiry changes the wait
                self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)[2].fire()


_watchdog = _Watchdog()


@contextmanager
def deadline(seconds: float) -> Iterator[Deadline]:
    """Bound every socket operation of the requests made by this thread inside the block."""
    current = Deadline(seconds)
    previous = getattr(_current, "deadline", None)
    _current.deadline = current
    _watchdog.arm(current)
    try:
        yield current
    finally:
        current.finish()
        _current.deadline = previous


def _watch_current(sock: socket.socket | None) -> None:
    current: Deadline | None = getattr(_current, "deadline", None)
    if current is not None:
        current.watch(sock)


class DeadlineHTTPConnection(HTTPConnection):
    """Registers its socket with the calling thread's deadline, new or reused alike.

    It keeps a duplicate of the plain socket's descriptor: shutting that down also ends a TLS
    handshake or read in progress on the wrapped socket (a TLS socket cannot be duplicated).
    """

    _handle: socket.socket | None = None

    def _new_conn(self) -> socket.socket:
        return self._watched(super()._new_conn())

    def _watched(self, sock: socket.socket) -> socket.socket:
        self._close_handle()
        self._handle = sock.dup()
        _watch_current(self._handle)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch_current(self._handle)
        super().request(*args, **kwargs)

    def close(self) -> None:
        super().close()
        self._close_handle()

    def _close_handle(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class DeadlineHTTPSConnection(DeadlineHTTPConnection, HTTPSConnection):
    pass


class _DeadlineHTTPPool(HTTPConnectionPool):
    ConnectionCls = DeadlineHTTPConnection


class _DeadlineHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = DeadlineHTTPSConnection


class DeadlineAdapter(HTTPAdapter):
    """A pooled requests adapter whose connections honour ``deadline()`` blocks."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _DeadlineHTTPPool,
            "https": _DeadlineHTTPSPool,
        }


def read_capped(
    raw: BaseHTTPResponse, limit: int, until: Deadline | None = None, chunk: int = 64 * 1024
) -> bytes | None:
    """The (decoded) body, or None as soon as it is known to exceed ``limit`` bytes.

    Stops at ``until``'s expiry too: a shut-down socket still hands over data that keeps
    arriving, so the loop itself must look at the clock (the caller checks ``expired``).
    """
    declared = raw.headers.get("Content-Length", "")
    if declared.strip().isdigit() and int(declared) > limit:
        return None
    parts: list[bytes] = []
    total = 0
    while until is None or not until.expired:
        data = raw.read1(min(chunk, limit + 1 - total), decode_content=True)
        if not data:
            return b"".join(parts)
        total += len(data)
        if total > limit:
            return None
        parts.append(data)
    return b"".join(parts)
