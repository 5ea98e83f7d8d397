"""The value types behind ``BRIDGE_*`` variables (API keys and scopes, rate limits, Redis and HTTP
URLs) and ``ConfigError``, which names every variable that is wrong, one line each.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import urlsplit, urlunsplit

from bridge.config.redis_conn import SENTINEL_SCHEME, RedisUrlError, parse_sentinel_url

CONFIG_EXIT_CODE = 78  # EX_CONFIG from sysexits.h
ACCOUNT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")  # an account id
MIN_API_KEY_LENGTH = 16
_RATE_UNITS = {"s": 1, "sec": 1, "second": 1, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


class ConfigError(ValueError):
    """One or more configuration variables are missing or invalid.

    ``problems`` holds ``(variable, problem)`` pairs; ``lines`` gives ``"VARIABLE: problem"``
    for each, and ``str()`` is those lines (one line when one variable is wrong).
    ``variable`` and ``problem`` are the first pair's.
    """

    def __init__(self, variable: str, problem: str, *more: tuple[str, str]) -> None:
        self.problems: tuple[tuple[str, str], ...] = ((variable, problem), *more)
        self.variable = variable
        self.problem = problem
        super().__init__("\n".join(self.lines))

    @classmethod
    def of(cls, problems: Iterable[tuple[str, str]]) -> ConfigError:
        first, *rest = problems
        return cls(*first, *rest)

    @property
    def lines(self) -> list[str]:
        return [f"{variable}: {problem}" for variable, problem in self.problems]


class Scope(StrEnum):
    """What an API key may do; a key configured without scopes may do everything."""

    SEND = "send"
    READ = "read"


@dataclass(frozen=True)
class ApiKey:
    """One configured API key. The secret never appears in ``repr``."""

    secret: str = field(repr=False)
    scopes: frozenset[Scope] = frozenset(Scope)
    # The ids of the accounts it may send from, first its default; None: every account.
    accounts: tuple[str, ...] | None = None

    @property
    def key_id(self) -> str:
        """A stable, non-reversible name for the key (scopes idempotency keys, logs)."""
        return hashlib.sha256(self.secret.encode()).hexdigest()[:16]

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes


@dataclass(frozen=True)
class RateLimit:
    """``burst`` requests at once, refilled at ``requests`` per ``period_s`` (GCRA)."""

    requests: int
    period_s: int
    burst: int

    @property
    def emission_interval_s(self) -> float:
        """Seconds one request's allowance takes to come back."""
        return self.period_s / self.requests

    def __str__(self) -> str:
        unit = {1: "s", 60: "min", 3600: "h"}[self.period_s]
        return f"{self.requests}/{unit}, burst {self.burst}"


@dataclass(frozen=True)
class Rate:
    """``requests`` per ``period_s``, as written in ``BRIDGE_RATE_LIMIT``; the burst comes
    from elsewhere."""

    requests: int
    period_s: int

    def with_burst(self, burst: int) -> RateLimit:
        return RateLimit(self.requests, self.period_s, burst)

    def __str__(self) -> str:
        return str(self.with_burst(1)).partition(",")[0]


@dataclass(frozen=True)
class KeyRate:
    """One ``BRIDGE_RATE_LIMIT_KEYS`` entry: a key id, its rate (None: no limit), its burst."""

    key_id: str
    rate: Rate | None
    burst: int | None


# The parsers below are the bridge's own formats, which no pydantic type covers; they run as
# validators of the settings model and raise ValueError with the problem alone (the model's
# reader names the variable).


def parse_rate(raw: str) -> Rate | None:
    """``10/s``, ``600/min`` or ``36000/h``; ``off`` means no limit."""
    text = raw.strip().lower()
    if text == "off":
        return None
    count, _, unit = text.partition("/")
    period = _RATE_UNITS.get(unit.strip())
    if not count.strip().isdigit() or int(count) <= 0 or period is None:
        raise ValueError(f"must be like 10/s, 600/min or 36000/h, or off; not {raw!r}")
    return Rate(int(count), period)


