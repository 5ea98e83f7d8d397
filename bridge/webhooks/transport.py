"""One webhook POST over a connection pinned to the SSRF-vetted address; never follows redirects.

Pinning keeps the URL's host for the Host header, TLS SNI and certificate checks, so a DNS
answer that changes between the check and the connect cannot redirect the request. The whole
POST ends within its deadline, and only the first ``excerpt_bytes`` of the answer are read.
Connections are kept alive per vetted address (``PinnedPools``): a DNS answer that changes
selects another pool, and the address it names was vetted before any pool is looked at.
"""

from __future__ import annotations

import functools
import os
import socket
import ssl
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import requests
import urllib3
from requests.utils import DEFAULT_CA_BUNDLE_PATH
from urllib3 import BaseHTTPResponse
from urllib3.connection import HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import ConnectTimeoutError, InsecureRequestWarning, NewConnectionError
from urllib3.util import make_headers, parse_url
from urllib3.util.connection import create_connection
from urllib3.util.ssl_ import create_urllib3_context

from bridge.net.deadline import (
    Deadline,
    DeadlineHTTPConnection,
    IdleLimitedHTTPSPool,
    IdleLimitedPool,
    deadline,
)
from bridge.net.direct import finish, send

# Receivers close idle kept-alive connections early (Node.js after 5 s, nginx after 75 s): a
# connection idle for longer than this is not reused, so a POST rarely meets a closing one.
MAX_IDLE_S = 4.0
# Kept-alive connections per pool: a worker POSTs from one thread; the API's test deliveries
# from several.
POOL_SIZE = 10
# What ``requests`` sends beside the caller's headers (its defaults, with the encodings it
# can decode without optional packages).
BASE_HEADERS = {"Accept": "*/*", "Accept-Encoding": "gzip, deflate", "Connection": "keep-alive"}


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
                f"Connection to {self.host} timed out. (connect timeout={self.timeout})"
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
    """One urllib3 connection pool per ``PoolKey``, the least recently used dropped beyond
    ``max_pools``. Thread-safe; a process keeps one (``POOLS``).

    The key holds the address ``ssrf.vet`` returned for this delivery: an answer that changed
    since the last one (to another public address) gets a fresh pool and connection, and one
    that turned private was refused before the caller got here, so no connection opened to the
    old address can carry a request the new answer would not allow.
    """

    def __init__(self, max_pools: int = 64) -> None:
        self.max_pools = max_pools
        self._pools: OrderedDict[PoolKey, HTTPConnectionPool] = OrderedDict()
        self._lock = threading.Lock()

    def pool(self, key: PoolKey) -> HTTPConnectionPool:
        with self._lock:
            found = self._pools.get(key)
            if found is not None:
                self._pools.move_to_end(key)
                return found
            pool = _new_pool(key)
            self._pools[key] = pool
            while len(self._pools) > self.max_pools:
                _, old = self._pools.popitem(last=False)
                old.close()  # idle connections close now; in-use ones when released
            return pool

    def clear(self) -> None:
        with self._lock:
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()


def _new_pool(key: PoolKey) -> HTTPConnectionPool:
    """A pool for ``key`` whose TLS checks are those ``requests`` makes for ``verify``: the
    ``certifi`` bundle ``requests`` ships (loaded once per process), a CA bundle file or
    directory, or none at all."""
    common: dict[str, Any] = {"maxsize": POOL_SIZE, "retries": False}
    pool: IdleLimitedPool
    if key.scheme == "https":
        tls: dict[str, Any]
        if key.verify is False:
            tls = {"cert_reqs": "CERT_NONE"}
            # The operator was warned once, at the worker's start; not on every delivery.
            urllib3.disable_warnings(InsecureRequestWarning)
        elif key.verify is True:
            tls = {"cert_reqs": "CERT_REQUIRED", "ssl_context": _default_tls_context()}
        elif os.path.isdir(key.verify):
            tls = {"cert_reqs": "CERT_REQUIRED", "ca_cert_dir": key.verify}
        else:
            tls = {"cert_reqs": "CERT_REQUIRED", "ca_certs": key.verify}
        pool = _PinnedHTTPSPool(key.host, key.port, pinned_address=key.address, **common, **tls)
    else:
        pool = _PinnedHTTPPool(key.host, key.port, pinned_address=key.address, **common)
    pool.max_idle_s = MAX_IDLE_S
    return pool


