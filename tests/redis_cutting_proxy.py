"""A TCP proxy in front of a real redis-server that loses one answer the way a Redis killed at
the wrong moment does: the command reaches the server and runs, its reply never reaches the
client, every connection drops and, for a while, new connections are cut at once. With
``every=False`` only the one connection drops (a network blip), and Redis stays up.

``cut_when(predicate)`` arms it for the first client write that ``predicate`` accepts (the raw
RESP bytes of what redis-py sent in one go, e.g. a whole MULTI … EXEC).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from bench._tcp_relay import Relay, close


class CuttingProxy(Relay):
    def __init__(self, upstream_port: int, down_s: float = 1.0, every: bool = True) -> None:
        self.down_s = down_s
        self.every = every  # the server dies (every connection), or only this connection drops
        self._predicate: Callable[[bytes], bool] | None = None
        self._down_until = 0.0
        self.cuts = 0
        self._open: set[socket.socket] = set()
        self._dying: set[socket.socket] = set()  # client sockets whose replies are dropped
        super().__init__("127.0.0.1", upstream_port)

    def cut_when(self, predicate: Callable[[bytes], bool]) -> None:
        with self._lock:
            self._predicate = predicate

    def _admit(self, client: socket.socket) -> bool:
        # refused: "connection closed by server", as while Redis restarts
        return time.monotonic() >= self._down_until

    def _opened(self, client: socket.socket, upstream: socket.socket) -> None:
        with self._lock:
            self._open.update((client, upstream))

    def _requests(self, client: socket.socket, upstream: socket.socket, state: None) -> None:
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
                    close(*every)  # every connection drops, as when the server dies
                    self._down_until = time.monotonic() + self.down_s  # then it restarts
                return

    def _replies(self, upstream: socket.socket, client: socket.socket, state: None) -> None:
        while data := upstream.recv(65536):
            if client in self._dying or time.monotonic() < self._down_until:
                return  # no reply gets through once the server is dying
            client.sendall(data)
