"""A TCP proxy between the bridge and the simulator that makes a server's idle close cross the
client's next request, every time instead of once in a while.

When the simulator closes a kept-alive connection that carried a matching request (its idle
timeout ran out), the proxy keeps the client's side open, as if the FIN were still on its way.
The client's pool sees a live connection and writes its next request on it; only then does the
FIN arrive (the proxy closes the client's side, after reading what it sent, so a FIN and not a
reset), with no answer. The request never reaches the server. This is the race the client's own
checks cannot see: the close and the request cross on the wire.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from urllib.parse import urlsplit

REQUEST_LINE = re.compile(rb"^([A-Z]+) (\S+) HTTP/1\.[01]\r\n")


class ClosingProxy:
    """``start()`` binds an ephemeral port; set ``upstream`` (a base URL) before the first
    connection. ``hold`` picks the connections whose close is held back: those that carried a
    request whose request line it matches. ``crossed`` lists the request lines that met a held
    close (and never reached the server)."""

    def __init__(self, hold: re.Pattern[bytes]) -> None:
        self.hold = hold
        self.upstream = ""
        self.crossed: list[str] = []
        self.held = 0  # server closes held back
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []

    @property
    def url(self) -> str:
        assert self._listener is not None
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def start(self) -> ClosingProxy:
        listener = socket.create_server(("127.0.0.1", 0))
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            target = urlsplit(self.upstream)
            try:
                server = socket.create_connection((target.hostname, target.port), timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets += [client, server]
            _Pair(self, client, server).start()

    def _record(self, line: str) -> None:
        with self._lock:
            self.crossed.append(line)

    def _count_hold(self) -> None:
        with self._lock:
            self.held += 1


class _Pair:
    """One client connection and its connection to the server, pumped both ways."""

    def __init__(self, proxy: ClosingProxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self.matched = False  # carried a request ``hold`` matches
        self.server_closed = threading.Event()  # on a matched connection: held back

    def start(self) -> None:
        threading.Thread(target=self._upstream, daemon=True).start()
        threading.Thread(target=self._downstream, daemon=True).start()

    def _upstream(self) -> None:
        """Client → server; a request that finds the server gone meets the held-back FIN."""
        try:
            while True:
                data = self.client.recv(65536)
                if not data:
                    break
                line = REQUEST_LINE.match(data)
                if self.server_closed.is_set():
                    self.proxy._record(line.group(0).decode().strip() if line else repr(data[:60]))
                    self.client.shutdown(socket.SHUT_WR)  # the FIN, now, and no answer
                    while self.client.recv(65536):  # read what it sends: no reset
                        pass
                    break
                if line and self.proxy.hold.search(line.group(0)):
                    self.matched = True
                self.server.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                self.server.shutdown(socket.SHUT_WR)
            self._close_client_if_done()

    def _downstream(self) -> None:
        """Server → client; the server's close is passed on, or held back on a matched one."""
        try:
            while True:
                data = self.server.recv(65536)
                if not data:
                    break
                self.client.sendall(data)
        except OSError:
            pass
        if self.matched:
            self.proxy._count_hold()
            self.server_closed.set()  # the client learns of it with its next request
            return
        with contextlib.suppress(OSError):
            self.client.shutdown(socket.SHUT_WR)

    def _close_client_if_done(self) -> None:
        with contextlib.suppress(OSError):
            self.client.close()
        with contextlib.suppress(OSError):
            self.server.close()
