"""The thin I/O shell of the UCWA client: sends plain requests with ``requests``.

It tells "never reached the server" apart from "may have been processed", which decides whether
a POST may be repeated without sending an instant message twice. Every request has a total
deadline and a capped body; TLS is verified unless the operator explicitly turned it off.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import requests
import urllib3

from bridge.net.deadline import Deadline, DeadlineAdapter, deadline, read_capped
from bridge.ucwa.errors import ResponseTooLarge, TransportError, UcwaError
from bridge.ucwa.links import resolve
from bridge.ucwa.messages import HttpRequest, HttpResponse

if TYPE_CHECKING:
    from bridge.config.settings import Settings

USER_AGENT = "ucwa-bridge/0.1"
log = logging.getLogger("ucwa_bridge.transport")
_warned_insecure = False


@dataclass(frozen=True)
class TransportOptions:
    """TLS verification (True, False or a CA bundle path), the total deadline of an ordinary
    request, the largest response body accepted, and extra hosts the session may contact."""

    verify: bool | str = True
    timeout_s: float = 30.0
    max_body_bytes: int = 4 * 1024 * 1024
    trusted_hosts: tuple[str, ...] = ()

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
        )


# Observer called after every UCWA exchange: (kind, method, status or None, seconds).
Observer = Callable[[str, str, int | None, float], None]


class DeliveryUnknown(TransportError):
    """The request was sent but no answer came back: the server may have acted on it."""


class NotSent(TransportError):
    """The connection failed before the request reached the server: safe to repeat."""


class UcwaTransport:
    """One pooled ``requests.Session``; callers pass absolute or base-relative hrefs."""

    def __init__(
        self,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        pool_size: int = 16,
        observer: Observer | None = None,
        options: TransportOptions | None = None,
    ) -> None:
        self.options = options or TransportOptions()
        self.http = requests.Session()
        adapter = DeadlineAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        self.http.mount("http://", adapter)
        self.http.mount("https://", adapter)
        self.http.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
        self.http.verify = self.options.verify
        if self.options.verify is False:  # the operator was warned once; not on every request
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.observer = observer

    def close(self) -> None:
        self.http.close()

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
        started = time.monotonic()
        if read_timeout:
            total = read_timeout + self.connect_timeout
        else:
            total = self.options.timeout_s
            read_timeout = min(self.read_timeout, total)
        with deadline(total) as limit:
            try:
                raw = self._exchange(request, data, headers, read_timeout, limit)
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
        self._observe(kind, request.method, raw.status, started)
        return raw

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
            raw = self.http.request(
                method,
                url,
                data=data,
                headers=headers,
                timeout=(min(self.connect_timeout, limit.remaining()), read_timeout),
                allow_redirects=False,
                stream=True,
                verify=self.options.verify,  # explicit: REQUESTS_CA_BUNDLE must not override it
            )
        except requests.exceptions.SSLError as exc:
            raise NotSent(f"TLS failed: {_first_line(exc)}", method=method, url=url) from exc
        except requests.ConnectTimeout as exc:
            raise NotSent("could not connect: ConnectTimeout", method=method, url=url) from exc
        except requests.ConnectionError as exc:
            # A refused connection never carried the request; a reset or an early close may have.
            if _refused(exc):
                raise NotSent("connection refused", method=method, url=url) from exc
            raise DeliveryUnknown(
                f"connection lost: {type(exc).__name__}", method=method, url=url
            ) from exc
        except requests.Timeout as exc:
            raise DeliveryUnknown(
                "no answer before the read timeout", method=method, url=url
            ) from exc
        try:
            body = read_capped(raw.raw, self.options.max_body_bytes, limit)
        except Exception as exc:  # urllib3/ssl/socket errors alike: the answer broke off
            raise DeliveryUnknown(
                f"answer broke off: {type(exc).__name__}", method=method, url=url
            ) from exc
        finally:
            raw.close()
        if body is None:
            raise ResponseTooLarge(
                f"response body over {self.options.max_body_bytes} bytes",
                method=method,
                url=url,
                status=raw.status_code,
            )
        return HttpResponse(
            status=raw.status_code,
            headers=tuple(_raw_headers(raw)),
            text=body.decode(raw.encoding or "utf-8", errors="replace"),
            url=url,
        )

    def _observe(self, kind: str, method: str, status: int | None, started: float) -> None:
        if self.observer is not None:
            self.observer(kind, method, status, time.monotonic() - started)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def absolute(base_url: str, href: str) -> str:
    return resolve(base_url, href)


def _refused(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError):
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


def _raw_headers(raw: requests.Response) -> list[tuple[str, str]]:
    """Keep repeated headers (two WWW-Authenticate challenges) as separate values."""
    original = getattr(raw.raw, "headers", None)
    if original is not None and hasattr(original, "items"):
        try:
            return [(str(k), str(v)) for k, v in original.items()]
        except Exception:  # pragma: no cover - defensive: fall back to the folded view
            pass
    return [(k, v) for k, v in raw.headers.items()]


__all__ = ["DeliveryUnknown", "NotSent", "UcwaError", "UcwaTransport", "absolute"]
