"""A real HTTP server standing in for UCWA's send requests, and the session a worker finds.

Every POST is answered 201 with a Location, as ``startMessaging`` (an invitation) and
``sendMessage`` (a message) answer; the paths POSTed are kept in order.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import redis

from bridge.session.store import Session, SessionStore
from tests.http_threads import serving

APP = "/ucwa/oauth/v1/applications/1"


class Ucwa(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.paths: list[str] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def posts(self) -> int:
        return len(self.paths)


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        assert isinstance(self.server, Ucwa)
        self.server.paths.append(self.path)
        where = "messages/1" if "sendMessage" in self.path else "messagingInvitations/1"
        self.send_response(201)
        self.send_header("Location", f"{APP}/communication/{where}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def running_ucwa() -> Iterator[Ucwa]:
    with serving(Ucwa()) as server:
        yield server


def publish_session(client: redis.Redis, ucwa: Ucwa, account: str) -> None:
    """A session a live poller published for ``account``, as workers find it."""
    SessionStore(client, account).publish(
        Session(
            account=account,
            generation=1,
            base_url=ucwa.base,
            application_href=APP,
            token="token",
            token_expires_at=time.time() + 3600,
            token_url="",
            links={"startMessaging": f"{APP}/communication/startMessaging"},
        )
    )
    client.set(f"poller:lease:{account}", "poller-1", ex=60)
