"""The WSGI application: faults, latency, authentication, routing and uniform error bodies.

Every UCWA response carries the server headers; no exception ever reaches the client as HTML.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.wrappers import Request, Response

from ucwasim import discovery, routes
from ucwasim.context import Ctx, error_response
from ucwasim.errors import UcwaError, Unauthorized, not_found
from ucwasim.faults import Fault, FaultBook
from ucwasim.requestlog import RequestLog
from ucwasim.switchboard import Switchboard
from ucwasim.world import World

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]

FORCE_RESYNC = "ucwasim.force_resync"  # environ flag set by a resync fault, read by get_events


class Dropped(Response):
    """Marker response: the socket was already shut down; nothing may be written."""


class UcwaApp:
    def __init__(
        self,
        world: World,
        board: Switchboard,
        faults: FaultBook,
        requests: RequestLog,
        control: Callable[[Request], Response],
        base_url: Callable[[], str],
    ) -> None:
        self.world = world
        self.board = board
        self.faults = faults
        self.requests = requests
        self.control = control
        self.base_url = base_url

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        if request.path == "/_sim" or request.path.startswith("/_sim/"):
            response = self.control(request)
        else:
            response = self.handle(request, environ)
            if isinstance(response, Dropped):
                return []
        return response(environ, start_response)

    def handle(self, request: Request, environ: dict[str, Any] | None = None) -> Response:
        """Serve one UCWA request; ``environ`` is None for the parts of a batch."""
        route = routes.resolve(request.method, request.path)
        kind = route.kind if route else "unknown"
        full_path = request.full_path.rstrip("?")
        entry = self.requests.start(request.method, full_path, kind)
        response: Response | None = None
        if environ is not None:
            token = self.world.used_token(request.headers.get("Authorization"))
            fault = self.faults.match(
                request.method,
                full_path,
                kind,
                # A 401 needs a token to refuse, and spares a fresh one: as a server that forgot
                # its tokens, the challenge → grant → retry cycle then gets through.
                lambda f: f.status != 401 or token is not None,
            )
            if fault is not None:
                if fault.status == 401 and token is not None:
                    self.world.revoke_token(token.value)
                response = self._apply_fault(fault, environ)
            if response is None and self.world.cfg.latency_ms:
                time.sleep(self.world.cfg.latency_ms / 1000)
        if response is None:
            response = self._dispatch(request, route, entry)
        if not isinstance(response, Dropped):
            response.headers["X-MS-Server-Fqdn"] = self.world.cfg.server_fqdn
            response.headers["X-MS-UcwaVersion"] = self.world.cfg.ucwa_version
            response.headers.setdefault("Cache-Control", "no-cache")
            entry["status"] = response.status_code
        else:
            entry["status"] = 0
        return response

    def _apply_fault(self, fault: Fault, environ: dict[str, Any]) -> Response | None:
        if fault.delay_ms:
            time.sleep(fault.delay_ms / 1000)
        if fault.drop_connection:
            sock = environ.get("werkzeug.socket")
            if isinstance(sock, socket.socket):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            return Dropped()
        if fault.resync:
            environ[FORCE_RESYNC] = True
        if fault.status is None:
            return None
        if fault.status == 401:
            return discovery.challenge(self.base_url(), self.world.cfg.domain)
        err = UcwaError(fault.status, fault.error_code(), fault.message, subcode=fault.subcode)
        if fault.retry_after is not None:
            err.headers["Retry-After"] = str(fault.retry_after)
        return error_response(err)

    def _dispatch(
        self, request: Request, route: routes.Route | None, entry: dict[str, Any]
    ) -> Response:
        ctx = Ctx(request, self.world, self.board, self.base_url())
        ctx.dispatch = lambda inner: self.handle(inner, None)
        try:
            if route is None:
                raise UcwaError(404, "NotFound", "The requested resource could not be found.")
            length = request.content_length or 0
            if length > self.world.cfg.max_body_bytes:
                raise UcwaError(413, "EntityTooLarge", "The request body is too large.")
            with self.world.lock:
                return self._run(ctx, route)
        except Unauthorized:
            return discovery.challenge(ctx.base_url, self.world.cfg.domain)
        except UcwaError as err:
            return error_response(err)
        except Exception:
            log.exception("request %s %s failed", request.method, request.path)
            return error_response(
                UcwaError(500, "ServiceFailure", "The server could not process the request.")
            )
        finally:
            if ctx.account is not None:
                entry["user"] = ctx.account.sip

    def _run(self, ctx: Ctx, route: routes.Route) -> Response:
        if route.scope in ("user", "app"):
            ctx.account = self.world.authenticate(ctx.request.headers.get("Authorization"))
        if route.scope == "app":
            self.board.sweep()
            assert route.app_id is not None
            ctx.app = self.world.find_application(ctx.account, route.app_id)  # type: ignore[arg-type]
            if route.kind == "unknown":
                raise not_found()
        if route.handler is None:
            raise UcwaError(
                405,
                "MethodNotAllowed",
                f"{ctx.request.method} is not allowed on this resource.",
                headers={"Allow": ", ".join(route.allowed)},
            )
        return routes.call(route, ctx)
