"""Plain HTTP request/response values exchanged between the pure UCWA flows and the I/O shell.

The shell turns an ``HttpRequest`` into a real call and the reply into an ``HttpResponse``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlencode, urlsplit

from bridge.ucwa.text import may_carry_surrogates, repair

Headers = tuple[tuple[str, str], ...]
HeadersInput = Headers | Mapping[str, str]
_SECRET_HEADERS = frozenset({"authorization", "cookie", "set-cookie"})
_SECRET_FIELDS = frozenset({"password", "access_token", "ms_rtc_renew"})


def _headers(value: Mapping[str, str] | Iterable[tuple[str, str]] | None) -> Headers:
    if value is None:
        return ()
    items = value.items() if isinstance(value, Mapping) else value
    return tuple((str(k), str(v)) for k, v in items)


def _get_all(headers: HeadersInput, name: str) -> list[str]:
    wanted = name.lower()
    return [v for k, v in _headers(headers) if k.lower() == wanted]


@dataclass(frozen=True)
class HttpRequest:
    """A request to send. At most one of ``form``, ``json`` and ``content`` is set."""

    method: str
    url: str
    headers: HeadersInput = ()
    form: tuple[tuple[str, str], ...] | None = None
    json: Any = None
    content: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", _headers(self.headers))

    def header(self, name: str) -> str | None:
        values = _get_all(self.headers, name)
        return values[-1] if values else None

    def with_header(self, name: str, value: str) -> HttpRequest:
        kept = tuple((k, v) for k, v in _headers(self.headers) if k.lower() != name.lower())
        return replace(self, headers=(*kept, (name, value)))

    def without_header(self, name: str) -> HttpRequest:
        return replace(
            self,
            headers=tuple((k, v) for k, v in _headers(self.headers) if k.lower() != name.lower()),
        )

    @property
    def host(self) -> str:
        return (urlsplit(self.url).hostname or "").lower()

    def encoded_body(self) -> str | None:
        """The body as it goes on the wire (form fields URL-encoded, JSON serialised)."""
        if self.form is not None:
            return urlencode(self.form)
        if self.json is not None:
            return json.dumps(self.json, separators=(",", ":"))
        return self.content

    def __repr__(self) -> str:
        headers = [
            (k, "[redacted]" if k.lower() in _SECRET_HEADERS else v)
            for k, v in _headers(self.headers)
        ]
        form = None
        if self.form is not None:
            form = [(k, "[redacted]" if k.lower() in _SECRET_FIELDS else v) for k, v in self.form]
        return (
            f"HttpRequest(method={self.method!r}, url={self.url!r}, headers={headers!r}, "
            f"form={form!r}, json={'...' if self.json is not None else None}, "
            f"content={'...' if self.content is not None else None})"
        )


@dataclass(frozen=True)
class HttpResponse:
    """A received response. ``headers`` keeps repeated names (several WWW-Authenticate)."""

    status: int
    headers: HeadersInput = ()
    text: str = ""
    url: str | None = field(default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", _headers(self.headers))

    def header(self, name: str) -> str | None:
        values = _get_all(self.headers, name)
        return values[-1] if values else None

    def header_values(self, name: str) -> list[str]:
        return _get_all(self.headers, name)

    def header_map(self) -> dict[str, str]:
        """Headers as a dict; repeated names are joined with ', ' as HTTP allows."""
        merged: dict[str, str] = {}
        for k, v in _headers(self.headers):
            key = k.lower()
            merged[key] = f"{merged[key]}, {v}" if key in merged else v
        return merged

    def json(self) -> Any:
        """The parsed JSON body, or None when the body is empty or not JSON (HTML pages)."""
        text = self.text.lstrip("\ufeff").strip()
        if not text or text[0] not in "{[":
            return None
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than Python's stack
            return None
        # The one place UCWA text becomes ``str``: half an emoji (a lone \ud83d escape) would
        # raise wherever it is encoded later, so it becomes U+FFFD here.
        return repair(value) if may_carry_surrogates(text) else value

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def __repr__(self) -> str:
        return f"HttpResponse(status={self.status!r}, url={self.url!r}, length={len(self.text)})"
