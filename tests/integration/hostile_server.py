"""A real HTTP(S) server on an ephemeral port whose answers are raw bytes written by a script:
it can trickle, stall, send endless or huge bodies, redirect, or challenge. Records requests.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes


Writer = Callable[[socket.socket], None]


def reply(
    status: int, body: bytes | str | dict[str, object] = b"", headers: dict[str, str] | None = None
) -> Writer:
    """A complete, well-formed answer."""
    if isinstance(body, dict):
        body = json.dumps(body)
    data = body.encode() if isinstance(body, str) else body
    head = {
        "Content-Type": "application/json",
        "Content-Length": str(len(data)),
        "Connection": "close",
    }
    head.update(headers or {})
    lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in head.items()]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + data

    def write(conn: socket.socket) -> None:
        conn.sendall(raw)

    return write


def trickle(data: bytes, every_s: float, then: Iterator[bytes] | None = None) -> Writer:
    """Send ``data`` one byte at a time, then whatever ``then`` yields, forever if endless."""

    def write(conn: socket.socket) -> None:
        for byte in data:
            conn.sendall(bytes([byte]))
            time.sleep(every_s)
        for chunk in then or iter(()):
            conn.sendall(chunk)
            time.sleep(every_s)

    return write


def endless_body(chunk: bytes = b"x" * 65536) -> Writer:
    """A 200 without Content-Length whose body never ends (until the client hangs up)."""

    def write(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
        while True:
            conn.sendall(chunk)

    return write


class HostileServer:
    """Use as a context manager; ``routes`` maps a path (without query) to a writer."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        tls: ssl.SSLContext | None = None,
        default: Writer | None = None,
        greeting: Writer | None = None,
    ) -> None:
        self.greeting = greeting  # written at once on connect, before any request is read
        self.routes: dict[str, Writer] = {}
        self.default = default or reply(404, {"code": "NotFound"})
        self.seen: list[Seen] = []
        self._tls = tls
        self._sock = socket.create_server((host, 0))
        self.host, self.port = self._sock.getsockname()[:2]
        self._stop = threading.Event()

    @property
    def origin(self) -> str:
        return f"{'https' if self._tls else 'http'}://{self.host}:{self.port}"

    def url(self, path: str = "/") -> str:
        return self.origin + path

    def __enter__(self) -> HostileServer:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.greeting is not None:
                self.greeting(conn)
                return
            if self._tls is not None:
                conn = self._tls.wrap_socket(conn, server_side=True)
            request = self._read_request(conn)
            if request is None:
                return
            self.seen.append(request)
            self.routes.get(request.path.split("?")[0], self.default)(conn)
        except (OSError, ssl.SSLError):
            pass  # the client hung up, or refused our certificate
        finally:
            conn.close()

    @staticmethod
    def _read_request(conn: socket.socket) -> Seen | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        return Seen(method, path, headers, body)
