"""The thin I/O shell of the UCWA client: sends plain requests with ``requests``.

It tells "never reached the server" apart from "may have been processed", which decides whether
a POST may be repeated without sending an instant message twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from bridge.ucwa.errors import TransportError, UcwaError, error_from_response
from bridge.ucwa.links import resolve
from bridge.ucwa.messages import HttpRequest, HttpResponse

USER_AGENT = "ucwa-bridge/0.1"

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
    ) -> None:
        self.http = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        self.http.mount("http://", adapter)
        self.http.mount("https://", adapter)
        self.http.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.observer = observer

    def close(self) -> None:
        self.http.close()

    def send(
        self, request: HttpRequest, read_timeout: float | None = None, kind: str = "other"
    ) -> HttpResponse:
        """Send one request; transport failures become NotSent or DeliveryUnknown."""
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
        try:
            raw = self.http.request(
                request.method,
                request.url,
                data=data,
                headers=headers,
                timeout=(self.connect_timeout, read_timeout or self.read_timeout),
                allow_redirects=False,
            )
        except (requests.ConnectTimeout, requests.exceptions.SSLError) as exc:
            self._observe(kind, request.method, None, started)
            raise NotSent(
                f"could not connect: {type(exc).__name__}", method=request.method, url=request.url
            ) from exc
        except requests.ConnectionError as exc:
            self._observe(kind, request.method, None, started)
            # A refused connection never carried the request; a reset or an early close may have.
            if _refused(exc):
                raise NotSent("connection refused", method=request.method, url=request.url) from exc
            raise DeliveryUnknown(
                f"connection lost: {type(exc).__name__}", method=request.method, url=request.url
            ) from exc
        except requests.Timeout as exc:
            self._observe(kind, request.method, None, started)
            raise DeliveryUnknown(
                "no answer before the read timeout", method=request.method, url=request.url
            ) from exc
        self._observe(kind, request.method, raw.status_code, started)
        return HttpResponse(
            status=raw.status_code,
            headers=tuple(_raw_headers(raw)),
            text=raw.text,
            url=request.url,
        )

    def call(
        self,
        method: str,
        url: str,
        *,
        token: str | None,
        json: Any = None,
        content: str | None = None,
        content_type: str | None = None,
        params: Mapping[str, str] | None = None,
        read_timeout: float | None = None,
        kind: str = "other",
    ) -> HttpResponse:
        """Send an authorised UCWA request; raise the mapped UcwaError unless it is a 2xx."""
        headers: list[tuple[str, str]] = []
        if token:
            headers.append(("Authorization", f"Bearer {token}"))
        if content_type:
            headers.append(("Content-Type", content_type))
        if params:
            from bridge.ucwa.links import with_query

            url = with_query(url, dict(params))
        request = HttpRequest(
            method=method, url=url, headers=tuple(headers), json=json, content=content
        )
        response = self.send(request, read_timeout=read_timeout, kind=kind)
        if not response.ok:
            raise error_from_response(
                response.status, response.header_map(), response.text, method=method, url=url
            )
        return response

    def _observe(self, kind: str, method: str, status: int | None, started: float) -> None:
        if self.observer is not None:
            self.observer(kind, method, status, time.monotonic() - started)


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
