"""Decoding what redis-py returns (bytes, or str on a decoding client) into plain text.

One place for it, so modules stay typed without casts.
"""

from __future__ import annotations

from typing import Any


def text(value: Any) -> str:
    """A Redis reply as str; raises TypeError for anything that is not bytes or str."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, str):
        return value
    raise TypeError(f"expected a Redis string reply, got {type(value).__name__}")


def text_or_none(value: Any) -> str | None:
    return None if value is None else text(value)


def text_map(value: Any) -> dict[str, str]:
    """An HGETALL reply as a str → str dict."""
    return {text(k): text(v) for k, v in dict(value or {}).items()}
