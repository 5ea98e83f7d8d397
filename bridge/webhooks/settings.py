"""Delivery settings (timeout, retry schedule, jitter, retention, SSRF default) read from env.

Read once at start-up into a frozen ``WebhookSettings``; bad values raise ``WebhookConfigError``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from bridge.webhooks.errors import WebhookConfigError

# The Svix schedule: the first try at once, then retries 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and
# 10 h after each failure: eight tries over about 28 hours, then dead-lettered.
DEFAULT_SCHEDULE_S: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
USER_AGENT = "ucwa-bridge-webhooks/0.1"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class WebhookSettings:
    timeout_s: float = 15.0
    schedule_s: tuple[float, ...] = DEFAULT_SCHEDULE_S
    jitter: float = 0.2
    retry_after_cap_s: float = 36000.0
    allow_private: bool = False
    retention_s: int = 7 * 24 * 3600
    excerpt_bytes: int = 1024
    user_agent: str = USER_AGENT
    tls_verify: bool = True
    ca_bundle: str | None = None

    def __post_init__(self) -> None:
        if not (self.timeout_s > 0 and math.isfinite(self.timeout_s)):
            raise WebhookConfigError("BRIDGE_WEBHOOK_TIMEOUT_S: must be a positive number")
        if any(not (d >= 0 and math.isfinite(d)) for d in self.schedule_s):
            raise WebhookConfigError("BRIDGE_WEBHOOK_SCHEDULE_S: delays must be numbers >= 0")
        if not 0 <= self.jitter < 1:
            raise WebhookConfigError("BRIDGE_WEBHOOK_JITTER: must be in [0, 1)")
        if self.retry_after_cap_s < 0:
            raise WebhookConfigError("BRIDGE_WEBHOOK_RETRY_AFTER_CAP_S: must be >= 0")
        if self.retention_s <= 0:
            raise WebhookConfigError("BRIDGE_WEBHOOK_RETENTION_S: must be a positive integer")
        if self.ca_bundle is not None:
            if not self.tls_verify:
                raise WebhookConfigError(
                    "BRIDGE_WEBHOOK_CA_BUNDLE: is set but BRIDGE_WEBHOOK_TLS_VERIFY=false"
                )
            if not os.path.exists(self.ca_bundle):
                raise WebhookConfigError(
                    f"BRIDGE_WEBHOOK_CA_BUNDLE: no such file or directory: {self.ca_bundle}"
                )

    @property
    def verify(self) -> bool | str:
        """What requests takes as ``verify``: True, False or the CA bundle's path."""
        return self.ca_bundle or self.tls_verify

    @property
    def job_timeout_s(self) -> int:
        """RQ's hard limit for one delivery job: the HTTP timeout (connect, read) plus slack."""
        return int(self.timeout_s * 3) + 30

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WebhookSettings:
        defaults = cls()
        return cls(
            timeout_s=_number(env, "BRIDGE_WEBHOOK_TIMEOUT_S", defaults.timeout_s),
            schedule_s=_schedule(env, "BRIDGE_WEBHOOK_SCHEDULE_S", defaults.schedule_s),
            jitter=_number(env, "BRIDGE_WEBHOOK_JITTER", defaults.jitter),
            retry_after_cap_s=_number(
                env, "BRIDGE_WEBHOOK_RETRY_AFTER_CAP_S", defaults.retry_after_cap_s
            ),
            allow_private=parse_bool(env, "BRIDGE_WEBHOOK_ALLOW_PRIVATE", defaults.allow_private),
            retention_s=int(_number(env, "BRIDGE_WEBHOOK_RETENTION_S", defaults.retention_s)),
            tls_verify=parse_bool(env, "BRIDGE_WEBHOOK_TLS_VERIFY", defaults.tls_verify),
            ca_bundle=(env.get("BRIDGE_WEBHOOK_CA_BUNDLE") or "").strip() or None,
        )


def parse_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise WebhookConfigError(f"{name}: expected true or false, got {raw!r}")


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return float(raw)
    except ValueError:
        raise WebhookConfigError(f"{name}: expected a number, got {raw!r}") from None


def _schedule(env: Mapping[str, str], name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    if raw.strip().lower() == "none":
        return ()  # a single attempt, never retried
    parts = [p.strip() for p in raw.strip().strip("[]").split(",")]
    try:
        return tuple(float(p) for p in parts if p)
    except ValueError:
        raise WebhookConfigError(
            f"{name}: expected comma-separated seconds like 0,5,300, got {raw!r}"
        ) from None
