"""RFC 2397 data URIs as UCWA uses them for IM text: encode outgoing text/plain or text/html,
decode incoming ``plainMessage``/``htmlMessage``/invitation ``message`` hrefs, render HTML as text.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import quote, unquote_to_bytes

from bridge.ucwa.errors import InvalidDataUri

_PREFIX = re.compile(r"^\s*data\s*:\s*", re.IGNORECASE)
MAX_DATA_URI_CHARS = 1024 * 1024  # an IM is at most a few KB; refuse anything absurd
_MIME_TYPES = frozenset({"text/plain", "text/html"})


@dataclass(frozen=True)
class DataContent:
    """A decoded data URI: media type, the charset used, and the text."""

    mime: str
    charset: str
    text: str

    @property
    def is_html(self) -> bool:
        return self.mime == "text/html"

    def plain_text(self) -> str:
        return html_to_text(self.text) if self.is_html else self.text


def encode_data_uri(
    text: str, mime: str = "text/plain", *, use_base64: bool = True, charset: str = "utf-8"
) -> str:
    """``data:text/plain;charset=utf-8;base64,...`` or the URL-encoded form."""
    if mime not in _MIME_TYPES:
        raise ValueError(f"unsupported media type for a message: {mime!r}")
    raw = text.encode(charset)
    if use_base64:
        return f"data:{mime};charset={charset};base64,{base64.b64encode(raw).decode('ascii')}"
    return f"data:{mime};charset={charset},{quote(raw, safe='')}"


def _split(uri: str) -> tuple[str, str]:
    match = _PREFIX.match(uri)
    if not match:
        raise InvalidDataUri(f"not a data: URI (starts with {uri[:12]!r})")
    rest = uri[match.end() :]
    header, comma, payload = rest.partition(",")
    if not comma:
        raise InvalidDataUri("data: URI without a ',' before its payload")
    return "".join(header.split()), payload


def _charset(name: str | None) -> str:
    """The codec for ``name``; unknown names and non-text codecs (rot13, base64...) are utf-8."""
    if not name:
        return "utf-8"
    try:
        info = codecs.lookup(name.strip("\"'"))
    except (LookupError, ValueError):  # ValueError: a name with NUL in it
        return "utf-8"
    return info.name if getattr(info, "_is_text_encoding", True) else "utf-8"


def decode_data_uri(uri: str) -> DataContent:
    """Decode a data URI to text; strips one trailing CRLF the SfB client appends."""
    if not isinstance(uri, str):
        raise InvalidDataUri("data URI must be a string")
    if len(uri) > MAX_DATA_URI_CHARS:
        raise InvalidDataUri(f"data URI too large ({len(uri)} > {MAX_DATA_URI_CHARS} characters)")
    header, payload = _split(uri)
    params = [p for p in header.split(";")]
    mime = (params[0] or "text/plain").lower()
    charset_name: str | None = None
    is_base64 = False
    for param in params[1:]:
        key, _, value = param.partition("=")
        if key.lower() == "base64" and not value:
            is_base64 = True
        elif key.lower() == "charset":
            charset_name = value
    charset = _charset(charset_name)
    if is_base64:
        compact = "".join(payload.split()).replace("-", "+").replace("_", "/")
        compact += "=" * (-len(compact) % 4)
        try:
            raw = base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidDataUri("data URI has an invalid base64 payload") from exc
    else:
        # Form-URL encoding: '+' is a space, so replace it BEFORE percent-decoding,
        # otherwise an encoded plus (%2b) would turn into a space as well.
        cleaned = payload.lstrip().replace("\r", "").replace("\n", "")
        raw = unquote_to_bytes(cleaned.replace("+", " "))
    try:
        text = raw.decode(charset, errors="replace")
    except UnicodeError as exc:  # codecs such as idna raise whatever the error handler says
        raise InvalidDataUri(f"data URI payload is not valid {charset}") from exc
    return DataContent(mime=mime, charset=charset, text=strip_trailing_newline(text))


def strip_trailing_newline(text: str) -> str:
    if text.endswith("\r\n"):
        return text[:-2]
    if text.endswith("\n"):
        return text[:-1]
    return text


def is_data_uri(value: object) -> bool:
    return isinstance(value, str) and bool(_PREFIX.match(value))


_BLOCK = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6"})
_SKIP = frozenset({"script", "style", "head", "title"})


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skipping += 1
        elif tag == "br":
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in _BLOCK and tag != "br":
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """Plain-text rendering of an HTML message: tags dropped, entities unescaped."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts).replace("\xa0", " ")
    lines = [line.rstrip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