@functools.cache
def _default_tls_context() -> ssl.SSLContext:
    context = create_urllib3_context()
    context.load_verify_locations(DEFAULT_CA_BUNDLE_PATH)
    return context


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
    Credentials in the URL (``user:password@``) are sent as HTTP Basic authentication.

    A kept-alive connection that breaks before any answer is tried once more on a new one:
    webhooks are delivered at least once (receivers dedupe by ``webhook-id``), and a receiver
    that closed an idle connection as the POST set out has not seen it."""
    started = time.monotonic()
    target = _target(url)
    key = PoolKey(target.scheme, pinned_address, target.port, target.host, verify)
    pool = (pools or POOLS).pool(key)
    sent = {**BASE_HEADERS, **headers, **target.auth}
    with deadline(timeout_s) as limit:
        try:
            try:
                response = _send(pool, target.path, body, sent, timeout_s)
            except requests.ConnectionError:
                if not limit.reused or limit.expired:
                    raise
                response = _send(pool, target.path, body, sent, timeout_s)
        except requests.Timeout as exc:
            return _error("timeout", _detail(exc, target.path), started)
        except requests.ConnectionError as exc:
            if limit.expired:
                return _error(
                    "timeout", f"timed out: no answer within the {timeout_s:g}s deadline", started
                )
            return _error("connection_error", _detail(exc, target.path), started)
        except requests.RequestException as exc:
            return _error("request_error", _detail(exc, target.path), started)
        try:
            if limit.expired:  # headers cut short by the deadline: the status line proves nothing
                return _error(
                    "timeout", f"timed out: no answer within the {timeout_s:g}s deadline", started
                )
            raw = _read_excerpt(response, excerpt_bytes, limit)
        finally:
            finish(response)
        return HttpResult(
            status_code=response.status,
            error=None,
            latency_ms=_elapsed_ms(started),
            excerpt=raw[:excerpt_bytes].decode("utf-8", "replace"),
            retry_after=response.headers.get("Retry-After"),
        )


def _detail(exc: Exception, path: str) -> str:
    """What broke, in urllib3's words without the connection or pool it puts in front, and the
    path asked for (never the URL's credentials)."""
    cause = exc.__cause__ if isinstance(exc.__cause__, Exception) else exc
    text = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
    owner = cause.conn if isinstance(cause, NewConnectionError) else getattr(cause, "pool", None)
    if owner is not None:
        text = text.removeprefix(f"{owner}: ")
    return f"{text} (POST {path})"


def _send(
    pool: HTTPConnectionPool, path: str, body: bytes, headers: dict[str, str], timeout_s: float
) -> BaseHTTPResponse:
    return send(pool, "POST", path, body, headers, timeout_s, timeout_s)


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str
    port: int
    path: str  # with the query
    auth: dict[str, str]  # the Authorization header the URL's credentials make, if any


@functools.lru_cache(maxsize=256)
def _target(url: str) -> _Target:
    """What a POST to ``url`` needs of it: parsed once per URL, not per delivery."""
    parts = parse_url(url)
    scheme = (parts.scheme or "").lower()
    return _Target(
        scheme=scheme,
        host=(parts.host or "").lower().strip("[]"),
        port=parts.port or (443 if scheme == "https" else 80),
        path=parts.request_uri,
        auth=_basic_auth(parts.auth),
    )


def _basic_auth(auth: str | None) -> dict[str, str]:
    """The Authorization header ``requests`` makes of a URL's ``user:password@``: none unless
    both parts are there and one is not empty."""
    if auth is None or ":" not in auth:
        return {}
    user, _, password = auth.partition(":")
    if not user and not password:
        return {}
    return make_headers(basic_auth=f"{unquote(user)}:{unquote(password)}")


def _read_excerpt(response: BaseHTTPResponse, limit: int, until: Deadline) -> bytes:
    """Up to ``limit`` bytes of the answer; what arrived before a break or the deadline. One
    byte more is asked for, so that a body of exactly ``limit`` bytes is seen to end (and its
    connection can be reused)."""
    parts: list[bytes] = []
    total = 0
    try:
        while total <= limit and not until.expired:
            data = response.read1(min(256, limit + 1 - total), decode_content=True)
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
