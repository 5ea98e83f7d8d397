"""Counting proxies in front of Redis: each role's round trips and commands, apart.

A role (the API, the workers, the poller) is given its own proxy's URL instead of Redis's. The
proxy passes the bytes on unchanged and counts, per role, the commands it sees (RESP arrays from
the client) and the round trips: on each connection, a round trip starts when the client writes
after the server has answered (a pipeline or a MULTI … EXEC sent in one go is one). It costs the
benchmark process a thread per connection, so figures of speed are never taken through it.
"""

from __future__ import annotations

import socket
from collections import Counter
from dataclasses import dataclass, field

from bench._tcp_relay import Relay


@dataclass
class Counts:
    round_trips: int = 0
    commands: int = 0
    names: Counter[str] = field(default_factory=Counter)  # commands by name


class _RequestCounter:
    """Counts the commands in a client's byte stream (RESP arrays of bulk strings, as redis-py
    sends them); bytes of a command split across reads are kept for the next read."""

    def __init__(self) -> None:
        self._pending = b""
        self._skip = 0  # bytes of a bulk string (and its CRLF) still to pass over
        self._items = 0  # bulk strings of the current command still to read
        self._name = False  # the next bulk string is the command's name
        self.names: Counter[str] = Counter()

    def feed(self, data: bytes) -> int:
        buffer = self._pending + data
        self._pending = b""
        at, done = 0, 0
        while at < len(buffer):
            if self._name and self._skip:
                if len(buffer) - at < self._skip:
                    self._pending = buffer[at:]
                    break
                self.names[buffer[at : at + self._skip - 2].decode("latin-1").upper()] += 1
                self._name = False
            if self._skip:
                step = min(self._skip, len(buffer) - at)
                at += step
                self._skip -= step
                continue
            end = buffer.find(b"\r\n", at)
            if end < 0:
                self._pending = buffer[at:]
                break
            line = buffer[at:end]
            at = end + 2
            if line[:1] == b"*":
                self._items = int(line[1:])
                self._name = self._items > 0
                if self._items <= 0:
                    done += 1
            elif line[:1] == b"$":
                self._skip = int(line[1:]) + 2
                self._items -= 1
                if self._items == 0:
                    done += 1
            else:  # an inline command (never sent by redis-py)
                done += 1
        return done


class CountingProxy(Relay):
    """One role's proxy; ``counts`` so far, ``reset()`` to start a window."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.counts = Counts()
        self.trace: list[tuple[int, list[str]]] | None = None  # (connection, names) per trip
        super().__init__(upstream_host, upstream_port)

    def reset(self) -> Counts:
        """The counts so far, and zero from now on."""
        with self._lock:
            counts, self.counts = self.counts, Counts()
        return counts

    def _opened(self, client: socket.socket, upstream: socket.socket) -> list[bool]:
        return [True]  # the server has answered since the client last wrote

    def _requests(
        self, client: socket.socket, upstream: socket.socket, answered: list[bool]
    ) -> None:
        parser = _RequestCounter()
        while data := client.recv(65536):
            commands = parser.feed(data)
            with self._lock:
                if answered[0]:
                    self.counts.round_trips += 1
                    answered[0] = False
                    if self.trace is not None:
                        self.trace.append((client.fileno(), []))
                self.counts.commands += commands
                self.counts.names.update(parser.names)
                if self.trace is not None and self.trace:
                    self.trace[-1][1].extend(parser.names.elements())
            parser.names.clear()
            upstream.sendall(data)

    def _replies(
        self, upstream: socket.socket, client: socket.socket, answered: list[bool]
    ) -> None:
        while data := upstream.recv(65536):
            with self._lock:
                answered[0] = True
            client.sendall(data)
