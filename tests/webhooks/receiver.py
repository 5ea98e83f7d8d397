"""A real HTTP webhook receiver on an ephemeral port, for tests.

Records every request (method, path, headers, body) and answers from a script of replies:
status codes, extra headers such as Retry-After or Location, and delays before answering.
With ``keep_alive`` it speaks HTTP/1.1 persistent connections; ``connections`` counts the TCP
connections it accepted.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    reset: bool = False  # end the connection with a TCP reset instead of answering


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    at: float
    status: int = 0  # what the receiver answered (0 until the reply is chosen)


class WebhookReceiver:
    """Use as a context manager; ``script()`` queues replies, then ``default`` answers."""

    def __init__(
        self,
        default: Reply | None = None,
        port: int = 0,
        keep_alive: bool = False,
        host: str = "127.0.0.1",
    ) -> None:
        self.default = default or Reply()
        self.keep_alive = keep_alive
        self._connections = 0
        self._replies: deque[Reply] = deque()
        self._received: list[Received] = []
        self._lock = threading.Condition()
        ThreadingHTTPServer.allow_reuse_address = True
        self.host = host
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str = "/hook") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._replies.extend(replies)

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    @property
    def connections(self) -> int:
        """TCP connections accepted so far."""
        with self._lock:
            return self._connections

    def paths(self) -> list[str]:
        return [r.path for r in self.received]

    def wait_for(self, count: int, timeout_s: float = 5.0) -> list[Received]:
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while len(self._received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(left)
            return list(self._received)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _next_reply(self, request: Received) -> Reply:
        with self._lock:
            reply = self._replies.popleft() if self._replies else self.default
            self._received.append(replace(request, status=reply.status))
            self._lock.notify_all()
            return reply

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if receiver.keep_alive else "HTTP/1.0"

            def setup(self) -> None:
                super().setup()
                with receiver._lock:
                    receiver._connections += 1

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Received(
                    method=self.command,
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                    at=time.time(),
                )
                reply = receiver._next_reply(request)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if reply.reset:
                    # A zero linger time turns close() into an abortive close: RST, not FIN.
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.close_connection = True
                    self.connection.close()
                    return
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except OSError:
                    pass  # the client gave up (timeout): nothing to answer

            do_POST = _handle
            do_GET = _handle
            do_PUT = _handle

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler
