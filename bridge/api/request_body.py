"""Reading a request body within the size limit, for every blueprint of the API.

Werkzeug enforces ``MAX_CONTENT_LENGTH`` for bodies that declare their length but silently cuts
a chunked body at the limit; here that is a 413 as well.
"""

from __future__ import annotations

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge


def read_body(limit: int) -> bytes:
    """The request body; over ``limit`` bytes a 413, also without a Content-Length."""
    raw = request.get_data(cache=False)
    if (
        request.content_length is None
        and len(raw) >= limit
        and request.environ["wsgi.input"].read(1)
    ):
        raise RequestEntityTooLarge()
    return raw
