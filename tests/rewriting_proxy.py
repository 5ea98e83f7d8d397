"""A small HTTP proxy between the bridge and the simulator that makes UCWA misbehave in ways the
simulator itself never does: answers rewritten on their way back (hostile event payloads), and
requests carried out late (held before they reach the server, after the client gave up).

The simulator is started with the proxy's URL as its public URL, so every absolute link the
bridge follows leads back through the proxy.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

# (method, path with query, status, body) → the body the client gets instead.
Rewrite = Callable[[str, str, int, bytes], bytes]
# (method, path with query) → seconds to hold the request before the server sees it.
Hold = Callable[[str, str], float]

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "content-encoding",
    "host",
}


class RewritingProxy:
    """``start()`` binds an ephemeral port; set ``upstream`` before the first request."""

    def __init__(self) -> None:
        self.upstream = ""
        self.rewrite: Rewrite | None = None
        self.hold: Hold | None = None
        self.late: list[tuple[str, str, int]] = []  # held requests: method, path, final status
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> RewritingProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                held = proxy.hold(self.command, self.path) if proxy.hold else 0.0
                if held > 0:
                    time.sleep(held)  # the client times out meanwhile; the server acts late
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                headers["Accept-Encoding"] = "identity"
                answer = requests.request(
                    self.command,
                    proxy.upstream + self.path,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    timeout=600,
                )
                if held > 0:
                    with proxy._lock:
                        proxy.late.append((self.command, self.path, answer.status_code))
                content = answer.content
                if proxy.rewrite is not None:
                    content = proxy.rewrite(self.command, self.path, answer.status_code, content)
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in _HOP_BY_HOP:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(content)))
                self.send_header("Connection", "close")
                self.end_headers()
                with contextlib.suppress(OSError):  # the client may have given up
                    self.wfile.write(content)
                self.close_connection = True

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
