"""Where caller input becomes Python values, for every blueprint of the API: the body within
its size limit, its JSON, the query parameters and the headers, each refused as a problem.

Werkzeug enforces ``MAX_CONTENT_LENGTH`` for bodies that declare their length but silently cuts
a chunked body at the limit; here that is a 413 as well. A body that cannot be read whole
(a bad chunk, a connection that ends early) is a 400. Text that cannot be encoded again (an
unpaired UTF-16 surrogate from a ``\\ud83d`` escape, bytes that are not UTF-8) is a 422 naming
the field, parameter or header, so nothing later has to expect it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote_to_bytes

from flask import request
from werkzeug.exceptions import RequestEntityTooLarge

from bridge.api.problems import (
    BAD_REQUEST,
    MALFORMED_JSON,
    UNSUPPORTED_MEDIA_TYPE,
    VALIDATION,
    FieldError,
    Problem,
)
from bridge.api.schemas import INVALID_CHARACTERS
from bridge.ucwa.text import may_carry_surrogates, repair, unpaired_surrogate

log = logging.getLogger(__name__)

JSON = "application/json"


def read_body(limit: int) -> bytes:
    """The request body; over ``limit`` bytes a 413, also without a Content-Length; a body
    that cannot be read whole (malformed chunks, a connection that ends early) a 400."""
    try:
        raw = request.get_data(cache=False)
        over = (
            request.content_length is None
            and len(raw) >= limit
            and request.environ["wsgi.input"].read(1)
        )
    except RequestEntityTooLarge:
        raise
    except Exception as exc:
        # The server's input stream raises its own errors (gunicorn: InvalidChunkSize,
        # ChunkMissingTerminator, NoMoreData), some of which werkzeug turns into
        # ClientDisconnected; whichever it is, the body cannot be read.
        log.info("unreadable request body", extra={"error": type(exc).__name__})
        raise _unreadable("the body is malformed or ended before it was complete") from None
    if over:
        raise RequestEntityTooLarge()
    if request.content_length is not None and len(raw) < request.content_length:
        raise _unreadable(
            f"the body ended after {len(raw)} of the {request.content_length} bytes announced"
        )
    return raw


def read_json(limit: int) -> Any:
    """The JSON value of the body: 415 for another Content-Type, 400 if it is not UTF-8 JSON,
    422 naming the field for a duplicate key or an unpaired surrogate (keys too)."""
    if request.mimetype != JSON:
        raise Problem(
            UNSUPPORTED_MEDIA_TYPE, f"Content-Type must be {JSON}", headers={"Accept-Post": JSON}
        )
    raw = read_body(limit)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Problem(MALFORMED_JSON, f"the body is not UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_object)
    except _DuplicateKey as exc:
        raise invalid_text(
            exc.path, "appears more than once in one object", "duplicate_key"
        ) from None
    except RecursionError:
        raise Problem(MALFORMED_JSON, "the body is nested too deeply") from None
    except ValueError as exc:  # also numbers past Python's digit limit
        raise Problem(MALFORMED_JSON, f"the body is not valid JSON: {exc}") from None
    if may_carry_surrogates(text):
        found = unpaired_surrogate(value)
        if found is not None:
            path, position = found
            raise invalid_text(path, _surrogate_message(position))
    return value


def check_request_text() -> None:
    """Every query parameter must be UTF-8 and every header encodable (a ``before_request``
    hook): a 422 naming the first that is not, before anything reads them."""
    for raw_pair in request.query_string.split(b"&"):
        raw_name, _, raw_value = raw_pair.partition(b"=")
        # Strict UTF-8 never yields a surrogate; werkzeug would keep such bytes as "%FF".
        name = _query_text(raw_name)
        if name is None or _query_text(raw_value) is None:
            shown = name if name is not None else _query_text(raw_name, "replace")
            raise invalid_text((shown or "query",), "is not UTF-8", kind="query parameter")
    # A real server hands headers over as ISO-8859-1, which cannot carry a surrogate; other
    # WSGI servers and test clients can, and a key or id must never fail to encode later.
    for header, value in request.headers.items():
        for text in (header, value):
            found = unpaired_surrogate(text)
            if found is not None:
                raise invalid_text((repair(header),), _surrogate_message(found[1]), kind="header")


def invalid_text(
    path: Sequence[str | int],
    message: str,
    code: str = INVALID_CHARACTERS,
    *,
    kind: str = "field",
) -> Problem:
    field = ".".join(str(part) for part in path) or "body"
    return Problem(
        VALIDATION, f"{kind} {field}: {message}", errors=[FieldError(field, message, code)]
    )


def _surrogate_message(position: int) -> str:
    return f"contains an unpaired UTF-16 surrogate at position {position}"


def _unreadable(detail: str) -> Problem:
    return Problem(
        BAD_REQUEST, detail, errors=[FieldError("body", "incomplete or malformed", "unreadable")]
    )


def _query_text(raw: bytes, errors: str = "strict") -> str | None:
    try:
        return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8", errors)
    except UnicodeDecodeError:
        return None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.path = (repair(key),)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Parsers disagree on which of two equal keys wins; a proxy that checked the other one
    # would have approved a different request.
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return value
