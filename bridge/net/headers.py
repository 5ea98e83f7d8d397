"""An answer's header block read without the ``email`` package, as ``http.client`` reads it.

``http.client`` hands every answer's header block to ``email.parser``: a feed parser, a policy
and a ``Message`` built line by line, about 30 µs for a UCWA answer or a webhook receiver's, the
largest single cost of a webhook delivery after its socket calls. ``parse_headers`` reads the
same lines with ``http.client``'s own reader (its line length and header count limits), and
when every line is a plain ``Name: value`` it builds the same ``HTTPMessage`` from them
directly, in a third of the time. Any other line (a folded one, a name with a character the
email parser does not take as a name, a stray CR, a last line without its line feed) sends the
whole block through the email parser as before. So every
answer reads as ``http.client`` reads it: ``tests/net/test_headers.py`` compares both on
generated header blocks.

``FastHeadersResponse`` is ``http.client``'s response with this parser: its ``begin`` is the
standard library's own code, run against a copy of ``http.client``'s globals in which
``parse_headers`` is this one (``begin`` looks the parser up by that name; the tests check that
it still does).
"""

from __future__ import annotations

import email.parser
import http.client
import re
from types import FunctionType
from typing import IO, Any

# One header line as the email parser reads it: a name of the characters it takes for one (its
# ``headerRE``: printable ASCII but the colon), the colon, the blanks it strips, and a value up
# to the line's end (the parser splits lines at CR, LF and CRLF only).
_FIELD = re.compile(rb"([!-9;-~]+):[ \t]*([^\r\n]*)\r?\n")
_END = (b"\r\n", b"\n", b"")


def parse_headers(
    fp: IO[bytes], _class: type[http.client.HTTPMessage] = http.client.HTTPMessage
) -> Any:
    """``http.client.parse_headers``, faster for a block of plain ``Name: value`` lines."""
    lines = http.client._read_headers(fp)  # type: ignore[attr-defined]
    fields = plain_fields(lines)
    if fields is None:
        block = b"".join(lines).decode("iso-8859-1")
        return email.parser.Parser(_class=_class).parsestr(block)
    message = _class()
    message._headers = fields  # type: ignore[attr-defined]
    message.set_payload("")  # as the email parser leaves a block with nothing after it
    return message


class FastHeadersResponse(http.client.HTTPResponse):
    """``http.client.HTTPResponse`` reading its headers with ``parse_headers``."""

    begin = FunctionType(
        http.client.HTTPResponse.begin.__code__,
        {**vars(http.client), "parse_headers": parse_headers},
        "begin",
        http.client.HTTPResponse.begin.__defaults__,
        http.client.HTTPResponse.begin.__closure__,
    )


def plain_fields(lines: list[bytes]) -> list[tuple[str, str]] | None:
    """The header lines (up to the blank line) as (name, value) pairs, or None when one of them
    is not a plain ``Name: value`` line."""
    fields: list[tuple[str, str]] = []
    for line in lines:
        if line in _END:
            break
        found = _FIELD.fullmatch(line)
        if found is None:
            return None
        name, value = found.groups()
        fields.append((name.decode("iso-8859-1"), value.decode("iso-8859-1")))
    return fields
