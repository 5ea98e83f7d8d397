"""One webhook POST over a connection pinned to the SSRF-vetted address; never follows redirects.

Pinning keeps the URL's host for the Host header, TLS SNI and certificate checks, so a DNS
answer that changes between the check and the connect cannot redirect the request. The whole
POST ends within its deadline, and only the first ``excerpt_bytes`` of the answer are read.
Connections are kept alive per vetted address (``PinnedPools``): a DNS answer that changes
selects another pool, and the address it names was vetted before any pool is looked at.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util.connection import create_connection

from bridge.net.deadline import (
    Deadline,
    DeadlineHTTPConnection,
    DeadlinePoolManager,
    IdleLimitedHTTPSPool,
    IdleLimitedPool,
    deadline,
)
from bridge.net.prepared import prepared

# Receivers close idle kept-alive connections early (Node.js after 5 s, nginx after 75 s): a
# connection idle for longer than this is not reused, so a POST rarely meets a closing one.
MAX_IDLE_S = 4.0


class _PinnedHTTPConnection(DeadlineHTTPConnection):
    def __init__(self, *args: Any, pinned_address: str, **kwargs: Any) -> None:
        self._pinned_address = pinned_address
        super().__init__(*args, **kwargs)

    def _new_conn(self) -> socket.socket:
        # Same as urllib3's, but the socket goes to the vetted address, not a fresh lookup.
        try:
            sock = create_connection(
                (self._pinned_address, self.port),
                self.timeout,
                source_address=self.source_address,
                socket_options=self.socket_options,
            )
        except TimeoutError as exc:
            raise ConnectTimeoutError(
                self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})"
            ) from exc
        except OSError as exc:
            raise NewConnectionError(self, f"Failed to establish a new connection: {exc}") from exc
        return self._watched(sock)


class _PinnedHTTPSConnection(_PinnedHTTPConnection, HTTPSConnection):
    """TLS on top of the pinned socket; SNI and hostname verification use the URL's host."""


class _PinnedHTTPPool(IdleLimitedPool):
    ConnectionCls = _PinnedHTTPConnection


class _PinnedHTTPSPool(IdleLimitedHTTPSPool):
    ConnectionCls = _PinnedHTTPSConnection


class _PinnedPoolManager(DeadlinePoolManager):
    def __init__(self, pinned_address: str, **kwargs: Any) -> None:
        super().__init__(MAX_IDLE_S, **kwargs)
        self._pinned_address = pinned_address
        self.pool_classes_by_scheme = {"http": _PinnedHTTPPool, "https": _PinnedHTTPSPool}

    def _new_pool(
        self,
        scheme: str,
        host: str,
        port: int,
        request_context: dict[str, Any] | None = None,
    ) -> HTTPConnectionPool:
        pool = super()._new_pool(scheme, host, port, request_context)
        pool.conn_kw["pinned_address"] = self._pinned_address
        return pool


class PinnedAddressAdapter(HTTPAdapter):
    """A requests transport adapter whose connections all go to one pre-resolved address."""

    def __init__(self, pinned_address: str) -> None:
        self._pinned_address = pinned_address  # before super(): it calls init_poolmanager
        super().__init__(max_retries=0)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        self._pool_connections = connections
        self._pool_maxsize = maxsize
        self._pool_block = block
        self.poolmanager = _PinnedPoolManager(
            self._pinned_address, num_pools=connections, maxsize=maxsize, block=block, **pool_kwargs
        )


@dataclass(frozen=True)
class PoolKey:
    """What a kept-alive connection is bound to: the vetted address it was opened to, and the
    host its Host header, SNI and certificate check name. All must match to reuse it."""

    scheme: str
    address: str
    port: int
    host: str
    verify: bool | str


class PinnedPools:
    """One ``requests.Session`` per ``PoolKey``, the least recently used dropped beyond
    ``max_pools``. Thread-safe; a process keeps one (``POOLS``).

    The key holds the address ``ssrf.vet`` returned for this delivery: an answer that changed
    since the last one (to another public address) gets a fresh pool and connection, and one
    that turned private was refused before the caller got here, so no connection opened to the
    old address can carry a request the new answer would not allow.
    """

    def __init__(self, max_pools: int = 64) -> None:
        self.max_pools = max_pools
        self._sessions: OrderedDict[PoolKey, requests.Session] = OrderedDict()
        self._lock = threading.Lock()

    def session(self, key: PoolKey) -> requests.Session:
        with self._lock:
            found = self._sessions.get(key)
            if found is not None:
                self._sessions.move_to_end(key)
                return found
            session = requests.Session()
            session.trust_env = False  # no proxies or netrc from the environment: pinning holds
            session.verify = key.verify
            adapter = PinnedAddressAdapter(key.address)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._sessions[key] = session
            while len(self._sessions) > self.max_pools:
                _, old = self._sessions.popitem(last=False)
                old.close()  # idle connections close now; in-use ones when released
            return session

    def clear(self) -> None:
        with self._lock:
            for session in self._sessions.values():
                session.close()
            self._sessions.clear()


