"""The photo resource behind ``me``'s ``photo`` and a contact's ``contactPhoto`` links.

Headers as GetMyPhoto.md step 6 and MeDashboard.md describe them; every user has the same picture.
"""

from __future__ import annotations

import email.utils
import struct
import zlib

from werkzeug.wrappers import Response

from ucwasim.context import Ctx, empty
from ucwasim.errors import not_found


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


# A baseline JPEG of one grey pixel: one quantisation table, a one-symbol Huffman table each for
# DC and AC, and one 8x8 block whose DC difference is 0 followed by end-of-block.
PICTURE = b"".join(
    (
        b"\xff\xd8",
        _segment(0xDB, b"\x00" + b"\x01" * 64),
        _segment(0xC0, b"\x08\x00\x01\x00\x01\x01\x01\x11\x00"),
        _segment(0xC4, b"\x00\x01" + b"\x00" * 15 + b"\x00"),
        _segment(0xC4, b"\x10\x01" + b"\x00" * 15 + b"\x00"),
        _segment(0xDA, b"\x01\x01\x00\x00\x3f\x00"),
        b"\x3f\xff\xd9",
    )
)


def photo_etag(who: str) -> str:
    return str(zlib.crc32(who.lower().encode() + PICTURE))


def get_photo(ctx: Ctx, who: str) -> Response:
    """The user's picture as ``image/jpeg`` (GetMyPhoto.md step 6), with an ``Etag`` that a
    later ``If-None-Match`` turns into 304 Not Modified and an ``Expires`` that says how long it
    is current (MeDashboard.md, "Etag" and "Expires"). GetMyPhoto.md's trace shows ``Expires``
    equal to ``Date`` and ``Cache-Control: private``: both are sent so."""
    if ctx.world.account(who) is None:
        raise not_found("The user has no photo.")
    etag = photo_etag(who)
    headers = {
        "Etag": etag,
        "Expires": email.utils.formatdate(usegmt=True),
        "Cache-Control": "private",
    }
    wanted = ctx.request.headers.get("If-None-Match", "").split(",")
    if etag in (t.strip().strip('"') for t in wanted):
        return empty(304, headers)
    return Response(PICTURE, headers=headers, content_type="image/jpeg")
