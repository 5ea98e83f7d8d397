"""The gunicorn worker of the api role: gevent, with header and body read deadlines, and every
refusal gunicorn writes itself (bad request line, bad header, limits, deadlines) as problem+json.

A greenlet per connection keeps clients that trickle headers or bodies from holding the workers
that /healthz and POST /messages need; the deadlines cut such clients off.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from typing import Any

import gevent
from gunicorn import util
from gunicorn.http import errors
from gunicorn.http.body import Body
from gunicorn.workers.ggevent import GeventWorker

from bridge.api.problems import INTERNAL, PROBLEM_MEDIA_TYPE, FieldError, Problem, ProblemType
from bridge.config.environment import read_variables
from bridge.config.values import ConfigError

REQUEST_LINE_TOO_LONG = ProblemType("request-line-too-long", 414, "Request line too long")
HEADERS_TOO_LARGE = ProblemType("headers-too-large", 431, "Request header fields too large")
REQUEST_TIMEOUT = ProblemType("request-timeout", 408, "Request timeout")
MALFORMED_REQUEST = ProblemType("malformed-request", 400, "Malformed request")
UNSUPPORTED_TRANSFER_CODING = ProblemType(
    "unsupported-transfer-coding", 501, "Transfer coding not implemented"
)
EXPECTATION_FAILED = ProblemType("expectation-failed", 417, "Expectation failed")
FORBIDDEN_PROXY = ProblemType("forbidden-proxy-request", 403, "Proxy request forbidden")
# The problems only this worker answers, for the OpenAPI document.
GUNICORN_PROBLEM_TYPES = (
    REQUEST_LINE_TOO_LONG,
    HEADERS_TOO_LARGE,
    REQUEST_TIMEOUT,
    MALFORMED_REQUEST,
    UNSUPPORTED_TRANSFER_CODING,
    EXPECTATION_FAILED,
    FORBIDDEN_PROXY,
)
_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    408: "Request Timeout",
    414: "URI Too Long",
    417: "Expectation Failed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
}


_SERVED = "bridge_requests_served"


class HeaderTimeout(Exception):
    """The client did not finish its request line and headers within the header deadline."""


class BodyTimeout(Exception):
    """The client did not finish its body within the body deadline."""


@dataclass(frozen=True)
class _Refusal:
    kind: ProblemType
    field: str
    code: str


# Most specific first: the first matching class wins. The field names the part of the request
# that was wrong; the code says how.
_REFUSALS: tuple[tuple[type[BaseException], _Refusal], ...] = (
    (HeaderTimeout, _Refusal(REQUEST_TIMEOUT, "headers", "timeout")),
    (BodyTimeout, _Refusal(REQUEST_TIMEOUT, "body", "timeout")),
    (errors.LimitRequestLine, _Refusal(REQUEST_LINE_TOO_LONG, "request-line", "too_long")),
    (errors.LimitRequestHeaders, _Refusal(HEADERS_TOO_LARGE, "headers", "too_large")),
    (errors.InvalidRequestMethod, _Refusal(MALFORMED_REQUEST, "method", "invalid")),
    (errors.InvalidHTTPVersion, _Refusal(MALFORMED_REQUEST, "http-version", "invalid")),
    (errors.InvalidRequestLine, _Refusal(MALFORMED_REQUEST, "request-line", "invalid")),
    (errors.InvalidHeaderName, _Refusal(MALFORMED_REQUEST, "header-name", "invalid")),
    (errors.ObsoleteFolding, _Refusal(MALFORMED_REQUEST, "headers", "obsolete_folding")),
    (errors.InvalidHeader, _Refusal(MALFORMED_REQUEST, "headers", "invalid")),
    (
        errors.UnsupportedTransferCoding,
        _Refusal(UNSUPPORTED_TRANSFER_CODING, "transfer-encoding", "unsupported"),
    ),
    (errors.InvalidChunkSize, _Refusal(MALFORMED_REQUEST, "body", "invalid_chunk_size")),
    (errors.ChunkMissingTerminator, _Refusal(MALFORMED_REQUEST, "body", "chunk_terminator")),
    (errors.InvalidChunkExtension, _Refusal(MALFORMED_REQUEST, "body", "invalid_chunk_extension")),
    (errors.ExpectationFailed, _Refusal(EXPECTATION_FAILED, "expect", "unsupported")),
    (errors.InvalidProxyLine, _Refusal(MALFORMED_REQUEST, "proxy-line", "invalid")),
    (errors.InvalidProxyHeader, _Refusal(MALFORMED_REQUEST, "proxy-header", "invalid")),
    (errors.ForbiddenProxyRequest, _Refusal(FORBIDDEN_PROXY, "proxy", "forbidden")),
    (errors.InvalidSchemeHeaders, _Refusal(MALFORMED_REQUEST, "headers", "conflicting_scheme")),
    (errors.InvalidH2CPreface, _Refusal(MALFORMED_REQUEST, "preface", "invalid")),
    (errors.ParseException, _Refusal(MALFORMED_REQUEST, "request", "invalid")),
)


def refusal_problem(error: BaseException) -> Problem | None:
    """The problem for a request gunicorn refused before the app ran; None for anything else."""
    for cls, refusal in _REFUSALS:
        if isinstance(error, cls):
            detail = str(error) or refusal.kind.title
            return Problem(
                refusal.kind, detail, errors=[FieldError(refusal.field, detail, refusal.code)]
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


class _Prefetched:
    """A body reader serving the bytes read under the body deadline, then the error that ended
    the read, or the rest (of a body larger than the app accepts, which it refuses anyway)."""

    def __init__(self, head: bytes, rest: Body, failure: Exception | None = None) -> None:
        self._head = io.BytesIO(head)
        self._rest = rest
        self._failure = failure

    def read(self, size: int) -> bytes:
        data = self._head.read(size)
        if len(data) < size:
            if data:
                return data
            if self._failure is not None:
                raise self._failure
            data = self._rest.read(size)
        return data


class ProblemGeventWorker(GeventWorker):
    """gunicorn's gevent worker with read deadlines and problem+json refusals."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    prefetch_limit: int = 64 * 1024

    def init_process(self) -> None:
        try:
            env = read_variables(
                os.environ, ("api_header_timeout_s", "api_body_timeout_s", "max_body_bytes")
            )
        except ConfigError:  # refused at start-up already (master and app); keep the defaults
            env = None
        if env is not None:
            self.header_timeout_s = env.api_header_timeout_s
            self.body_timeout_s = env.api_body_timeout_s
            self.prefetch_limit = env.max_body_bytes
        super().init_process()

    def timeout_ctx(self) -> Any:
        # Wraps the read of each request line and headers. The first request on a connection gets
        # a 408 at the deadline; a later one on a kept-alive connection is closed quietly after
        # the keep-alive idle time, as gunicorn does.
        if getattr(gevent.getcurrent(), _SERVED, 0):
            return gevent.Timeout(self.cfg.keepalive, False)
        return gevent.Timeout(self.header_timeout_s, HeaderTimeout(self.header_timeout_s))

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> Any:
        # Per connection, and a greenlet serves one connection: count on the greenlet.
        current = gevent.getcurrent()
        setattr(current, _SERVED, getattr(current, _SERVED, 0) + 1)
        self._prefetch_body(req, sock)
        return super().handle_request(listener_name, req, sock, addr)

    def _prefetch_body(self, req: Any, sock: Any) -> None:
        """Read the body (up to one byte past the app's limit) before the app runs, so a body
        that trickles in is cut off at the deadline rather than holding the request open."""
        if getattr(req, "_expected_100_continue", False):
            # The client waits for this before it sends the body; gunicorn would send it only
            # when the app starts, after the body has been read here.
            sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            req._expected_100_continue = False
        chunks: list[bytes] = []
        size = 0
        failure: Exception | None = None
        with gevent.Timeout(self.body_timeout_s, BodyTimeout(self.body_timeout_s)):
            try:
                while size <= self.prefetch_limit:
                    chunk = req.body.read(min(8192, self.prefetch_limit + 1 - size))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
            except (errors.ParseException, errors.NoMoreData) as exc:
                # A bad chunk or a body cut short: the app meets it where it would have and
                # answers it as it always has.
                failure = exc
        req.body = Body(_Prefetched(b"".join(chunks), req.body, failure))

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        problem = refusal_problem(exc)
        if problem is None:
            problem = Problem(INTERNAL, "the server could not handle the request")
            self.log.exception("error handling a request: %s", exc)
        else:
            ip = addr[0] if addr else ""
            self.log.warning("request refused from ip=%s: %s", ip, exc)
        try:
            util.write_nonblock(client, problem_bytes(problem))
        except OSError:
            self.log.debug("could not send the refusal")
