"""Process configuration: ``BRIDGE_*`` environment variables read once into ``Settings``.

Invalid or missing values raise ``ConfigError``, one line naming the variable (exit code 78).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from bridge.redis_conn import SENTINEL_SCHEME, RedisUrlError, parse_sentinel_url

PREFIX = "BRIDGE_"
CONFIG_EXIT_CODE = 78  # EX_CONFIG from sysexits.h
MIN_API_KEY_LENGTH = 16
MAX_VALIDITY_S = 86_400

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
            f"record_ttl_s={self.record_ttl_s})"
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
        )


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
