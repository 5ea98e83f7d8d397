"""A TCP proxy in front of a real redis-server that loses one answer the way a Redis killed at
the wrong moment does: the command reaches the server and runs, its reply never reaches the
client, every connection drops and, for a while, new connections are cut at once. With
``every=False`` only the one connection drops (a network blip), and Redis stays up.

``cut_when(predicate)`` arms it for the first client write that ``predicate`` accepts (the raw
RESP bytes of what redis-py sent in one go, e.g. a whole MULTI … EXEC).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable


class CuttingProxy:
    def __init__(self, upstream_port: int, down_s: float = 1.0, every: bool = True) -> None:
        self.upstream_port = upstream_port
        self.down_s = down_s
        self.every = every  # the server dies (every connection), or only this connection drops
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._predicate: Callable[[bytes], bool] | None = None
        self._down_until = 0.0
        self._lock = threading.Lock()
        self.cuts = 0
        self._open: set[socket.socket] = set()
        self._dying: set[socket.socket] = set()  # client sockets whose replies are dropped
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cut_when(self, predicate: Callable[[bytes], bool]) -> None:
        with self._lock:
            self._predicate = predicate

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if time.monotonic() < self._down_until:
                client.close()  # "connection closed by server", as while Redis restarts
                continue
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self._open.update((client, upstream))
            threading.Thread(target=self._pump_up, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump_down, args=(upstream, client), daemon=True).start()

    def _pump_up(self, client: socket.socket, upstream: socket.socket) -> None:
        try:
            while data := client.recv(65536):
                with self._lock:
                    cut = self._predicate is not None and self._predicate(data)
                    if cut:
                        self._predicate = None
                        self._dying.add(client)
                        if self.every:
                            self._down_until = float("inf")  # dying: no reply gets through
                        self.cuts += 1
                upstream.sendall(data)
                if cut:
                    time.sleep(0.2)  # the server runs it; its reply is never relayed
                    if self.every:
                        with self._lock:
                            every, self._open = list(self._open), set()
                        _close(*every)  # every connection drops, as when the server dies
                        self._down_until = time.monotonic() + self.down_s  # then it restarts
                    break
        except OSError:
            pass
        _close(client, upstream)

    def _pump_down(self, upstream: socket.socket, client: socket.socket) -> None:
        try:
            while data := upstream.recv(65536):
                if client in self._dying or time.monotonic() < self._down_until:
                    break  # no reply gets through once the server is dying
                client.sendall(data)
        except OSError:
            pass
        _close(client, upstream)


def _close(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
