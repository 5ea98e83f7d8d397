"""RFC 2397 data URIs as UCWA carries IM text: decode any form, encode the real server's form.

The server emits form-URL encoding with lower-case escapes (``Hi+Tosh%0d%0a``).
"""

from __future__ import annotations

import base64
import binascii
import html
import re
from dataclasses import dataclass
from urllib.parse import quote_plus, unquote_to_bytes

_DATA_URI = re.compile(r"^data:([^,;]+)((?:;[^,;]*)*),(.*)$", re.DOTALL)
_TAG = re.compile(r"<[^>]*>")
_BREAK = re.compile(r"<\s*(br|/p|/div)\b[^>]*>", re.IGNORECASE)


class DataUriError(ValueError):
    """The text is not a usable data URI."""


@dataclass(frozen=True)
class Content:
    """An IM body: always a plain rendering, plus the HTML when HTML was sent."""

    text: str
    html: str | None = None

    @classmethod
    def plain(cls, text: str) -> Content:
        return cls(text, None)

    @classmethod
    def from_html(cls, markup: str) -> Content:
        return cls(html_to_text(markup), markup)


def html_to_text(markup: str) -> str:
    return html.unescape(_TAG.sub("", _BREAK.sub("\n", markup))).strip()


def decode(uri: str) -> Content:
    match = _DATA_URI.match(uri.strip())
    if not match:
        raise DataUriError("not a data URI")
    mime = match.group(1).strip().lower()
    params = [p.strip() for p in match.group(2).split(";") if p.strip()]
    charset = "utf-8"
    is_base64 = False
    for param in params:
        if param.lower() == "base64":
            is_base64 = True
        elif param.lower().startswith("charset="):
            charset = param.split("=", 1)[1].strip().strip("'\"") or "utf-8"
    payload = match.group(3)
    try:
        if is_base64:
            raw = base64.b64decode(re.sub(r"\s+", "", payload), validate=True)
        else:
            raw = unquote_to_bytes(payload.replace("+", " "))
        text = raw.decode("utf-8" if charset.lower() in ("utf8", "utf-8") else charset)
    except (binascii.Error, LookupError, UnicodeDecodeError, ValueError) as exc:
        raise DataUriError(f"undecodable data URI payload: {exc}") from exc
    if mime == "text/plain":
        return Content.plain(text)
    if mime == "text/html":
        return Content.from_html(text)
    raise DataUriError(f"unsupported data URI type {mime}")


def _form_encode(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote_plus(text, safe=""))


def encode_plain(text: str) -> str:
    """What the server emits for a plain message: typed text ends with CRLF."""
    if not text.endswith("\r\n"):
        text += "\r\n"
    return "data:text/plain;charset=utf-8," + _form_encode(text)


def encode_html(markup: str) -> str:
    return "data:text/html;charset=utf-8," + _form_encode(markup)


def encode(content: Content, html_allowed: bool) -> tuple[str, str]:
    """(link rel, data URI) for a message as the receiving application sees it."""
    if content.html is not None and html_allowed:
        return "htmlMessage", encode_html(content.html)
    return "plainMessage", encode_plain(content.text)
