"""A total deadline for one HTTP exchange, a capped body read and kept-alive connection pools
for ``requests`` sessions.

Per-read timeouts alone let a server that trickles one byte at a time hold a caller forever; a
shared watchdog thread shuts the sockets of an expired exchange down, which ends any blocked read.
The same thread fires the job timeouts of a worker's job runners in threads (``arm``).
The pools never hand out a connection idle longer than ``max_idle_s``, and each exchange learns
whether its request went out on a kept-alive (reused) connection.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager
from urllib3.response import BaseHTTPResponse

from bridge.net.headers import FastHeadersResponse

_current = threading.local()


class Deadline:
    """Expires ``seconds`` after creation; when it does, every watched socket is shut down."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expires_at = time.monotonic() + seconds
        self.expired = False
        self.done = False
        # Whether the last request of this exchange went out on a kept-alive connection that
        # had already carried one (None: no request was written yet).
        self.reused: bool | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        # Called each time a request of this exchange has been written (``UcwaSlot.written``).
        self.on_written: Callable[[], None] | None = None

    def remaining(self) -> float:
        return max(0.0, self.expires_at - time.monotonic())

    def note_request(self, reused: bool) -> None:
        self.reused = reused

    def note_written(self) -> None:
        if self.on_written is not None:
            self.on_written()

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


class Expiring(Protocol):
    """What the watchdog fires: a ``Deadline``, or a worker's job timeout (``workers``)."""

    expires_at: float  # time.monotonic()
    done: bool  # finished before it expired: skipped

    def fire(self) -> None: ...


# The heap's length at which the watchdog first drops what finished (see ``_Watchdog.arm``).
COMPACT_FROM = 256


