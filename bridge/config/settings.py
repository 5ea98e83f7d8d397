"""Process configuration: ``BRIDGE_*`` environment variables read once into ``Settings``.

Invalid or missing values raise ``ConfigError``, one line naming the variable (exit code 78).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from bridge.config.redis_conn import SENTINEL_SCHEME, RedisUrlError, parse_sentinel_url

PREFIX = "BRIDGE_"
CONFIG_EXIT_CODE = 78  # EX_CONFIG from sysexits.h
MIN_API_KEY_LENGTH = 16
MAX_VALIDITY_S = 86_400
DEFAULT_RATE_LIMIT = "10/s"
DEFAULT_RATE_LIMIT_BURST = 100
# gunicorn's request-line and header limits (``gunicorn_conf``); its own maxima are the caps.
GUNICORN_LIMITS = {
    "API_LIMIT_REQUEST_LINE": (4094, 8190),
    "API_LIMIT_REQUEST_FIELDS": (50, 32768),
    "API_LIMIT_REQUEST_FIELD_SIZE": (8190, 65536),
    "API_WORKER_CONNECTIONS": (1000, 100000),
}
# Seconds a client may take over its request line and headers, and over its body.
API_TIMEOUTS = {"API_HEADER_TIMEOUT_S": (10, 600), "API_BODY_TIMEOUT_S": (30, 3600)}
_RATE_UNITS = {"s": 1, "sec": 1, "second": 1, "min": 60, "minute": 60, "h": 3600, "hour": 3600}

Role = Literal["api", "worker", "poller", "demo"]
ROLES: tuple[Role, ...] = ("api", "worker", "poller", "demo")


class ConfigError(ValueError):
    """A configuration variable is missing or invalid; ``str()`` is one line naming it."""

    def __init__(self, variable: str, problem: str) -> None:
        self.variable = variable
        self.problem = problem
        super().__init__(f"{variable}: {problem}")


class Scope(StrEnum):
    """What an API key may do; a key configured without scopes may do everything."""

    SEND = "send"
    READ = "read"


@dataclass(frozen=True)
class ApiKey:
    """One configured API key. The secret never appears in ``repr``."""

    secret: str = field(repr=False)
    scopes: frozenset[Scope] = frozenset(Scope)

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


@dataclass(frozen=True, repr=False)
class Settings:
    """Validated configuration for one process role. Build it with ``Settings.from_env``."""

    role: Role
    redis_url: str
    api_keys: tuple[ApiKey, ...] = ()
    auth_disabled: bool = False
    ucwa_discovery_url: str | None = None
    ucwa_username: str | None = None
    ucwa_password: str | None = None
    max_body_bytes: int = 64 * 1024
    max_message_chars: int = 8_000
    default_validity_s: int = 300
    idempotency_ttl_s: int = 86_400
    idempotency_lock_ttl_s: int = 30
    record_ttl_s: int = 7 * 86_400
    rate_limit: RateLimit | None = None
    rate_limit_keys: Mapping[str, RateLimit | None] = field(default_factory=dict)
    gunicorn_limits: Mapping[str, int] = field(default_factory=dict)
    ucwa_tls_verify: bool = True
    ucwa_ca_bundle: str | None = None
    ucwa_timeout_s: int = 30
    ucwa_max_body_bytes: int = 4 * 1024 * 1024
    ucwa_trusted_hosts: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return (
            f"Settings(role={self.role!r}, redis_url={redact_url(self.redis_url)!r}, "
            f"api_keys=<{len(self.api_keys)} keys>, auth_disabled={self.auth_disabled}, "
            f"ucwa_discovery_url={self.ucwa_discovery_url!r}, "
            f"ucwa_username={self.ucwa_username!r}, "
            f"ucwa_password={'<set>' if self.ucwa_password else None}, "
            f"max_body_bytes={self.max_body_bytes}, max_message_chars={self.max_message_chars}, "
            f"default_validity_s={self.default_validity_s}, "
            f"idempotency_ttl_s={self.idempotency_ttl_s}, "
            f"idempotency_lock_ttl_s={self.idempotency_lock_ttl_s}, "
            f"record_ttl_s={self.record_ttl_s}, rate_limit={self.rate_limit}, "
            f"rate_limit_keys=<{len(self.rate_limit_keys)} overrides>, "
            f"ucwa_tls_verify={self.ucwa_tls_verify}, ucwa_ca_bundle={self.ucwa_ca_bundle!r}, "
            f"ucwa_timeout_s={self.ucwa_timeout_s}, "
            f"ucwa_max_body_bytes={self.ucwa_max_body_bytes}, "
            f"ucwa_trusted_hosts={self.ucwa_trusted_hosts!r})"
        )

    __str__ = __repr__

    @classmethod
    def from_env(cls, role: Role, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and check what ``role`` needs; raise ``ConfigError`` on the first fault."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
        env = _Env(os.environ if environ is None else environ)
        redis_url = _check_redis_url(
            env.name("REDIS_URL"), env.required("REDIS_URL", "e.g. redis://localhost:6379/0")
        )
        needs_ucwa = role in ("worker", "poller", "demo")
        auth_disabled = env.boolean("AUTH_DISABLED", default=False)
        api_keys: tuple[ApiKey, ...] = ()
        if role in ("api", "demo") and not auth_disabled:
            api_keys = parse_api_keys(env.required("API_KEYS", "comma-separated API keys"))
        discovery = env.optional("UCWA_DISCOVERY_URL")
        if needs_ucwa:
            discovery = env.required("UCWA_DISCOVERY_URL", "the UCWA autodiscover URL")
        if discovery is not None:
            _check_http_url(env.name("UCWA_DISCOVERY_URL"), discovery)
        default_validity = env.integer("DEFAULT_VALIDITY_S", 300, maximum=MAX_VALIDITY_S)
        idempotency_ttl = env.integer("IDEMPOTENCY_TTL_S", 86_400)
        burst = env.integer("RATE_LIMIT_BURST", DEFAULT_RATE_LIMIT_BURST, maximum=1_000_000)
        rate_limit = parse_rate_limit(
            env.optional("RATE_LIMIT") or DEFAULT_RATE_LIMIT, burst, env.name("RATE_LIMIT")
        )
        rate_limit_keys = parse_rate_limit_keys(
            env.optional("RATE_LIMIT_KEYS") or "", {key.key_id for key in api_keys}, burst
        )
        return cls(
            role=role,
            redis_url=redis_url,
            api_keys=api_keys,
            auth_disabled=auth_disabled,
            ucwa_discovery_url=discovery,
            ucwa_username=(
                env.required("UCWA_USERNAME", "the SIP account the bridge signs in as")
                if needs_ucwa
                else env.optional("UCWA_USERNAME")
            ),
            ucwa_password=(
                env.required("UCWA_PASSWORD", "the account's password")
                if needs_ucwa
                else env.optional("UCWA_PASSWORD")
            ),
            max_body_bytes=env.integer("MAX_BODY_BYTES", 64 * 1024, maximum=16 * 1024 * 1024),
            max_message_chars=env.integer("MAX_MESSAGE_CHARS", 8_000, maximum=1_000_000),
            default_validity_s=default_validity,
            idempotency_ttl_s=idempotency_ttl,
            idempotency_lock_ttl_s=env.integer(
                "IDEMPOTENCY_LOCK_TTL_S", 30, maximum=idempotency_ttl
            ),
            record_ttl_s=env.integer("RECORD_TTL_S", 7 * 86_400),
            rate_limit=rate_limit,
            rate_limit_keys=rate_limit_keys,
            gunicorn_limits={**gunicorn_limits(env), **api_timeouts(env)},
            **_ucwa_connection(env),
        )


def _ucwa_connection(env: _Env) -> dict[str, Any]:
    """TLS, deadline, body cap and extra trusted hosts for the connection to UCWA."""
    verify = env.boolean("UCWA_TLS_VERIFY", default=True)
    bundle = env.optional("UCWA_CA_BUNDLE")
    if bundle is not None:
        if not verify:
            raise ConfigError(env.name("UCWA_CA_BUNDLE"), "is set but BRIDGE_UCWA_TLS_VERIFY=false")
        if not os.path.exists(bundle):
            raise ConfigError(env.name("UCWA_CA_BUNDLE"), f"no such file or directory: {bundle}")
    raw_hosts = (env.optional("UCWA_TRUSTED_HOSTS") or "").split(",")
    hosts = tuple(h.strip().lower() for h in raw_hosts if h.strip())
    for host in hosts:
        if any(c in host for c in "/:@ "):
            raise ConfigError(env.name("UCWA_TRUSTED_HOSTS"), f"not a host name: {host!r}")
    return {
        "ucwa_tls_verify": verify,
        "ucwa_ca_bundle": bundle,
        "ucwa_timeout_s": env.integer("UCWA_TIMEOUT_S", 30, maximum=600),
        "ucwa_max_body_bytes": env.integer(
            "UCWA_MAX_BODY_BYTES", 4 * 1024 * 1024, maximum=256 * 1024 * 1024
        ),
        "ucwa_trusted_hosts": hosts,
    }


def gunicorn_limits(env: _Env | Mapping[str, str]) -> dict[str, int]:
    """``limit_request_line`` and friends for gunicorn, from ``BRIDGE_API_LIMIT_REQUEST_*``."""
    reader = env if isinstance(env, _Env) else _Env(env)
    return {
        suffix.removeprefix("API_").lower(): reader.integer(suffix, default, maximum=maximum)
        for suffix, (default, maximum) in GUNICORN_LIMITS.items()
    }


def api_timeouts(env: _Env | Mapping[str, str]) -> dict[str, int]:
    """``header_timeout_s`` and ``body_timeout_s`` for the api worker, from
    ``BRIDGE_API_HEADER_TIMEOUT_S`` and ``BRIDGE_API_BODY_TIMEOUT_S``."""
    reader = env if isinstance(env, _Env) else _Env(env)
    return {
        suffix.removeprefix("API_").lower(): reader.integer(suffix, default, maximum=maximum)
        for suffix, (default, maximum) in API_TIMEOUTS.items()
    }


def parse_rate_limit(raw: str, burst: int, variable: str) -> RateLimit | None:
    """``10/s``, ``600/min`` or ``36000/h`` with ``burst``; ``off`` means no limit."""
    text = raw.strip().lower()
    if text == "off":
        return None
    count, _, unit = text.partition("/")
    period = _RATE_UNITS.get(unit.strip())
    if not count.strip().isdigit() or int(count) <= 0 or period is None:
        raise ConfigError(variable, f"must be like 10/s, 600/min or 36000/h, or off; not {raw!r}")
    return RateLimit(int(count), period, burst)


def parse_rate_limit_keys(
    raw: str, key_ids: set[str], burst: int, variable: str = PREFIX + "RATE_LIMIT_KEYS"
) -> dict[str, RateLimit | None]:
    """``<key id>=<rate>[:<burst>]`` entries, comma-separated; the key id is the first 16 hex
    digits of the key's SHA-256 (logged as ``key_id``), so no secret is written here."""
    limits: dict[str, RateLimit | None] = {}
    for entry in (part.strip() for part in raw.split(",")):
        if not entry:
            continue
        key_id, sep, spec = entry.partition("=")
        key_id = key_id.strip().lower()
        if not sep or key_id not in key_ids:
            raise ConfigError(variable, f"{key_id!r} is not the key id of a configured API key")
        rate, _, own_burst = spec.partition(":")
        if own_burst and not (own_burst.strip().isdigit() and int(own_burst) > 0):
            raise ConfigError(variable, f"{key_id}: burst must be a positive integer")
        limits[key_id] = parse_rate_limit(
            rate, int(own_burst) if own_burst else burst, f"{variable} ({key_id})"
        )
    return limits


