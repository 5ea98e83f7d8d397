"""The /_sim/ control API: script simulated users, inject faults, expire things, read the log.

JSON in and out, no authentication; errors are ``{"error": message}`` with a 4xx status.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from werkzeug.wrappers import Request, Response

from ucwasim.config import BEHAVIOURS, SimUser
from ucwasim.datauri import Content
from ucwasim.errors import ConfigError, ControlError
from ucwasim.faults import FaultBook
from ucwasim.httpserver import ConnectionStats
from ucwasim.model import Account
from ucwasim.requestlog import RequestLog
from ucwasim.switchboard import Switchboard
from ucwasim.world import World, app_expired, app_not_found

Action = Callable[..., Any]


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


class ControlApi:
    def __init__(
        self,
        world: World,
        board: Switchboard,
        faults: FaultBook,
        requests: RequestLog,
        connections: ConnectionStats | None = None,
        on_idle_timeout: Callable[[float], None] | None = None,
    ) -> None:
        self.world = world
        self.board = board
        self.faults = faults
        self.requests = requests
        self.connections = connections or ConnectionStats()
        self.on_idle_timeout = on_idle_timeout
        self.routes: list[tuple[str, re.Pattern[str], Action]] = [
            ("GET", re.compile(r"^/_sim/users$"), self.list_users),
            ("POST", re.compile(r"^/_sim/users$"), self.add_user),
            ("PATCH", re.compile(r"^/_sim/users/([^/]+)$"), self.patch_user),
            ("GET", re.compile(r"^/_sim/users/([^/]+)/messages$"), self.inbox),
            ("POST", re.compile(r"^/_sim/users/([^/]+)/messages$"), self.send),
            ("GET", re.compile(r"^/_sim/users/([^/]+)/sent$"), self.sent),
            ("POST", re.compile(r"^/_sim/users/([^/]+)/typing$"), self.typing),
            ("POST", re.compile(r"^/_sim/users/([^/]+)/leave$"), self.leave),
            ("POST", re.compile(r"^/_sim/users/([^/]+)/stop$"), self.stop),
            ("GET", re.compile(r"^/_sim/faults$"), lambda b: self.faults.list()),
            ("POST", re.compile(r"^/_sim/faults$"), self.add_fault),
            ("DELETE", re.compile(r"^/_sim/faults$"), self.clear_faults),
            ("DELETE", re.compile(r"^/_sim/faults/([^/]+)$"), self.remove_fault),
            ("POST", re.compile(r"^/_sim/expire$"), self.expire),
            ("GET", re.compile(r"^/_sim/requests$"), lambda b: self.requests.snapshot()),
            ("DELETE", re.compile(r"^/_sim/requests$"), self.clear_requests),
            ("POST", re.compile(r"^/_sim/reset$"), self.reset),
            ("GET", re.compile(r"^/_sim/http$"), self.http),
            ("PATCH", re.compile(r"^/_sim/http$"), self.patch_http),
        ]

    def __call__(self, request: Request) -> Response:
        path = request.path.rstrip("/")
        known_path = False
        for method, pattern, action in self.routes:
            match = pattern.match(path)
            if not match:
                continue
            known_path = True
            if method != request.method:
                continue
            try:
                body = self._body(request)
                args = [unquote(g) for g in match.groups()]
                with self.world.lock:
                    result = action(body, *args)
            except ControlError as err:
                return _json({"error": err.message}, err.status)
            except ConfigError as err:
                return _json({"error": str(err)}, 400)
            if isinstance(result, Response):
                return result
            status = 201 if method == "POST" and path != "/_sim/reset" else 200
            return _json(result, status)
        if known_path:
            return _json({"error": f"{request.method} is not allowed here"}, 405)
        return _json({"error": "unknown control endpoint"}, 404)

    @staticmethod
    def _body(request: Request) -> dict[str, Any]:
        raw = request.get_data()
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise ControlError(400, "the body must be JSON") from exc
        if not isinstance(body, dict):
            raise ControlError(400, "the body must be a JSON object")
        return body

    def _account(self, sip: str) -> Account:
        account = self.world.account(sip)
        if account is None:
            raise ControlError(404, f"no such user {sip}")
        return account

    def _describe(self, account: Account) -> dict[str, Any]:
        return {
            "sip": account.sip,
            "name": account.name,
            "behaviour": account.user.behaviour,
            "applications": [
                {
                    "href": app.href,
                    "available": app.available,
                    "conversations": len(app.conversations),
                }
                for app in self.world.applications_of(account)
            ],
        }

    # -- users ---------------------------------------------------------------------------------

    def list_users(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        return [self._describe(a) for a in self.world.accounts.values()]

    def add_user(self, body: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(body.get("sip"), str) or not isinstance(body.get("password"), str):
            raise ControlError(400, "sip and password are required strings")
        user = SimUser(
            body["sip"],
            body["password"],
            name=str(body.get("name") or ""),
            behaviour=str(body.get("behaviour") or "accept"),
        )
        if self.world.account(user.sip) is not None:
            raise ControlError(409, f"{user.sip} already exists")
        return self._describe(self.world.add_account(user))

    def patch_user(self, body: dict[str, Any], sip: str) -> dict[str, Any]:
        account = self._account(sip)
        if "behaviour" in body:
            if body["behaviour"] not in BEHAVIOURS:
                raise ControlError(400, f"behaviour must be one of {', '.join(BEHAVIOURS)}")
            account.user.behaviour = body["behaviour"]
        if isinstance(body.get("password"), str):
            account.user.password = body["password"]
        if isinstance(body.get("name"), str) and body["name"]:
            account.user.name = body["name"]
        return self._describe(account)

    def inbox(self, body: dict[str, Any], sip: str) -> list[dict[str, Any]]:
        return list(self._account(sip).inbox)

    def sent(self, body: dict[str, Any], sip: str) -> list[dict[str, Any]]:
        return list(self._account(sip).sent)

    def send(self, body: dict[str, Any], sip: str) -> dict[str, Any]:
        bot = self._account(sip)
        to = self._account(str(body.get("to") or ""))
        text, markup = body.get("text"), body.get("html")
        if isinstance(markup, str) and markup:
            content = Content.from_html(markup)
        elif isinstance(text, str) and text:
            content = Content.plain(text)
        else:
            raise ControlError(400, "text or html is required")
        return dict(self.board.bot_sends(bot, to, content))

    def _peer_conversation(self, body: dict[str, Any], sip: str, key: str) -> Any:
        bot = self._account(sip)
        peer = self._account(str(body.get(key) or body.get("to") or body.get("peer") or ""))
        conv = self.board.bot_conversation(bot, peer)
        if conv is None:
            raise ControlError(404, f"{bot.sip} has no conversation with {peer.sip}")
        return conv

    def typing(self, body: dict[str, Any], sip: str) -> dict[str, Any]:
        conv = self._peer_conversation(body, sip, "to")
        self.board.typing(conv)
        return {"conversation": conv.id}

    def leave(self, body: dict[str, Any], sip: str) -> dict[str, Any]:
        conv = self._peer_conversation(body, sip, "peer")
        self.board.remote_leaves(conv)
        return {"conversation": conv.id}

    def stop(self, body: dict[str, Any], sip: str) -> dict[str, Any]:
        conv = self._peer_conversation(body, sip, "peer")
        if conv.messaging_state != "Connected":
            raise ControlError(409, "messaging is not connected")
        self.board.remote_stops_messaging(conv)
        return {"conversation": conv.id}

    # -- faults, expiry, log, reset ---------------------------------------------------------------

    def add_fault(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.faults.add(body).describe()

    def clear_faults(self, body: dict[str, Any]) -> dict[str, Any]:
        self.faults.clear()
        return {"deleted": "all"}

    def remove_fault(self, body: dict[str, Any], fault_id: str) -> dict[str, Any]:
        if not self.faults.remove(fault_id):
            raise ControlError(404, f"no fault {fault_id}")
        return {"deleted": fault_id}

    def expire(self, body: dict[str, Any]) -> dict[str, Any]:
        account = self._account(str(body.get("user") or ""))
        what = body.get("what")
        apps = self.world.applications_of(account)
        if what == "token":
            return {"expired": self.world.expire_tokens(account)}
        if what == "application":
            error = app_expired() if body.get("status") == 410 else app_not_found()
            for app in apps:
                self.board.remove_application(app, error)
            return {"expired": len(apps)}
        if what == "event_channel":
            for app in apps:
                self.board.resume(app)
            return {"expired": len(apps)}
        raise ControlError(400, "what must be token, application or event_channel")

    def clear_requests(self, body: dict[str, Any]) -> dict[str, Any]:
        self.requests.clear()
        return {"cleared": True}

    def reset(self, body: dict[str, Any]) -> dict[str, Any]:
        self.world.reset()
        self.faults.clear()
        self.requests.clear()
        self.connections.clear()
        return {"reset": True}

    # -- the HTTP layer ------------------------------------------------------------------------

    def http(self, body: dict[str, Any]) -> dict[str, Any]:
        cfg = self.world.cfg
        return {
            **self.connections.snapshot(),
            "idle_timeout": cfg.http_idle_timeout,
            "gzip": cfg.gzip,
        }

    def patch_http(self, body: dict[str, Any]) -> dict[str, Any]:
        cfg = self.world.cfg
        if "gzip" in body:
            if not isinstance(body["gzip"], bool):
                raise ControlError(400, "gzip must be true or false")
            cfg.gzip = body["gzip"]
        if "idle_timeout" in body:
            value = body["idle_timeout"]
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ControlError(400, "idle_timeout must be a positive number of seconds")
            cfg.http_idle_timeout = float(value)
            if self.on_idle_timeout is not None:
                self.on_idle_timeout(float(value))
        return self.http({})
