"""The gunicorn worker of the api role: requests over the header limits get a problem+json.

gunicorn refuses an over-long request line (414) and too many or too large header fields (431)
before the app sees the request; this worker words those refusals like every other API error.
"""

from __future__ import annotations

import json
from typing import Any

from gunicorn import util
from gunicorn.http.errors import LimitRequestHeaders, LimitRequestLine
from gunicorn.workers.sync import SyncWorker

from bridge.api.problems import PROBLEM_MEDIA_TYPE, FieldError, Problem, ProblemType

REQUEST_LINE_TOO_LONG = ProblemType("request-line-too-long", 414, "Request line too long")
HEADERS_TOO_LARGE = ProblemType("headers-too-large", 431, "Request header fields too large")
_REASONS = {414: "URI Too Long", 431: "Request Header Fields Too Large"}


def limit_problem(error: BaseException) -> Problem | None:
    """The problem for a refusal of gunicorn's request limits; None for anything else."""
    if isinstance(error, LimitRequestLine):
        return Problem(
            REQUEST_LINE_TOO_LONG,
            f"the request line is too long: {error}",
            errors=[FieldError("request-line", "too long", "too_long")],
        )
    if isinstance(error, LimitRequestHeaders):
        return Problem(
            HEADERS_TOO_LARGE,
            f"too many or too large header fields: {error}",
            errors=[FieldError("headers", str(error), "too_large")],
        )
    return None


def problem_bytes(problem: Problem) -> bytes:
    """A complete HTTP/1.1 answer that closes the connection."""
    body = json.dumps(problem.body()).encode()
    status = problem.kind.status
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Bad Request')}\r\n"
        "Connection: close\r\n"
        f"Content-Type: {PROBLEM_MEDIA_TYPE}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class ProblemSyncWorker(SyncWorker):
    """gunicorn's sync worker, answering limit refusals as problem+json."""

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        problem = limit_problem(exc)
        if problem is None:
            super().handle_error(req, client, addr, exc)
            return
        ip = addr[0] if addr else ""
        self.log.warning("request refused from ip=%s: %s", ip, exc)
        try:
            util.write_nonblock(client, problem_bytes(problem))
        except OSError:
            self.log.debug("could not send the refusal")
