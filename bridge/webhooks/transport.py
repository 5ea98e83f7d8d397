"""One webhook POST over a connection pinned to the SSRF-vetted address; never follows redirects.

Pinning keeps the URL's host for the Host header, TLS SNI and certificate checks, so a DNS
answer that changes between the check and the connect cannot redirect the request. The whole
POST ends within its deadline, and only the first ``excerpt_bytes`` of the answer are read.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.poolmanager import PoolManager
from urllib3.util.connection import create_connection

from bridge.net.deadline import Deadline, DeadlineHTTPConnection, deadline


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


class _PinnedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _PinnedHTTPConnection


class _PinnedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _PinnedHTTPSConnection


class _PinnedPoolManager(PoolManager):
    def __init__(self, pinned_address: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
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
) -> HttpResult:
    """POST ``body`` once. ``timeout_s`` is the total deadline, connect to the last byte read,
    so a receiver that trickles bytes cannot hold the worker longer; the rest of the answer is
    never read. ``verify``: check TLS certificates (or a CA bundle path)."""
    started = time.monotonic()
    with requests.Session() as session, deadline(timeout_s) as limit:
        session.trust_env = False  # no proxies or netrc from the environment: pinning must hold
        session.verify = verify
        adapter = PinnedAddressAdapter(pinned_address)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        try:
            response = session.post(
                url,
                data=body,
                headers=headers,
                timeout=timeout_s,
                allow_redirects=False,
                stream=True,
            )
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
            response.close()  # closes the connection: an endless body is never drained
        return HttpResult(
            status_code=response.status_code,
            error=None,
            latency_ms=_elapsed_ms(started),
            excerpt=raw[:excerpt_bytes].decode("utf-8", "replace"),
            retry_after=response.headers.get("Retry-After"),
        )


def _read_excerpt(response: requests.Response, limit: int, until: Deadline) -> bytes:
    """Up to ``limit`` bytes of the answer; what arrived before a break or the deadline."""
    parts: list[bytes] = []
    total = 0
    try:
        while total < limit and not until.expired:
            data = response.raw.read1(min(256, limit - total), decode_content=True)
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
