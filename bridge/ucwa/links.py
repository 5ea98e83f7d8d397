"""HAL helpers for UCWA resources: read links and embedded resources by rel, resolve hrefs,
edit query strings of server-supplied hrefs, and parse ASP.NET ``/Date(ms)/`` values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urljoin, urlsplit, urlunsplit

from bridge.ucwa.errors import InvalidLink

_DATE = re.compile(r"^\\?/Date\((-?\d+)(?:[+-]\d{4})?\)\\?/$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _link_entries(resource: Mapping[str, Any] | None, rel: str) -> list[Mapping[str, Any]]:
    if not isinstance(resource, Mapping):
        return []
    links = resource.get("_links")
    if not isinstance(links, Mapping):
        return []
    value = links.get(rel)
    if isinstance(value, Mapping):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, Mapping)]
    return []


def link(resource: Mapping[str, Any] | None, rel: str) -> str | None:
    """The href of ``rel`` (the first one for repeatable rels), or None."""
    for entry in _link_entries(resource, rel):
        href = entry.get("href")
        if isinstance(href, str) and href:
            return href
    return None


def links(resource: Mapping[str, Any] | None, rel: str) -> list[str]:
    """Every href of ``rel``; repeatable rels are arrays even with one element."""
    hrefs = (e.get("href") for e in _link_entries(resource, rel))
    return [h for h in hrefs if isinstance(h, str) and h]


def link_title(resource: Mapping[str, Any] | None, rel: str) -> str | None:
    for entry in _link_entries(resource, rel):
        title = entry.get("title")
        if isinstance(title, str):
            return title
    return None


def embedded(resource: Mapping[str, Any] | None, rel: str) -> dict[str, Any] | None:
    """The embedded resource under ``rel`` (the first one if it is an array), or None."""
    items = embedded_list(resource, rel)
    return items[0] if items else None


def embedded_list(resource: Mapping[str, Any] | None, rel: str) -> list[dict[str, Any]]:
    if not isinstance(resource, Mapping):
        return []
    emb = resource.get("_embedded")
    if not isinstance(emb, Mapping):
        return []
    value = emb.get(rel)
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict)]
    return []


# The poller resolves the same few hrefs (a conversation's, its messaging's) many times per
# event batch; ``urljoin`` was most of that. Long hrefs (hostile ones can be huge) are not kept.
# An entry takes about 540 bytes, and most hrefs are a message's own, never met again after its
# batch: 1,024 entries (0.55 MB) keep every active conversation's and the last second's messages'
# at hundreds of messages a second, and are full within the first minutes (4,096 took 2.2 MB in
# the worker and the poller each, still filling after 5,000 messages: memory that looked leaked).
_RESOLVED_KEPT = 1024
_RESOLVED_MAX_CHARS = 2048


def resolve(base: str, href: str) -> str:
    """Absolute URL for a (possibly relative) href served by ``base``; data: URIs unchanged."""
    if href.startswith("data:"):
        return href
    if len(href) + len(base) <= _RESOLVED_MAX_CHARS:
        return _resolve_kept(base, href)
    return _resolve(base, href)


@lru_cache(maxsize=_RESOLVED_KEPT)
def _resolve_kept(base: str, href: str) -> str:
    return _resolve(base, href)  # an InvalidLink is raised again each time, never kept


def _resolve(base: str, href: str) -> str:
    try:
        url = urljoin(base, href)
        urlsplit(url).port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise InvalidLink(f"unusable href: {exc}", url=href[:200]) from None
    return url


def with_query(href: str, params: Mapping[str, str | int | None]) -> str:
    """Add or replace query parameters on ``href``, keeping the ones it already carries.

    A value of None removes that parameter.
    """
    try:
        parts = urlsplit(href)
    except ValueError as exc:
        raise InvalidLink(f"unusable href: {exc}", url=href[:200]) from None
    existing = parse_qsl(parts.query, keep_blank_values=True)
    wanted = {k: v for k, v in params.items()}
    lowered = {k.lower() for k in wanted}
    kept = [(k, v) for k, v in existing if k.lower() not in lowered]
    added = [(k, str(v)) for k, v in wanted.items() if v is not None]
    return urlunsplit(parts._replace(query=urlencode(kept + added)))


def query_param(href: str, name: str) -> str | None:
    try:
        query = urlsplit(href).query
    except ValueError:
        return None
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key.lower() == name.lower():
            return value
    return None


def parse_ms_date(value: object) -> datetime | None:
    """``/Date(1364327898968)/`` or ``\\/Date(...)\\/`` (ms since epoch) as an aware UTC time."""
    if not isinstance(value, str):
        return None
    match = _DATE.match(value.strip())
    if not match:
        return None
    try:
        return _EPOCH + timedelta(milliseconds=int(match.group(1)))
    except (OverflowError, ValueError):  # beyond datetime's range, or absurdly many digits
        return None


def sip_uri_from_href(href: str | None) -> str | None:
    """``.../people/lenea@contoso.com`` or ``.../participants/lenea@contoso.com`` → SIP URI."""
    if not href:
        return None
    try:
        path = urlsplit(href).path.rstrip("/")
    except ValueError:
        return None
    segments = path.split("/")
    for marker in ("people", "participants"):
        if marker in segments[:-1]:
            index = len(segments) - 1 - segments[::-1].index(marker)
            if index + 1 < len(segments):
                name = unquote(segments[index + 1])
                if "@" in name:
                    return name if name.lower().startswith("sip:") else f"sip:{name}"
    return None
