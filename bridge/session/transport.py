"""The thin I/O shell of the UCWA client: sends plain requests with ``requests``.

It tells "never reached the server" apart from "may have been processed", which decides whether
a POST may be repeated without sending an instant message twice. Every request has a total
deadline and a capped (decoded) body; TLS is verified unless the operator explicitly turned it
off. Connections are kept alive and reused; see ``UcwaTransport`` for what that means on failure.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import requests
import urllib3
from requests.cookies import extract_cookies_to_jar
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers
from urllib3 import BaseHTTPResponse, HTTPConnectionPool
from urllib3.exceptions import LocationValueError, NewConnectionError

from bridge.net.deadline import Deadline, DeadlineAdapter, deadline, read_capped
from bridge.net.direct import finish, send
from bridge.net.prepared import prepared
from bridge.session.slot import UcwaSlot
from bridge.ucwa.errors import ResponseTooLarge, TransportError, UcwaError, clean_diagnostics
from bridge.ucwa.links import resolve
from bridge.ucwa.messages import HttpRequest, HttpResponse

if TYPE_CHECKING:
    from bridge.config.settings import Settings

USER_AGENT = "ucwa-bridge/0.1"
# What every request asks for: JSON (PayloadFormat.md; the vnd+json answer some servers give is
# read alike) and compression, as IIS offers it. Named here so that no optional decoder installed
# next to ``requests`` (brotli, zstd) changes what the bridge announces.
ACCEPT = "application/json"
ACCEPT_ENCODING = "gzip, deflate"
# Requests that may be repeated once when a kept-alive connection turns out to be dead.
IDEMPOTENT = frozenset({"GET", "HEAD"})
log = logging.getLogger("ucwa_bridge.transport")
_warned_insecure = False


@dataclass(frozen=True)
class TransportOptions:
    """TLS verification (True, False or a CA bundle path), the total deadline of an ordinary
    request, the largest (decoded) response body accepted, extra hosts the session may contact,
    and how long a kept-alive connection may sit idle and still be reused.

    ``max_idle_s`` stays under the idle timeouts servers and proxies use (IIS closes a kept-alive
    connection after 120 s, many load balancers after 60 s), so the server is never the one
    closing a connection as a request sets out on it."""

    verify: bool | str = True
    timeout_s: float = 30.0
    max_body_bytes: int = 4 * 1024 * 1024
    trusted_hosts: tuple[str, ...] = ()
    max_idle_s: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> TransportOptions:
        """Options from the process settings; warns once per process if TLS checks are off."""
        global _warned_insecure
        verify: bool | str = settings.ucwa_ca_bundle or True
        if not settings.ucwa_tls_verify:
            verify = False
            if not _warned_insecure:
                _warned_insecure = True
                log.warning(
                    "TLS certificate verification of the UCWA server is OFF "
                    "(BRIDGE_UCWA_TLS_VERIFY=false): anyone on the network path can read the "
                    "password and the token"
                )
        return cls(
            verify=verify,
            timeout_s=float(settings.ucwa_timeout_s),
            max_body_bytes=settings.ucwa_max_body_bytes,
            trusted_hosts=settings.ucwa_trusted_hosts,
            max_idle_s=settings.ucwa_connection_idle_s,
        )


# Observer called after every UCWA exchange: (kind, method, status or None, seconds).
Observer = Callable[[str, str, int | None, float], None]


class DeliveryUnknown(TransportError):
    """The request was sent but no answer came back: the server may have acted on it."""


class ConnectionLost(DeliveryUnknown):
    """The connection broke (reset or closed) before any answer arrived. The request may have
    reached the server all the same: ``reused`` says whether it went out on a kept-alive one."""

    reused = False


class NotSent(TransportError):
    """The connection failed before the request reached the server: safe to repeat."""


class UcwaTransport:
    """One pooled ``requests.Session`` per process role, shared by its threads (urllib3's pools
    are thread-safe); callers pass absolute or base-relative hrefs.

    Connections are kept alive. What a lost connection means depends on the method:

    - Before a request is written, urllib3 checks that the pooled connection is still open (a
      server that closed it idle has sent FIN, which reads as EOF) and opens a new one if not,
      and ``max_idle_s`` keeps the bridge from reusing one the server is about to close. Those
      two handle the idle close without any request being at risk.
    - Once a request is written, a reset or close before the answer cannot tell "the server
      never saw it" from "the server acted and the answer was lost": the request bytes went
      into the socket either way (urllib3 even swallows the write error so the answer can be
      read). So a GET (idempotent) that lost a kept-alive connection is repeated once, on a
      fresh connection; a POST never is. It raises ``ConnectionLost``, a ``DeliveryUnknown``,
      and the sender's at-most-once rules take over (the message is never sent twice).
    """

    def __init__(
        self,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        pool_size: int = 16,
        observer: Observer | None = None,
        options: TransportOptions | None = None,
        slot: UcwaSlot | None = None,
    ) -> None:
        self.options = options or TransportOptions()
        # Held for each exchange when given: the exchanges of every transport sharing it go
        # one at a time (a worker's job runners share one UCWA request in flight).
        self.slot = slot
        self.http = requests.Session()
        adapter = DeadlineAdapter(
            pool_connections=4,
            pool_maxsize=pool_size,
            max_retries=0,  # no retry below this class: only it knows a POST from a GET
            max_idle_s=self.options.max_idle_s,
        )
        self.http.mount("http://", adapter)
        self.http.mount("https://", adapter)
        self._adapter = adapter
        self.http.headers.update(
            {"User-Agent": USER_AGENT, "Accept": ACCEPT, "Accept-Encoding": ACCEPT_ENCODING}
        )
        self.http.verify = self.options.verify
        # Of the environment, only the proxy variables apply, read once per origin (see
        # ``_proxies``): requests would otherwise scan it on every request, and take a
        # ``.netrc`` entry for the UCWA host over the bearer token.
        self.http.trust_env = False
        self._proxies: dict[str, dict[str, str]] = {}
        if self.options.verify is False:  # the operator was warned once; not on every request
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.observer = observer

    def close(self) -> None:
        self.http.close()

    def _proxies_for(self, url: str) -> dict[str, str]:
        """``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY`` for ``url``'s origin, as requests reads
        them, looked up once per origin (a process's environment does not change)."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        found = self._proxies.get(origin)
        if found is None:
            found = self._proxies[origin] = requests.utils.get_environ_proxies(url)
        return found

    def send(
        self, request: HttpRequest, read_timeout: float | None = None, kind: str = "other"
    ) -> HttpResponse:
        """Send one request; transport failures become NotSent or DeliveryUnknown.

        The whole exchange, connect to last body byte, ends within the deadline: the options'
        ``timeout_s``, or for a long poll (explicit ``read_timeout``) that plus the connect
        timeout.
        """
        headers = dict(request.headers)
        data: Any = None
        if request.form is not None:
            data = request.encoded_body()
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded;charset=UTF-8")
        elif request.json is not None:
            data = request.encoded_body()
            headers.setdefault("Content-Type", "application/json")
        elif request.content is not None:
            data = request.content.encode("utf-8")
        if self.slot is None:
            raw, started = self._timed_exchange(request, data, headers, read_timeout, kind)
        else:
            with self.slot:
                raw, started = self._timed_exchange(request, data, headers, read_timeout, kind)
        self._observe(kind, request.method, raw.status, started)
        if raw.status >= 400:
            _log_diagnostics(raw, request.method, kind)
        return raw

    def _timed_exchange(
        self,
        request: HttpRequest,
        data: Any,
        headers: dict[str, str],
        read_timeout: float | None,
        kind: str,
    ) -> tuple[HttpResponse, float]:
        """The exchange within its deadline, and when it started (its wait for the slot, if
        any, counts in neither)."""
        started = time.monotonic()
        if read_timeout:
            total = read_timeout + self.connect_timeout
        else:
            total = self.options.timeout_s
            read_timeout = min(self.read_timeout, total)
        with deadline(total) as limit:
            if self.slot is not None:
                limit.on_written = self.slot.written
            try:
                raw = self._exchange_once_more_if_stale(request, data, headers, read_timeout, limit)
            except TransportError:
                if not limit.expired:
                    self._observe(kind, request.method, None, started)
                    raise
            # Cut off by the deadline: whatever was parsed (headers ended by EOF) is not trusted.
            if limit.expired:
                self._observe(kind, request.method, None, started)
                raise DeliveryUnknown(
                    f"no complete answer within the {total:g}s deadline",
                    method=request.method,
                    url=request.url,
                )
        return raw, started

    def _exchange_once_more_if_stale(
        self,
        request: HttpRequest,
        data: Any,
        headers: dict[str, str],
        read_timeout: float,
        limit: Deadline,
    ) -> HttpResponse:
        try:
            return self._exchange(request, data, headers, read_timeout, limit)
        except ConnectionLost as lost:
            if lost.reused:
                # Its idle companions are as old as it was: do not hand them out either.
                self._close_idle(request.url)
            if not lost.reused or request.method not in IDEMPOTENT or limit.expired:
                raise
            log.info(
                "kept-alive connection lost before the answer (%s); repeating the %s once on a "
                "new connection",
                lost.message,
                request.method,
            )
            return self._exchange(request, data, headers, read_timeout, limit)

    def _close_idle(self, url: str) -> None:
        """Close the idle pooled connections to ``url``'s origin; in-use ones are untouched."""
        adapter = self.http.get_adapter(url)
        if not isinstance(adapter, DeadlineAdapter):  # pragma: no cover - mounted elsewhere
            return
        try:
            pool = adapter.get_connection_with_tls_context(
                requests.Request("GET", url).prepare(), self.options.verify
            )
        except Exception:  # pragma: no cover - e.g. a CA bundle that vanished
            return
        idle = getattr(pool, "pool", None)
        if idle is None:
            return
        taken = []
        while True:
            try:
                taken.append(idle.get(block=False))
            except queue.Empty:
                break
        for conn in taken:
            if conn is not None:
                conn.close()  # stays in the pool, reconnects on its next request
            try:
                idle.put(conn, block=False)
            except queue.Full:  # pragma: no cover - a racing release filled the slot
                if conn is not None:
                    conn.close()

    def _exchange(
        self,
        request: HttpRequest,
        data: Any,
        headers: dict[str, str],
        read_timeout: float,
        limit: Deadline,
    ) -> HttpResponse:
        method, url = request.method, request.url
        try:
            raw = self._request(method, url, data, headers, read_timeout, limit)
        except requests.exceptions.SSLError as exc:
            raise NotSent(f"TLS failed: {_first_line(exc)}", method=method, url=url) from exc
        except requests.ConnectTimeout as exc:
            raise NotSent("could not connect: ConnectTimeout", method=method, url=url) from exc
        except requests.ConnectionError as exc:
            # A refused connection never carried the request; a reset or an early close may have.
            if _refused(exc):
                raise NotSent("connection refused", method=method, url=url) from exc
            reused = bool(limit.reused)
            lost = ConnectionLost(
                f"connection lost before any answer{' (kept-alive connection)' if reused else ''}"
                f": {_cause(exc)}",
                method=method,
                url=url,
            )
            lost.reused = reused
            raise lost from exc
        except requests.Timeout as exc:
            raise DeliveryUnknown(
                "no answer before the read timeout", method=method, url=url
            ) from exc
        try:
            body = read_capped(raw, self.options.max_body_bytes, limit)
        except Exception as exc:  # urllib3/ssl/socket errors alike: the answer broke off
            raise DeliveryUnknown(
                f"answer broke off: {type(exc).__name__}", method=method, url=url
            ) from exc
        finally:
            finish(raw)
        if body is None:
            raise ResponseTooLarge(
                f"response body over {self.options.max_body_bytes} bytes",
                method=method,
                url=url,
                status=raw.status,
            )
        return HttpResponse(
            status=raw.status,
            headers=tuple(_raw_headers(raw)),
            text=body.decode(get_encoding_from_headers(raw.headers) or "utf-8", errors="replace"),
            url=url,
        )

    def _request(
        self,
        method: str,
        url: str,
        data: Any,
        headers: dict[str, str],
        read_timeout: float,
        limit: Deadline,
    ) -> BaseHTTPResponse:
        """Send the request; the answer with its body unread. Failures raise as ``requests``
        raises them.

        A request that needs nothing of ``requests``' session layer (no proxy applies, no
        cookie to send) goes to the adapter's urllib3 pool itself, as ``requests`` would send it
        (the same pool, URL, headers, body, TLS checks and timeouts) without the layer's cost:
        its settings merged again, its hooks and its ``Response``. A cookie the answer sets
        goes into the session's jar, and from then on requests take ``requests``' own path."""
        timeout = (min(self.connect_timeout, limit.remaining()), read_timeout)
        proxies = self._proxies_for(url)
        if proxies or len(self.http.cookies):
            response = self.http.send(
                prepared(self.http, method, url, data, headers),
                timeout=timeout,
                allow_redirects=False,
                stream=True,
                verify=self.options.verify,
                proxies=proxies,
            )
            return cast(BaseHTTPResponse, response.raw)
        target = _target(url)
        merged = CaseInsensitiveDict(cast(Mapping[str, str], self.http.headers))
        merged.update(headers)
        # Where and when ``requests`` writes it (``PreparedRequest.prepare_content_length``).
        if data is not None:
            if len(data):
                merged["Content-Length"] = str(len(data))
        elif method not in ("GET", "HEAD") and merged.get("Content-Length") is None:
            merged["Content-Length"] = "0"
        # As ``HTTPAdapter.send``: a URL without a host is an ``InvalidURL``, and a CA bundle
        # that is not there raises ``OSError`` before anything is sent, never a lost connection.
        try:
            pool = cast(
                HTTPConnectionPool,
                self._adapter.get_connection_with_tls_context(target, self.options.verify),
            )
        except LocationValueError as exc:
            raise requests.exceptions.InvalidURL(exc) from exc
        self._adapter.cert_verify(pool, url, self.options.verify, None)
        raw = send(pool, method, target.path_url, data, merged, *timeout)
        if "set-cookie" in raw.headers:
            extract_cookies_to_jar(
                self.http.cookies, prepared(self.http, method, url, None, headers), raw
            )
        return raw

    def _observe(self, kind: str, method: str, status: int | None, started: float) -> None:
        if self.observer is not None:
            self.observer(kind, method, status, time.monotonic() - started)


def _log_diagnostics(response: HttpResponse, method: str, kind: str) -> None:
    """One line for an error answer that says why in ``X-Ms-diagnostics`` (cleaned, capped)."""
    diagnostics = clean_diagnostics(response.header("X-Ms-diagnostics"))
    if diagnostics is None:
        return
    log.info(
        "UCWA answered %s to %s %s: X-Ms-diagnostics %s",
        response.status,
        method,
        kind,
        diagnostics,
        extra={"ucwa_status": response.status, "ucwa_diagnostics": diagnostics, "kind": kind},
    )


def _cause(exc: BaseException) -> str:
    """The innermost exception's class name (``RemoteDisconnected``, ``ConnectionResetError``)."""
    seen: set[int] = set()
    current: BaseException = exc
    while id(current) not in seen:
        seen.add(id(current))
        inner = current.__cause__ or current.__context__
        if inner is None and current.args and isinstance(current.args[-1], BaseException):
            inner = current.args[-1]
        if inner is None:
            break
        current = inner
    return type(current).__name__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def absolute(base_url: str, href: str) -> str:
    return resolve(base_url, href)


def _refused(exc: BaseException) -> bool:
    """Whether the connection never opened (refused, unreachable): the request was not sent."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError | NewConnectionError):
            return True
        text = str(current)
        if "Connection refused" in text or "NewConnectionError" in text:
            return True
        current = (
            current.__cause__
            or current.__context__
            or (
                current.args[0]
                if current.args and isinstance(current.args[0], BaseException)
                else None
            )
        )
    return False


def _raw_headers(raw: BaseHTTPResponse) -> list[tuple[str, str]]:
    """Keep repeated headers (two WWW-Authenticate challenges) as separate values."""
    return [(str(k), str(v)) for k, v in raw.headers.items()]


@functools.lru_cache(maxsize=512)
def _target(url: str) -> requests.PreparedRequest:
    """``url`` as ``requests`` prepares it (IDNA host, quoted path), once per URL: a UCWA
    resource is asked for many times."""
    target = requests.PreparedRequest()
    target.prepare_url(url, None)
    return target


__all__ = ["ConnectionLost", "DeliveryUnknown", "NotSent", "UcwaError", "UcwaTransport", "absolute"]


class InterruptibleTransport(UcwaTransport):
    """A transport whose requests of ``kinds`` (None: all) another thread can cut short.

    ``abort()`` shuts their sockets down through their deadlines (the way an expired deadline
    ends a blocked read) and refuses new ones with ``NotSent``: a parked event GET ends at once,
    not when its long poll times out."""

    def __init__(self, kinds: frozenset[str] | None, **options: Any) -> None:
        super().__init__(**options)
        self.kinds = kinds
        self.aborted = False
        self._lock = threading.Lock()
        self._open: set[Deadline] = set()
        self._kind = threading.local()

    def abort(self) -> None:
        with self._lock:
            self.aborted = True
            for limit in self._open:
                limit.fire()

    def send(
        self, request: HttpRequest, read_timeout: float | None = None, kind: str = "other"
    ) -> HttpResponse:
        self._kind.value = kind
        return super().send(request, read_timeout=read_timeout, kind=kind)

    def _exchange(
        self,
        request: HttpRequest,
        data: Any,
        headers: dict[str, str],
        read_timeout: float,
        limit: Deadline,
    ) -> HttpResponse:
        if self.kinds is not None and getattr(self._kind, "value", "") not in self.kinds:
            return super()._exchange(request, data, headers, read_timeout, limit)
        with self._lock:
            if self.aborted:
                url = request.url
                raise NotSent("stopped: the account was given up", method=request.method, url=url)
            self._open.add(limit)
        try:
            return super()._exchange(request, data, headers, read_timeout, limit)
        finally:
            with self._lock:
                self._open.discard(limit)
