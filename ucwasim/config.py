"""Simulator configuration: the simulated users and every tunable number.

Durations are in unscaled seconds; the server multiplies each one by ``time_scale``, except
``http_idle_timeout``, a socket setting in real seconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ucwasim.errors import ConfigError

BEHAVIOURS = ("accept", "decline", "no-answer", "offline", "echo")


@dataclass
class SimUser:
    """One account of the simulated SIP domain."""

    sip: str
    password: str
    name: str = ""
    behaviour: str = "accept"

    def __post_init__(self) -> None:
        if not self.sip.lower().startswith("sip:") or "@" not in self.sip:
            raise ConfigError(f"user {self.sip!r}: a SIP URI like sip:name@domain is required")
        if self.behaviour not in BEHAVIOURS:
            raise ConfigError(f"user {self.sip}: behaviour must be one of {', '.join(BEHAVIOURS)}")
        self.sip = "sip:" + self.sip[4:].lower()
        if not self.name:
            self.name = self.sip[4:].split("@")[0].replace(".", " ").title()


@dataclass
class SimConfig:
    """Every knob of the simulator; the defaults are the real server's numbers or our choices."""

    domain: str = "contoso.com"
    users: list[SimUser] = field(default_factory=list)
    time_scale: float = 1.0
    latency_ms: int = 0
    redirect: bool = False
    server_fqdn: str = "SIM-LYNC-SE1.contoso.com"
    ucwa_version: str = "2.0"
    token_lifetime: float = 28800.0
    max_applications_per_user: int = 10
    app_expiry: float = 900.0
    app_expiry_status: int = 404
    activity_expiry: float = 900.0
    resume_after: float = 300.0
    pget_timeout: float = 180.0
    pget_low: float = 15.0
    pget_medium: float = 5.0
    invitation_timeout: float = 30.0
    message_timeout: float = 30.0
    accept_delay: float = 1.0
    reply_delay: float = 1.0
    offline_delay: float = 0.5
    typing_duration: float = 5.0
    max_message_chars: int = 8000
    max_body_bytes: int = 1_048_576
    # IIS's defaults: dynamic compression on, kept-alive connections closed after 120 s idle
    # (the site's connectionTimeout); real seconds, never scaled.
    gzip: bool = True
    http_idle_timeout: float = 120.0
    # An incoming message is followed by ``conversation updated`` (as traced); some servers omit
    # it, and a client must not depend on it: False leaves it out.
    conversation_updated_after_message: bool = True

    def __post_init__(self) -> None:
        if self.time_scale <= 0:
            raise ConfigError("time_scale must be positive")
        if self.http_idle_timeout <= 0:
            raise ConfigError("http_idle_timeout must be positive")
        if self.app_expiry_status not in (404, 410):
            raise ConfigError("app_expiry_status must be 404 or 410")
        seen = set()
        for user in self.users:
            if user.sip in seen:
                raise ConfigError(f"user {user.sip} is listed twice")
            seen.add(user.sip)

    def scaled(self, seconds: float) -> float:
        """Real seconds the server waits for a protocol duration of ``seconds``."""
        return seconds * self.time_scale

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> SimConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown configuration keys: {', '.join(sorted(unknown))}")
        values = dict(data)
        users = []
        for raw in values.pop("users", []) or []:
            if not isinstance(raw, dict) or "sip" not in raw or "password" not in raw:
                raise ConfigError("each user needs at least sip and password")
            try:
                users.append(SimUser(**raw))
            except TypeError as exc:
                raise ConfigError(f"user {raw.get('sip')}: {exc}") from exc
        try:
            return cls(users=users, **values)
        except TypeError as exc:
            raise ConfigError(str(exc)) from exc

    @classmethod
    def from_file(cls, path: str | Path) -> SimConfig:
        text = Path(path).read_text(encoding="utf-8")
        try:
            data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: not valid YAML/JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        return cls.from_mapping(data)


def parse_user_arg(text: str) -> SimUser:
    """Parse ``sip:name@domain:password[:behaviour]`` from the command line."""
    if not text.lower().startswith("sip:"):
        text = "sip:" + text
    head, sep, rest = text[4:].partition(":")
    if not sep:
        raise ConfigError(f"--user {text!r}: expected sip:name@domain:password")
    password, _, behaviour = rest.partition(":")
    if behaviour in BEHAVIOURS:
        return SimUser("sip:" + head, password, behaviour=behaviour)
    return SimUser("sip:" + head, rest)
