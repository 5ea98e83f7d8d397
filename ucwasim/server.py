"""The WSGI application: faults, latency, authentication, routing and uniform error bodies.

Every UCWA response carries the server headers; no exception ever reaches the client as HTML.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.wrappers import Request, Response

from ucwasim import discovery, iis, routes
from ucwasim.context import Ctx, error_response
from ucwasim.errors import UcwaError, Unauthorized, not_found
from ucwasim.faults import Fault, FaultBook
from ucwasim.httpserver import ABORT, CONNECTION
from ucwasim.requestlog import RequestLog
from ucwasim.switchboard import Switchboard
from ucwasim.world import World

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]

FORCE_RESYNC = "ucwasim.force_resync"  # environ flag set by a resync fault, read by get_events

# Resources whose answers are not UCWA JSON, so content negotiation leaves them alone.
_NOT_NEGOTIATED = ("token", "xframe", "batch", "photo")


class Dropped(Response):
    """Marker response: the connection ends without an answer (``environ[ABORT]`` says how)."""


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
            if self.world.cfg.gzip and iis.accepts_gzip(request):
                iis.compress(response)
        iis.set_reason_phrase(response)
        return response(environ, start_response)

    def handle(self, request: Request, environ: dict[str, Any] | None = None) -> Response:
        """Serve one UCWA request; ``environ`` is None for the parts of a batch."""
        route = routes.resolve(request.method, request.path)
        kind = route.kind if route else "unknown"
        full_path = request.full_path.rstrip("?")
        conn = environ.get(CONNECTION) if environ is not None else None
        entry = self.requests.start(
            request.method, full_path, kind, connection=conn.number if conn else None
        )
        response: Response | None = None
        fault: Fault | None = None
        if environ is not None:
            token = self.world.used_token(request.headers.get("Authorization"))
            fault = self.faults.match(
                request.method,
                full_path,
                kind,
                # A 401 needs a token to refuse, and spares a fresh one: as a server that forgot
                # its tokens, the challenge → grant → retry cycle then gets through.
                lambda f: f.status != 401 or token is not None,
                reused=bool(conn and conn.reused),
            )
            if fault is not None:
                if fault.status == 401 and token is not None:
                    self.world.revoke_token(token.value)
                response = self._apply_fault(fault, environ)
            if response is None and self.world.cfg.latency_ms:
                time.sleep(self.world.cfg.latency_ms / 1000)
        if response is None:
            response = self._dispatch(request, route, entry)
            if environ is not None and fault is not None and fault.after_processing:
                # Carried out, then the connection ends: the client cannot tell whether it was.
                environ[ABORT] = fault.abort
                response = Dropped()
        if not isinstance(response, Dropped):
            iis.label_json(response, request)
            response.headers["X-MS-Server-Fqdn"] = self.world.cfg.server_fqdn
            response.headers["X-MS-UcwaVersion"] = self.world.cfg.ucwa_version
            response.headers.setdefault("Cache-Control", "no-cache")
            entry["status"] = response.status_code
            # How long the server took, latency and faults' delays included: what a client's
            # round trip adds to it is the network and the client's own time.
            entry["ms"] = round((time.time() - entry["time"]) * 1000, 3)
        else:
            entry["status"] = 0
        return response

    def _apply_fault(self, fault: Fault, environ: dict[str, Any]) -> Response | None:
        if fault.delay_ms:
            time.sleep(fault.delay_ms / 1000)
        if fault.abort and not fault.after_processing:
            environ[ABORT] = fault.abort
            return Dropped()
        if fault.resync:
            environ[FORCE_RESYNC] = True
        if fault.status is None:
            return None
        if fault.status == 401:
            return self._challenge()
        err = UcwaError(fault.status, fault.error_code(), fault.message, subcode=fault.subcode)
        if fault.retry_after is not None:
            err.headers["Retry-After"] = str(fault.retry_after)
        if fault.diagnostics:
            err.headers["X-Ms-diagnostics"] = fault.diagnostics
        return error_response(err)

    def _challenge(self) -> Response:
        return discovery.challenge(
            self.base_url(), self.world.cfg.domain, self.world.cfg.server_fqdn
        )

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
            return self._challenge()
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
        # The token is checked before anything else, the method included: on a real server
        # the authentication module answers 401 before UCWA looks at the request.
        if route.scope in ("user", "app"):
            ctx.account = self.world.authenticate(ctx.request.headers.get("Authorization"))
        if route.kind not in _NOT_NEGOTIATED:
            iis.require_json(ctx.request)
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