def parse_api_keys(raw: str, variable: str = PREFIX + "API_KEYS") -> tuple[ApiKey, ...]:
    """Parse ``key1,key2:send,key3:send,read``: a scope name after a scoped key extends it.

    Keys are at least 16 characters, so no key can be mistaken for a scope name.
    """
    keys: list[tuple[str, set[Scope] | None]] = []
    for token in (part.strip() for part in raw.split(",")):
        if not token:
            continue
        if token in Scope._value2member_map_:
            if not keys or keys[-1][1] is None:
                raise ConfigError(variable, f"scope {token!r} does not follow a 'key:scope' entry")
            scopes = keys[-1][1]
            assert scopes is not None
            scopes.add(Scope(token))
            continue
        secret, sep, scope_text = token.partition(":")
        if len(secret) < MIN_API_KEY_LENGTH:
            raise ConfigError(
                variable, f"entry {len(keys) + 1} is shorter than {MIN_API_KEY_LENGTH} characters"
            )
        if not sep:
            keys.append((secret, None))
            continue
        try:
            keys.append((secret, {Scope(scope_text.strip())}))
        except ValueError:
            raise ConfigError(
                variable,
                f"entry {len(keys) + 1} has unknown scope {scope_text!r} "
                f"(known: {', '.join(s.value for s in Scope)})",
            ) from None
    if not keys:
        raise ConfigError(variable, "no API keys given")
    if len({secret for secret, _ in keys}) != len(keys):
        raise ConfigError(variable, "the same key is listed twice")
    return tuple(
        ApiKey(secret, frozenset(Scope) if scopes is None else frozenset(scopes))
        for secret, scopes in keys
    )


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _check_redis_url(variable: str, url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme == SENTINEL_SCHEME:
        try:
            parse_sentinel_url(url)
        except RedisUrlError as exc:
            raise ConfigError(variable, str(exc)) from None
        return url
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            variable, "must start with redis://, rediss://, unix:// or redis+sentinel://"
        )
    if parts.scheme != "unix" and not parts.hostname:
        raise ConfigError(variable, "has no host")
    return url