class _Watchdog:
    """One daemon thread firing deadlines in expiry order.

    What finishes first stays in the heap until it reaches the top: a job's timeout (120 s for
    a send) outlives its job by minutes, and the heap held every one of them, thousands at a
    few hundred messages a second (``bench.memory`` saw the worker grow for its first 4,500
    messages). So an ``arm`` that finds the heap twice the size it had after the last sweep
    drops every finished entry: the heap stays within twice what is live, plus
    ``COMPACT_FROM``, for one pass over it each time it doubles."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Expiring]] = []
        self._order = itertools.count()
        self._pid = 0
        self._compact_at = COMPACT_FROM

    def arm(self, deadline: Expiring) -> None:
        with self._cond:
            if self._pid != os.getpid():  # first use, or a forked child without the thread
                self._pid = os.getpid()
                self._heap.clear()
                threading.Thread(target=self._run, name="http-deadline", daemon=True).start()
            heapq.heappush(self._heap, (deadline.expires_at, next(self._order), deadline))
            if len(self._heap) > self._compact_at:
                self._heap[:] = [entry for entry in self._heap if not entry[2].done]
                heapq.heapify(self._heap)
                self._compact_at = max(COMPACT_FROM, 2 * len(self._heap))
            if self._heap and self._heap[0][2] is deadline:  # only an earlier one changes the wait
                self._cond.notify()

    def __len__(self) -> int:
        with self._cond:
            return len(self._heap)

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


def arm(expiring: Expiring) -> None:
    """Have the process's watchdog thread call ``expiring.fire()`` at its ``expires_at``, unless
    it is ``done`` by then."""
    _watchdog.arm(expiring)


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


def _current_deadline() -> Deadline | None:
    """The deadline of the exchange the calling thread is in, if any."""
    return getattr(_current, "deadline", None)


def _watch_current(sock: socket.socket | None) -> None:
    current = _current_deadline()
    if current is not None:
        current.watch(sock)


class DeadlineHTTPConnection(HTTPConnection):
    """Registers its socket with the calling thread's deadline, new or reused alike.

    It keeps a duplicate of the plain socket's descriptor: shutting that down also ends a TLS
    handshake or read in progress on the wrapped socket (a TLS socket cannot be duplicated).
    It counts the requests written on its current socket, so an exchange knows whether its
    request went out on a kept-alive connection (see ``Deadline.reused``).
    """

    response_class = FastHeadersResponse  # http.client's, reading headers in a third the time
    _handle: socket.socket | None = None
    _written = 0  # requests written on the current socket
    idle_since: float | None = None  # when the pool took it back

    def _new_conn(self) -> socket.socket:
        return self._watched(super()._new_conn())

    def _watched(self, sock: socket.socket) -> socket.socket:
        self._close_handle()
        self._handle = sock.dup()
        self._written = 0
        _watch_current(self._handle)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        current = _current_deadline()
        if current is not None:
            # A plain-http connection opens its socket inside ``request``: no socket yet is new.
            current.note_request(self.sock is not None and self._written > 0)
            current.watch(self._handle)
        super().request(*args, **kwargs)
        self._written += 1
        if current is not None:
            current.note_written()

    def close(self) -> None:
        super().close()
        self._close_handle()

    def _close_handle(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class DeadlineHTTPSConnection(DeadlineHTTPConnection, HTTPSConnection):
    pass


class IdleLimitedPool(HTTPConnectionPool):
    """A connection pool that closes a kept-alive connection idle longer than ``max_idle_s``
    instead of handing it out.

    urllib3 already drops a connection the server visibly closed (its socket reads EOF) when it
    hands it out; a server that closes idle connections after its own timeout can still do so
    while a request is on its way. Staying under that timeout avoids the race altogether.
    """

    max_idle_s: float | None = None

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)
        idle_since = getattr(conn, "idle_since", None)
        if (
            self.max_idle_s is not None
            and idle_since is not None
            and not conn.is_closed
            and time.monotonic() - idle_since > self.max_idle_s
        ):
            conn.close()  # reconnects on its next request
        return conn

    def _put_conn(self, conn: Any) -> None:
        if conn is not None:
            conn.idle_since = time.monotonic()
        super()._put_conn(conn)


class IdleLimitedHTTPSPool(IdleLimitedPool, HTTPSConnectionPool):
    pass


class _DeadlineHTTPPool(IdleLimitedPool):
    ConnectionCls = DeadlineHTTPConnection


class _DeadlineHTTPSPool(IdleLimitedHTTPSPool):
    ConnectionCls = DeadlineHTTPSConnection


class DeadlinePoolManager(PoolManager):
    """Hands its pools ``max_idle_s``; pool classes that are not ``IdleLimitedPool`` ignore it."""

    def __init__(self, max_idle_s: float | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_idle_s = max_idle_s
        self.pool_classes_by_scheme = {"http": _DeadlineHTTPPool, "https": _DeadlineHTTPSPool}

    def _new_pool(
        self,
        scheme: str,
        host: str,
        port: int,
        request_context: dict[str, Any] | None = None,
    ) -> HTTPConnectionPool:
        pool = super()._new_pool(scheme, host, port, request_context)
        if isinstance(pool, IdleLimitedPool):
            pool.max_idle_s = self.max_idle_s
        return pool


class DeadlineAdapter(HTTPAdapter):
    """A pooled requests adapter whose connections honour ``deadline()`` blocks and are not
    reused after ``max_idle_s`` idle seconds (None: whenever urllib3 finds them open)."""

    def __init__(self, *args: Any, max_idle_s: float | None = None, **kwargs: Any) -> None:
        self._max_idle_s = max_idle_s  # before super(): it calls init_poolmanager
        super().__init__(*args, **kwargs)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        self._pool_connections = connections
        self._pool_maxsize = maxsize
        self._pool_block = block
        self.poolmanager = DeadlinePoolManager(
            self._max_idle_s, num_pools=connections, maxsize=maxsize, block=block, **pool_kwargs
        )


def read_capped(
    raw: BaseHTTPResponse, limit: int, until: Deadline | None = None, chunk: int = 64 * 1024
) -> bytes | None:
    """The decoded body, or None as soon as it is known to exceed ``limit`` bytes.

    The cap counts decoded bytes: a gzipped answer is inflated one bounded piece at a time
    (urllib3 hands out at most the amount asked for), so a small compressed body that inflates
    to gigabytes stops at the cap without ever being held whole. A declared length refuses
    early only for an uncompressed body, where it is the decoded size.
    Stops at ``until``'s expiry too: a shut-down socket still hands over data that keeps
    arriving, so the loop itself must look at the clock (the caller checks ``expired``).
    """
    declared = raw.headers.get("Content-Length", "")
    encoded = raw.headers.get("Content-Encoding", "").strip().lower() not in ("", "identity")
    if not encoded and declared.strip().isdigit() and int(declared) > limit:
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
