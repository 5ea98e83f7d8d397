"""The in-process entry point: builds the state, serves it over HTTP in background threads.

``Simulator(SimConfig(...)).start()`` returns once the socket listens; ``stop()`` frees it.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from ucwasim.config import SimConfig
from ucwasim.control import ControlApi
from ucwasim.discovery import root_url
from ucwasim.faults import FaultBook
from ucwasim.requestlog import RequestLog
from ucwasim.scheduler import Scheduler
from ucwasim.server import UcwaApp
from ucwasim.switchboard import Switchboard
from ucwasim.world import World


class _QuietHandler(WSGIRequestHandler):
    # HTTP/1.1 keeps connections alive; every response carries a Content-Length.
    protocol_version = "HTTP/1.1"

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    def log_error(self, format: str, *args: Any) -> None:
        logging.getLogger("ucwasim.http").debug(format, *args)


class Simulator:
    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.scheduler = Scheduler()
        self.world = World(self.config, self.scheduler)
        self.board = Switchboard(self.world)
        self.faults = FaultBook()
        self.requests = RequestLog()
        self.control = ControlApi(self.world, self.board, self.faults, self.requests)
        self.app = UcwaApp(
            self.world, self.board, self.faults, self.requests, self.control, self._base
        )
        self._server: BaseWSGIServer | None = None
        self._public_url: str | None = None
        self._thread: threading.Thread | None = None

    def _base(self) -> str:
        return self.base_url

    def start(
        self, host: str = "127.0.0.1", port: int = 0, public_url: str | None = None
    ) -> Simulator:
        """Listen on ``host:port``. Absolute links use ``public_url`` when given (e.g. the
        service name a container network resolves), else the bound address."""
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        self._public_url = public_url.rstrip("/") if public_url else None
        server = make_server(host, port, self.app, threaded=True, request_handler=_QuietHandler)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="ucwasim-http",
            daemon=True,
        )
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the simulator is not running")
        return int(self._server.server_port)

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the simulator is not running")
        if self._public_url:
            return self._public_url
        host = self._server.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"  # a wildcard bind is reached locally unless told otherwise
        return f"http://{host}:{self.port}"

    @property
    def discovery_url(self) -> str:
        return root_url(self.base_url, self.config.domain)

    def reset(self) -> None:
        """Back to the configured users, no tokens, applications, faults or logged requests."""
        self.control.reset({})

    def stop(self) -> None:
        self.world.reset()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.scheduler.stop()
        self._server = None
        self._thread = None

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