def _check_http_url(variable: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(variable, "must be an http:// or https:// URL")


class _Env:
    """Typed reads of ``BRIDGE_*`` variables; blank values count as unset."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    @staticmethod
    def name(suffix: str) -> str:
        return PREFIX + suffix

    def optional(self, suffix: str) -> str | None:
        value = self._environ.get(self.name(suffix), "").strip()
        try:
            # Bytes that are not UTF-8 reach ``os.environ`` as lone surrogates, which would
            # raise wherever the value is sent or logged: refuse them here, by name.
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError(self.name(suffix), "is not valid UTF-8") from None
        return value or None

    def required(self, suffix: str, hint: str) -> str:
        value = self.optional(suffix)
        if value is None:
            raise ConfigError(self.name(suffix), f"is required ({hint})")
        return value

    def boolean(self, suffix: str, default: bool) -> bool:
        value = self.optional(suffix)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(self.name(suffix), f"must be true or false, not {value!r}")

    def integer(self, suffix: str, default: int, maximum: int | None = None) -> int:
        value = self.optional(suffix)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(self.name(suffix), f"must be an integer, not {value!r}") from None
        if number <= 0:
            raise ConfigError(self.name(suffix), f"must be positive, not {number}")
        if maximum is not None and number > maximum:
            raise ConfigError(self.name(suffix), f"must be at most {maximum}, not {number}")
        return number
