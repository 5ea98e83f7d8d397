"""A TCP relay on an ephemeral port in front of a server (Redis, in the benchmarks and tests).

Each accepted connection gets a connection to the server and two threads, one relaying each
way. Subclasses decide what crosses: ``_admit`` may refuse a connection, ``_opened`` keeps
per-connection state, ``_requests`` and ``_replies`` relay (and count, or drop) the bytes.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any


class Relay:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()

    # -- what subclasses change ----------------------------------------------------------------
    def _admit(self, client: socket.socket) -> bool:
        return True

    def _opened(self, client: socket.socket, upstream: socket.socket) -> Any:
        return None

    def _requests(self, client: socket.socket, upstream: socket.socket, state: Any) -> None:
        relay(client, upstream)

    def _replies(self, upstream: socket.socket, client: socket.socket, state: Any) -> None:
        relay(upstream, client)

    # -- the relay -----------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._admit(client):
                client.close()
                continue
            try:
                upstream = socket.create_connection(self._upstream)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            state = self._opened(client, upstream)
            for target, args in (
                (self._requests, (client, upstream, state)),
                (self._replies, (upstream, client, state)),
            ):
                threading.Thread(target=self._relaying, args=(target, *args), daemon=True).start()

    @staticmethod
    def _relaying(target: Any, source: socket.socket, sink: socket.socket, state: Any) -> None:
        try:
            target(source, sink, state)
        except OSError:
            pass
        finally:
            close(source, sink)


def relay(source: socket.socket, sink: socket.socket) -> None:
    while data := source.recv(65536):
        sink.sendall(data)


def close(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()
