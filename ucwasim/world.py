"""The simulator's shared state: accounts, tokens, applications and tombstones, under one lock.

One re-entrant lock guards everything; long polls wait on a condition built on it.
"""

from __future__ import annotations

import copy
import secrets
import threading
import time

from ucwasim.channel import EventChannel, Params
from ucwasim.config import SimConfig, SimUser
from ucwasim.errors import UcwaError, Unauthorized
from ucwasim.model import APPLICATIONS_PATH, Account, Application, Token
from ucwasim.scheduler import Scheduler


def app_not_found() -> UcwaError:
    return UcwaError(
        404, "NotFound", "The application does not exist.", subcode="ApplicationNotFound"
    )


def app_expired() -> UcwaError:
    return UcwaError(
        410,
        "Gone",
        "The application expired because it was inactive.",
        subcode="InactiveApplicationExpired",
    )


class World:
    def __init__(self, cfg: SimConfig, scheduler: Scheduler) -> None:
        self.cfg = cfg
        self.scheduler = scheduler
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.accounts: dict[str, Account] = {}
        self.tokens: dict[str, Token] = {}
        self.apps: dict[str, Application] = {}
        self.tombstones: dict[str, UcwaError] = {}
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.scheduler.cancel_all()
            for app in self.apps.values():
                app.alive = False
                app.channel.close(app_not_found())
            self.accounts = {u.sip: Account(copy.copy(u)) for u in self.cfg.users}
            self.tokens = {}
            self.apps = {}
            self.tombstones = {}

    def scaled(self, seconds: float) -> float:
        return self.cfg.scaled(seconds)

    # -- accounts and tokens --------------------------------------------------------------

    def add_account(self, user: SimUser) -> Account:
        account = Account(user)
        self.accounts[user.sip] = account
        return account

    def account(self, sip: str) -> Account | None:
        key = sip.lower() if sip.lower().startswith("sip:") else "sip:" + sip.lower()
        return self.accounts.get(key)

    def issue_token(self, account: Account) -> Token:
        value = "cwt=" + secrets.token_urlsafe(48)
        token = Token(value, account.sip, time.monotonic() + self.scaled(self.cfg.token_lifetime))
        self.tokens[value] = token
        return token

    def authenticate(self, authorization: str | None) -> Account:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise Unauthorized()
        token = self.tokens.get(authorization[7:].strip())
        if token is None:
            raise Unauthorized()
        if token.expires_at <= time.monotonic():
            del self.tokens[token.value]
            raise Unauthorized()
        account = self.accounts.get(token.sip)
        if account is None:
            raise Unauthorized()
        token.uses += 1
        return account

    def used_token(self, authorization: str | None) -> Token | None:
        """The live token in ``authorization`` if it already authorised a request, else None."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        with self.lock:
            token = self.tokens.get(authorization[7:].strip())
            if token is None or token.uses == 0 or token.expires_at <= time.monotonic():
                return None
            return token

    def revoke_token(self, value: str) -> None:
        with self.lock:
            self.tokens.pop(value, None)

    def expire_tokens(self, account: Account) -> int:
        doomed = [t for t in self.tokens.values() if t.sip == account.sip]
        for token in doomed:
            del self.tokens[token.value]
        return len(doomed)

    # -- applications ---------------------------------------------------------------------

    def new_application(
        self, account: Account, culture: str, endpoint: str, agent: str, instance: str
    ) -> Application:
        app_id = str(100_000_000_000 + secrets.randbelow(900_000_000_000))
        href = f"{APPLICATIONS_PATH}/{app_id}/events"
        defaults = Params(self.cfg.pget_timeout, self.cfg.pget_low, self.cfg.pget_medium)
        channel = EventChannel(href, self.cond, defaults, self.cfg.time_scale)
        app = Application(app_id, account, culture, endpoint, agent, instance, channel)
        self.apps[app_id] = app
        return app

    def applications_of(self, account: Account) -> list[Application]:
        return [a for a in self.apps.values() if a.account is account]

    def find_application(self, account: Account, app_id: str) -> Application:
        if app_id in self.tombstones:
            raise self.tombstones[app_id]
        app = self.apps.get(app_id)
        if app is None or app.account is not account:
            raise app_not_found()
        return app

    def available_app(self, sip: str, exclude: Application | None = None) -> Application | None:
        """The newest application of ``sip`` that can receive IM invitations."""
        ready = [
            a
            for a in self.apps.values()
            if a.account.sip == sip
            and a.available
            and "Messaging" in a.modalities
            and a is not exclude
            and a.alive
        ]
        return max(ready, key=lambda a: a.created_at, default=None)
