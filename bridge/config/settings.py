"""Process configuration: ``BRIDGE_*`` environment variables read once into ``Settings``.

The variables themselves (types, bounds, defaults, which command reads which) are the
pydantic-settings model in ``variables``; invalid or missing values raise ``ConfigError``,
one line per variable (exit code 78).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from bridge.config.accounts import Account, Accounts, load_accounts
from bridge.config.environment import accounts_environ, read_environment, read_variables
from bridge.config.values import (
    CONFIG_EXIT_CODE,
    MIN_API_KEY_LENGTH,
    ApiKey,
    ConfigError,
    RateLimit,
    Scope,
    redact_url,
)
from bridge.config.variables import PREFIX, BridgeEnvironment

__all__ = [
    "CONFIG_EXIT_CODE",
    "MAX_VALIDITY_S",
    "MIN_API_KEY_LENGTH",
    "PREFIX",
    "ROLES",
    "Account",
    "Accounts",
    "ApiKey",
    "ConfigError",
    "RateLimit",
    "Role",
    "Scope",
    "Settings",
    "api_timeouts",
    "gunicorn_limits",
    "redact_url",
]

MAX_VALIDITY_S = 86_400
# gunicorn's request-line and header limits and the api worker's read deadlines (seconds a
# client may take over its request line and headers, and over its body), by gunicorn name.
GUNICORN_LIMITS = (
    "api_limit_request_line",
    "api_limit_request_fields",
    "api_limit_request_field_size",
    "api_worker_connections",
)
API_TIMEOUTS = ("api_header_timeout_s", "api_body_timeout_s")

Role = Literal["api", "worker", "poller", "demo"]
ROLES: tuple[Role, ...] = ("api", "worker", "poller", "demo")
# "demo" settings are everything in one process: what the api, a worker and the poller read.
_READS: dict[str, tuple[str, ...]] = {
    "api": ("api",),
    "worker": ("worker",),
    "poller": ("poller",),
    "demo": ("api", "worker", "poller"),
}


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
    ucwa_connection_idle_s: float = 30.0
    # Every account the deployment speaks as; the single-account variables make one, default.
    accounts: Accounts = field(default_factory=Accounts.none)

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
            f"ucwa_trusted_hosts={self.ucwa_trusted_hosts!r}, "
            f"accounts={list(self.accounts.ids)!r})"
        )

    __str__ = __repr__

    @classmethod
    def from_env(cls, role: Role, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and check what ``role`` needs; a ``ConfigError`` names every fault."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
        env = os.environ if environ is None else environ
        return cls.from_variables(role, read_environment(_READS[role], env))

    @classmethod
    def from_variables(cls, role: Role, env: BridgeEnvironment) -> Settings:
        """``Settings`` from the checked variables (``bridge.config.environment``)."""
        return cls(
            role=role,
            redis_url=env.redis_url or "",
            api_keys=env.api_keys if role in ("api", "demo") else (),
            auth_disabled=env.auth_disabled,
            ucwa_discovery_url=env.ucwa_discovery_url,
            ucwa_username=env.ucwa_username,
            ucwa_password=env.ucwa_password,
            max_body_bytes=env.max_body_bytes,
            max_message_chars=env.max_message_chars,
            default_validity_s=env.default_validity_s,
            idempotency_ttl_s=env.idempotency_ttl_s,
            idempotency_lock_ttl_s=env.idempotency_lock_ttl_s,
            record_ttl_s=env.record_ttl_s,
            rate_limit=env.rate_limit.with_burst(env.rate_limit_burst) if env.rate_limit else None,
            rate_limit_keys={
                entry.key_id: (
                    entry.rate.with_burst(entry.burst or env.rate_limit_burst)
                    if entry.rate
                    else None
                )
                for entry in env.rate_limit_keys
            },
            gunicorn_limits=gunicorn_limits(env),
            ucwa_tls_verify=env.ucwa_tls_verify,
            ucwa_ca_bundle=env.ucwa_ca_bundle,
            ucwa_timeout_s=env.ucwa_timeout_s,
            ucwa_max_body_bytes=env.ucwa_max_body_bytes,
            ucwa_trusted_hosts=env.ucwa_trusted_hosts,
            ucwa_connection_idle_s=env.ucwa_connection_idle_s,
            accounts=load_accounts(
                accounts_environ(env), need_passwords=role in ("worker", "poller", "demo")
            ),
        )

    @property
    def default_account(self) -> Account | None:
        return self.accounts.default


def gunicorn_limits(env: BridgeEnvironment | Mapping[str, str]) -> dict[str, int]:
    """``limit_request_line`` and friends for gunicorn, from ``BRIDGE_API_LIMIT_REQUEST_*``
    and ``BRIDGE_API_WORKER_CONNECTIONS``, with the api worker's read deadlines."""
    names = GUNICORN_LIMITS + API_TIMEOUTS
    model = env if isinstance(env, BridgeEnvironment) else read_variables(env, names)
    return {name.removeprefix("api_"): getattr(model, name) for name in names}


def api_timeouts(env: BridgeEnvironment | Mapping[str, str]) -> dict[str, int]:
    """``header_timeout_s`` and ``body_timeout_s`` for the api worker, from
    ``BRIDGE_API_HEADER_TIMEOUT_S`` and ``BRIDGE_API_BODY_TIMEOUT_S``."""
    model = env if isinstance(env, BridgeEnvironment) else read_variables(env, API_TIMEOUTS)
    return {name.removeprefix("api_"): getattr(model, name) for name in API_TIMEOUTS}