def parse_key_rates(raw: str) -> tuple[KeyRate, ...]:
    """``<key id>=<rate>[:<burst>]`` entries, comma-separated; the key id is the first 16 hex
    digits of the key's SHA-256 (logged as ``key_id``), so no secret is written here."""
    entries: list[KeyRate] = []
    for entry in (part.strip() for part in raw.split(",")):
        if not entry:
            continue
        key_id, sep, spec = entry.partition("=")
        key_id = key_id.strip().lower()
        if not sep:
            raise ValueError(f"entry {entry!r} is not <key id>=<rate>[:<burst>]")
        rate, _, own_burst = spec.partition(":")
        if own_burst and not (own_burst.strip().isdigit() and int(own_burst) > 0):
            raise ValueError(f"{key_id}: burst must be a positive integer")
        try:
            parsed = parse_rate(rate)
        except ValueError as exc:
            raise ValueError(f"{key_id}: {exc}") from None
        entries.append(KeyRate(key_id, parsed, int(own_burst) if own_burst else None))
    return tuple(entries)


def parse_api_keys(raw: str) -> tuple[ApiKey, ...]:
    """Parse ``key1,key2:send,key3:send,read``: a scope name after a scoped key extends it.

    Keys are at least 16 characters, so a shorter bare word after a scoped key is a scope
    name, known or not.
    """
    keys: list[tuple[str, set[Scope] | None]] = []
    bound: dict[int, tuple[str, ...]] = {}  # entry index -> the accounts after its '@'
    for token in (part.strip() for part in raw.split(",")):
        if not token:
            continue
        token, at, account_text = token.partition("@")
        if at:
            accounts = tuple(a.strip() for a in account_text.split("|"))
            if not all(ACCOUNT_NAME.fullmatch(a) for a in accounts):
                raise ValueError(
                    f"entry {len(keys) + 1}: after '@' come account ids separated by '|' "
                    "(a key itself may not contain '@')"
                )
            index = (
                len(keys) - 1 if ":" not in token and len(token) < MIN_API_KEY_LENGTH else len(keys)
            )
            bound[index] = accounts
            token = token.strip()
        secret, sep, scope_text = token.partition(":")
        scoped_before = bool(keys) and keys[-1][1] is not None
        if not sep and len(token) < MIN_API_KEY_LENGTH and token.isalpha():
            if token.lower() in Scope._value2member_map_ and not scoped_before:
                raise ValueError(f"scope {token!r} does not follow a 'key:scope' entry")
            if scoped_before:
                scopes = keys[-1][1]
                assert scopes is not None
                scopes.add(_scope(token.lower(), f"entry {len(keys)}"))
                continue
        if len(secret) < MIN_API_KEY_LENGTH:
            raise ValueError(
                f"entry {len(keys) + 1} is shorter than {MIN_API_KEY_LENGTH} characters"
            )
        if not sep:
            keys.append((secret, None))
            continue
        keys.append((secret, {_scope(scope_text.strip().lower(), f"entry {len(keys) + 1}")}))
    if not keys:
        raise ValueError("no API keys given")
    if len({secret for secret, _ in keys}) != len(keys):
        raise ValueError("the same key is listed twice")
    return tuple(
        ApiKey(secret, frozenset(Scope) if scopes is None else frozenset(scopes), bound.get(index))
        for index, (secret, scopes) in enumerate(keys)
    )


def _scope(name: str, where: str) -> Scope:
    if name in Scope._value2member_map_:
        return Scope(name)
    known = [s.value for s in Scope]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise ValueError(f"{where} has unknown scope {name!r} (known: {', '.join(known)}){hint}")


def check_redis_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme == SENTINEL_SCHEME:
        try:
            parse_sentinel_url(url)
        except RedisUrlError as exc:
            raise ValueError(str(exc)) from None
        return url
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must start with redis://, rediss://, unix:// or redis+sentinel://")
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError("has no host")
    return url


def check_http_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError("has an invalid port") from None
    return url


def check_bind(address: str) -> str:
    """gunicorn's ``--bind``: ``HOST:PORT``, ``[IPv6]:PORT``, ``HOST``, ``unix:PATH`` or
    ``fd://N``."""
    if address.startswith(("unix:", "fd://")):
        return address
    host, colon, port = address.rpartition(":") if not address.endswith("]") else ("", "", "")
    if colon and (not port.isdigit() or not 0 <= int(port) <= 65535):
        raise ValueError(f"must be HOST:PORT, unix:PATH or fd://N; not {address!r}")
    if colon and host.startswith("[") != host.endswith("]"):
        raise ValueError(f"must be HOST:PORT, unix:PATH or fd://N; not {address!r}")
    return address


def check_host(host: str) -> str:
    if not host or any(c in host for c in "/:@ "):
        raise ValueError(f"not a host name: {host!r}")
    return host


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