POOLS = PinnedPools()


@dataclass(frozen=True)
class HttpResult:
    """What one POST produced: a status code, or an error code such as ``timeout``."""

    status_code: int | None
    error: str | None
    latency_ms: int
    excerpt: str
    retry_after: str | None


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    pinned_address: str,
    timeout_s: float,
    excerpt_bytes: int = 1024,
    verify: bool | str = True,
    pools: PinnedPools | None = None,
) -> HttpResult:
    """POST ``body`` once. ``timeout_s`` is the total deadline, connect to the last byte read,
    so a receiver that trickles bytes cannot hold the worker longer; the rest of the answer is
    never read (the connection is then closed, not drained). ``verify``: check TLS certificates
    (or a CA bundle path). ``pinned_address`` must come from ``ssrf.vet`` for this delivery.

    A kept-alive connection that breaks before any answer is tried once more on a new one:
    webhooks are delivered at least once (receivers dedupe by ``webhook-id``), and a receiver
    that closed an idle connection as the POST set out has not seen it."""
    started = time.monotonic()
    parts = urlsplit(url)
    key = PoolKey(
        scheme=parts.scheme,
        address=pinned_address,
        port=parts.port or (443 if parts.scheme == "https" else 80),
        host=(parts.hostname or "").lower(),
        verify=verify,
    )
    session = (pools or POOLS).session(key)
    with deadline(timeout_s) as limit:
        try:
            try:
                response = _send(session, url, body, headers, timeout_s)
            except requests.ConnectionError:
                if not limit.reused or limit.expired:
                    raise
                response = _send(session, url, body, headers, timeout_s)
        except requests.Timeout as exc:
            return _error("timeout", exc, started)
        except requests.ConnectionError as exc:
            if limit.expired:
                return _error(
                    "timeout", f"timed out: no answer within the {timeout_s:g}s deadline", started
                )
            return _error("connection_error", exc, started)
        except requests.RequestException as exc:
            return _error("request_error", exc, started)
        if limit.expired:  # headers cut short by the deadline: the status line proves nothing
            response.close()
            return _error(
                "timeout", f"timed out: no answer within the {timeout_s:g}s deadline", started
            )
        try:
            raw = _read_excerpt(response, excerpt_bytes, limit)
        finally:
            # A body read to its end already gave the connection back to the pool; otherwise
            # this closes it: an endless body is never drained.
            response.close()
        return HttpResult(
            status_code=response.status_code,
            error=None,
            latency_ms=_elapsed_ms(started),
            excerpt=raw[:excerpt_bytes].decode("utf-8", "replace"),
            retry_after=response.headers.get("Retry-After"),
        )


def _send(
    session: requests.Session, url: str, body: bytes, headers: dict[str, str], timeout_s: float
) -> requests.Response:
    # What ``session.post`` sends, without its merge of every session setting per request;
    # the session takes nothing from the environment, so no proxy applies.
    return session.send(
        prepared(session, "POST", url, body, headers),
        timeout=timeout_s,
        allow_redirects=False,
        stream=True,
        verify=session.verify,
        proxies={},
    )


def _read_excerpt(response: requests.Response, limit: int, until: Deadline) -> bytes:
    """Up to ``limit`` bytes of the answer; what arrived before a break or the deadline. One
    byte more is asked for, so that a body of exactly ``limit`` bytes is seen to end (and its
    connection can be reused)."""
    parts: list[bytes] = []
    total = 0
    try:
        while total <= limit and not until.expired:
            data = response.raw.read1(min(256, limit + 1 - total), decode_content=True)
            if not data:
                break
            parts.append(data)
            total += len(data)
    except Exception:  # a body that breaks mid-read still has a usable status code
        pass
    return b"".join(parts)[:limit]


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _error(code: str, exc: Exception | str, started: float) -> HttpResult:
    detail = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
    return HttpResult(None, f"{code}: {detail}", _elapsed_ms(started), "", None)
