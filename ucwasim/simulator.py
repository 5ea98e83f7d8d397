"""The in-process entry point: builds the state, serves it over HTTP in background threads.

``Simulator(SimConfig(...)).start()`` returns once the socket listens; ``stop()`` frees it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from ucwasim import iis, routes
from ucwasim.config import SimConfig
from ucwasim.control import ControlApi
from ucwasim.discovery import root_url
from ucwasim.faults import FaultBook
from ucwasim.httpserver import ConnectionStats, HttpServer
from ucwasim.requestlog import RequestLog
from ucwasim.scheduler import Scheduler
from ucwasim.server import UcwaApp
from ucwasim.switchboard import Switchboard
from ucwasim.tls import TlsFiles, make_certificate
from ucwasim.world import World

_DISCOVERY_PATHS = ("/", routes.ROOT, routes.POOL2_ROOT)


def https_redirector(target: Callable[[], str]) -> Callable[..., Iterable[bytes]]:
    """The plain-http listener when TLS is on: autodiscovery answers with a redirect to the
    same URL over https ("Lync will always respond with a redirect to HTTPS", RootURL.md)."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        query = environ.get("QUERY_STRING") or ""
        if environ.get("REQUEST_METHOD") == "GET" and path.lower().rstrip("/") in (
            p.rstrip("/") for p in _DISCOVERY_PATHS
        ):
            location = target() + path + (f"?{query}" if query else "")
            start_response(iis.status_line(302), [("Location", location), ("Content-Length", "0")])
            return [b""]
        body = b"Only autodiscovery is served over plain http; use https."
        start_response(
            iis.status_line(404),
            [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
        )
        return [body]

    return app


class Simulator:
    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.scheduler = Scheduler()
        self.world = World(self.config, self.scheduler)
        self.board = Switchboard(self.world)
        self.faults = FaultBook()
        self.requests = RequestLog()
        self.connections = ConnectionStats()
        self.control = ControlApi(
            self.world,
            self.board,
            self.faults,
            self.requests,
            self.connections,
            self._set_idle_timeout,
        )
        self.app = UcwaApp(
            self.world, self.board, self.faults, self.requests, self.control, self._base
        )
        self._server: HttpServer | None = None
        self._redirector: HttpServer | None = None
        self._public_url: str | None = None
        self._tls: TlsFiles | None = None

    def _base(self) -> str:
        return self.base_url

    def start(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        public_url: str | None = None,
        *,
        tls: bool = False,
        ca_path: str | Path | None = None,
        http_port: int = 0,
    ) -> Simulator:
        """Listen on ``host:port``. Absolute links use ``public_url`` when given (e.g. the
        service name a container network resolves), else the bound address.

        With ``tls`` the simulator speaks https with a certificate from a fresh test CA, whose
        certificate is written to ``ca_path`` (see ``ca_path`` after start); plain http on
        ``http_port`` then only redirects autodiscovery to https.
        """
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        self._public_url = public_url.rstrip("/") if public_url else None
        adapter = None
        if tls:
            names = [host]
            if self._public_url:
                names.append(urlsplit(self._public_url).hostname or "")
            self._tls = make_certificate([n for n in names if n], ca_path)
            adapter = self._tls.server_adapter()
        idle = self.config.http_idle_timeout
        self._server = HttpServer(self.app, host, port, idle, self.connections, adapter)
        try:
            self._server.start_background()
            if tls:
                redirect = https_redirector(lambda: self.base_url)
                self._redirector = HttpServer(redirect, host, http_port, idle, ConnectionStats())
                self._redirector.start_background()
        except BaseException:
            self.stop()
            raise
        return self

    def _set_idle_timeout(self, seconds: float) -> None:
        if self._server is not None:
            self._server.set_idle_timeout(seconds)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the simulator is not running")
        return self._server.port

    @property
    def ca_path(self) -> Path | None:
        """The test CA's certificate (PEM) when serving https, else None."""
        return self._tls.ca_path if self._tls else None

    def _url(self, scheme: str, port: int) -> str:
        assert self._server is not None
        host = str(self._server.bind_addr[0])
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"  # a wildcard bind is reached locally unless told otherwise
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{port}"

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the simulator is not running")
        if self._public_url:
            return self._public_url
        return self._url("https" if self._tls else "http", self.port)

    @property
    def plain_url(self) -> str | None:
        """With TLS on: the plain-http address that redirects autodiscovery to https."""
        if self._redirector is None:
            return None
        return self._url("http", self._redirector.port)

    @property
    def discovery_url(self) -> str:
        return root_url(self.base_url, self.config.domain)

    def reset(self) -> None:
        """Back to the configured users, no tokens, applications, faults or logged requests."""
        self.control.reset({})

    def stop(self) -> None:
        self.world.reset()
        for server in (self._server, self._redirector):
            if server is not None:
                server.shutdown()
        self.scheduler.stop()
        self._server = None
        self._redirector = None
        if self._tls is not None:
            self._tls.remove()
            self._tls = None

    def __enter__(self) -> Simulator:
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
