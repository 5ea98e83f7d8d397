"""The HTTP/1.1 server under the simulator: cheroot with persistent connections, as IIS serves.

Counts accepted connections, hands each request its connection, and can abort one (FIN or RST).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import socket
import struct
import threading
from collections.abc import Callable, Iterable
from typing import Any

from cheroot import server as cheroot_server
from cheroot import wsgi
from cheroot.makefile import MakeFile

log = logging.getLogger("ucwasim.http")

CONNECTION = "ucwasim.connection"  # environ key: the ConnectionInfo of the request
ABORT = "ucwasim.abort"  # environ key set by the app: "drop" (FIN) or "reset" (RST), no answer

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class ConnectionInfo:
    """One accepted TCP connection: its number and how many requests it carried so far."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.requests = 0

    @property
    def reused(self) -> bool:
        """True from the second request on: the client kept the connection alive."""
        return self.requests > 1


class ConnectionStats:
    """What a pooled client did: connections accepted and requests served on them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self.accepted = 0
        self.requests = 0

    def accept(self) -> ConnectionInfo:
        with self._lock:
            self.accepted += 1
            return ConnectionInfo(next(self._numbers))

    def served(self, info: ConnectionInfo) -> None:
        with self._lock:
            self.requests += 1
            info.requests += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"connections_accepted": self.accepted, "requests": self.requests}

    def clear(self) -> None:
        with self._lock:
            self.accepted = 0
            self.requests = 0


class _Request(cheroot_server.HTTPRequest):
    def send_headers(self) -> None:
        # IIS names the kept-alive connection on every HTTP/1.1 answer (the traces in
        # CreateAnApplication.md show "Connection: Keep-Alive"); cheroot only does so for 1.0.
        keys = {key.lower() for key, _ in self.outheaders}
        status = int(self.status[:3])
        has_length = b"content-length" in keys or status in (204, 304) or status < 200
        if (
            not self.close_connection
            and b"connection" not in keys
            and has_length
            and status != 413
            and self.response_protocol == "HTTP/1.1"
            and self.server.can_add_keepalive_connection
        ):
            self.outheaders.append((b"Connection", b"Keep-Alive"))
        super().send_headers()


class _Connection(cheroot_server.HTTPConnection):
    RequestHandlerClass = _Request

    def __init__(self, server: Any, sock: Any, makefile: Any = MakeFile) -> None:
        super().__init__(server, sock, makefile)
        self.info: ConnectionInfo = server.connection_stats.accept()

    def abort(self, how: str) -> None:
        """End the connection now without an answer: ``drop`` sends FIN, ``reset`` sends RST."""
        sock = self.socket
        with contextlib.suppress(OSError):
            if how == "reset":
                # A zero linger time turns close() into an abortive close: RST, not FIN.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                sock.shutdown(socket.SHUT_RDWR)
        # The file objects hold the descriptor open too: close them all so it goes now.
        for stream in (self.rfile, self.wfile, sock):
            with contextlib.suppress(OSError, ValueError):
                stream.close()
        self.linger = True  # the socket is gone: cheroot must not shut it down again


class _Gateway(wsgi.Gateway_10):
    def __init__(self, req: Any) -> None:
        super().__init__(req)
        info = req.conn.info
        req.server.connection_stats.served(info)
        self.env[CONNECTION] = info

    def respond(self) -> None:
        response = self.req.server.wsgi_app(self.env, self.start_response)
        how = self.env.get(ABORT)
        if how:
            # Nothing may reach the client: mark the headers as sent and end the connection.
            self.req.sent_headers = True
            self.req.close_connection = True
            self.req.conn.abort(how)
            if hasattr(response, "close"):
                response.close()
            return
        try:
            for chunk in filter(None, response):
                self.write(chunk)
        finally:
            self.req.ensure_headers_sent()
            if hasattr(response, "close"):
                response.close()


class HttpServer(wsgi.Server):
    """A cheroot WSGI server whose worker pool grows with the parked long polls.

    ``idle_timeout`` closes a kept-alive connection that carried no request for that long
    (IIS's connection timeout); it is also the socket timeout while reading a request.
    """

    ConnectionClass = _Connection

    def __init__(
        self,
        app: WsgiApp,
        host: str,
        port: int,
        idle_timeout: float,
        stats: ConnectionStats,
        ssl_adapter: Any = None,
    ) -> None:
        super().__init__((host, port), app, numthreads=8)
        self.gateway = _Gateway
        self.connection_stats = stats
        self.set_idle_timeout(idle_timeout)
        self.keep_alive_conn_limit = 1_000_000
        self.expiration_interval = 0.1  # how often idle connections are checked for expiry
        self.server_name = "ucwasim"
        if ssl_adapter is not None:
            self.ssl_adapter = ssl_adapter
        self._thread: threading.Thread | None = None

    def process_conn(self, conn: Any) -> None:
        # Every parked P-GET holds a worker; grow rather than queue a request behind them.
        if self.requests.idle == 0:
            self.requests.grow(1)
        super().process_conn(conn)

    def error_log(self, msg: str = "", level: int = 20, traceback: bool = False) -> None:
        log.debug("%s", msg, exc_info=traceback)

    @property
    def port(self) -> int:
        return int(self.bind_addr[1])

    def start_background(self) -> HttpServer:
        """Bind, then serve from a daemon thread."""
        self.prepare()
        self._thread = threading.Thread(target=self.serve, name="ucwasim-http", daemon=True)
        self._thread.start()
        return self

    def set_idle_timeout(self, seconds: float) -> None:
        # whole seconds stay an int, so the Keep-Alive header reads "timeout=120"
        self.timeout = int(seconds) if seconds == int(seconds) else seconds

    def shutdown(self) -> None:
        self.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
