"""Counting proxies in front of Redis: each role's round trips and commands, apart.

A role (the API, the workers, the poller) is given its own proxy's URL instead of Redis's. The
proxy passes the bytes on unchanged and counts, per role, the commands it sees (RESP arrays from
the client) and the round trips: on each connection, a round trip starts when the client writes
with every command it sent answered (a pipeline or a MULTI … EXEC sent in one go is one, in
however many pieces it crosses the proxy; answers are counted as RESP replies). It costs the
benchmark process a thread per connection, so figures of speed are never taken through it.
"""

from __future__ import annotations

import array
import fcntl
import socket
import termios
import time
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
        self.in_multi = False  # a MULTI was sent and its EXEC (or DISCARD) not yet

    def feed(self, data: bytes) -> int:
        buffer = self._pending + data
        self._pending = b""
        at, done = 0, 0
        while at < len(buffer):
            if self._name and self._skip:
                if len(buffer) - at < self._skip:
                    self._pending = buffer[at:]
                    break
                name = buffer[at : at + self._skip - 2].decode("latin-1").upper()
                self.names[name] += 1
                if name == "MULTI":
                    self.in_multi = True
                elif name in ("EXEC", "DISCARD"):
                    self.in_multi = False
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

    @property
    def mid_command(self) -> bool:
        """The bytes fed so far end inside a command, or inside a transaction: a client sends
        MULTI … EXEC without waiting for the QUEUED answers in between."""
        return bool(self._pending or self._skip or self._items > 0 or self.in_multi)


class _ReplyCounter:
    """Counts the complete top-level replies in a server's byte stream (RESP2, and RESP3's
    types), however the bytes are split across reads."""

    def __init__(self) -> None:
        self._pending = b""
        self._skip = 0  # bytes of a bulk string (and its CRLF) still to pass over
        self._open: list[int] = []  # elements still to come, per aggregate being read

    def feed(self, data: bytes) -> int:
        buffer = self._pending + data
        self._pending = b""
        at, done = 0, 0
        while at < len(buffer):
            if self._skip:
                step = min(self._skip, len(buffer) - at)
                at += step
                self._skip -= step
                if not self._skip:
                    done += self._element()
                continue
            end = buffer.find(b"\r\n", at)
            if end < 0:
                self._pending = buffer[at:]
                break
            kind, body = buffer[at : at + 1], buffer[at + 1 : end]
            at = end + 2
            if kind in (b"$", b"=", b"!"):
                size = int(body)
                if size < 0:
                    done += self._element()
                else:
                    self._skip = size + 2
            elif kind in (b"*", b"~", b">", b"%", b"|"):
                size = int(body) * (2 if kind in (b"%", b"|") else 1)
                if size <= 0:
                    done += self._element()
                else:
                    self._open.append(size)
            else:  # a simple string, an error, an integer, a null…
                done += self._element()
        return done

    def _element(self) -> int:
        """One element ended: 1 when that ends a top-level reply."""
        while self._open:
            self._open[-1] -= 1
            if self._open[-1]:
                return 0
            self._open.pop()  # the aggregate ended: it is an element of the one around it
        return 1


@dataclass
class _Connection:
    outstanding: int = 0  # commands sent and not answered yet
    mid_command: bool = False  # the client's last bytes ended inside a command (or MULTI)
    answered_at: float = 0.0  # when the last answer that left nothing outstanding came
    # Bytes the client had written, unread by the proxy, when that answer came: written before
    # the client could see it, so they continue the same round trip.
    written_before_answer: int = 0


def _unread_bytes(sock: socket.socket) -> int:
    """Bytes waiting in ``sock``'s receive buffer."""
    count = array.array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, count)
    except OSError:
        return 0
    return count[0]


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

    def _opened(self, client: socket.socket, upstream: socket.socket) -> _Connection:
        return _Connection()

    def _requests(self, client: socket.socket, upstream: socket.socket, state: _Connection) -> None:
        """A round trip starts when the client writes after every command it sent was
        answered: not merely after some answer, as a pipeline written in pieces gets its first
        answers while its last pieces are on their way. Pieces the client wrote before the
        answer came (read by the proxy before it, or waiting in its buffer then) continue the
        round trip, and so does anything up to a transaction's EXEC. A plain pipeline whose
        client stalls between two pieces until Redis has answered the first is counted twice."""
        parser = _RequestCounter()
        while data := client.recv(65536):
            read_at = time.monotonic()
            commands = parser.feed(data)
            with self._lock:
                written_before = read_at < state.answered_at or state.written_before_answer > 0
                state.written_before_answer = max(0, state.written_before_answer - len(data))
                if state.outstanding == 0 and not state.mid_command and not written_before:
                    self.counts.round_trips += 1
                    if self.trace is not None:
                        self.trace.append((client.fileno(), []))
                state.outstanding += commands
                state.mid_command = parser.mid_command
                self.counts.commands += commands
                self.counts.names.update(parser.names)
                if self.trace is not None and self.trace:
                    self.trace[-1][1].extend(parser.names.elements())
            parser.names.clear()
            upstream.sendall(data)

    def _replies(self, upstream: socket.socket, client: socket.socket, state: _Connection) -> None:
        counter = _ReplyCounter()
        while data := upstream.recv(65536):
            replies = counter.feed(data)
            with self._lock:  # pushed messages (pub/sub) answer no command
                before = state.outstanding
                state.outstanding = max(0, before - replies)
                if before and not state.outstanding:
                    state.answered_at = time.monotonic()
                    state.written_before_answer = _unread_bytes(client)
            client.sendall(data)
