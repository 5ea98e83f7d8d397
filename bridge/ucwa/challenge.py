"""Tolerant parser for the ``WWW-Authenticate: MsRtcOAuth href=..., grant_type=...`` challenge,
whether sent as separate header values or folded into one comma-separated line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_SCHEME = re.compile(r"(?:^|[\s,])MsRtcOAuth(?=\s|$)", re.IGNORECASE)
MAX_CHALLENGE_CHARS = 8192  # a longer WWW-Authenticate is not a challenge we use
_PARAM = re.compile(r"\b(href|grant_type)\s*=\s*", re.IGNORECASE)


@dataclass(frozen=True)
class MsRtcOAuthChallenge:
    """Where to get a token (``href``) and which grants the server accepts."""

    href: str
    grant_types: tuple[str, ...]

    def allows(self, grant_type: str) -> bool:
        return grant_type in self.grant_types


def _value_at(text: str, pos: int, *, is_list: bool) -> str:
    if pos < len(text) and text[pos] in "\"'":
        quote = text[pos]
        end = text.find(quote, pos + 1)
        return text[pos + 1 : end if end >= 0 else len(text)]
    if not is_list:
        match = re.match(r"[^\s,]*", text[pos:])
        return match.group(0) if match else ""
    # Unquoted comma list: take items until one looks like the next param or scheme.
    items: list[str] = []
    for item in text[pos:].split(","):
        stripped = item.strip()
        if not stripped or "=" in stripped or " " in stripped:
            break
        items.append(stripped)
    return ",".join(items)


def parse_challenge(values: str | Iterable[str] | None) -> MsRtcOAuthChallenge | None:
    """Find the MsRtcOAuth challenge among WWW-Authenticate values; None if absent."""
    if values is None:
        return None
    text = values if isinstance(values, str) else ", ".join(values)
    if len(text) > MAX_CHALLENGE_CHARS:
        return None
    scheme = _SCHEME.search(text)
    if not scheme:
        return None
    rest = text[scheme.end() :]
    # Stop at the next auth scheme so a following Bearer challenge's params are not taken.
    nxt = re.search(r",\s*[A-Za-z][\w-]*\s+[\w-]+\s*=", rest)
    segment = rest[: nxt.start()] if nxt else rest
    href = ""
    grants: tuple[str, ...] = ()
    for match in _PARAM.finditer(segment):
        name = match.group(1).lower()
        if name == "href" and not href:
            href = _value_at(segment, match.end(), is_list=False).strip()
        elif name == "grant_type" and not grants:
            raw = _value_at(segment, match.end(), is_list=True)
            grants = tuple(g.strip() for g in raw.split(",") if g.strip())
    if not href:
        return None
    return MsRtcOAuthChallenge(href=href, grant_types=grants)
