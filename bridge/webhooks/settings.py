"""Delivery settings (timeout, retry schedule, jitter, retention, SSRF default) read from env.

Read once at start-up into a frozen ``WebhookSettings``; bad values raise ``WebhookConfigError``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from bridge.config.environment import read_variables
from bridge.config.values import ConfigError
from bridge.config.variables import DEFAULT_WEBHOOK_SCHEDULE_S
from bridge.webhooks.errors import WebhookConfigError

DEFAULT_SCHEDULE_S = DEFAULT_WEBHOOK_SCHEDULE_S
USER_AGENT = "ucwa-bridge-webhooks/0.1"
FIELDS = (
    "webhook_timeout_s",
    "webhook_schedule_s",
    "webhook_jitter",
    "webhook_batch_size",
    "webhook_retry_after_cap_s",
    "webhook_allow_private",
    "webhook_retention_s",
    "webhook_tls_verify",
    "webhook_ca_bundle",
)


@dataclass(frozen=True)
class WebhookSettings:
    timeout_s: float = 15.0
    schedule_s: tuple[float, ...] = DEFAULT_SCHEDULE_S
    jitter: float = 0.2
    batch_size: int = 10
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
        if not 1 <= self.batch_size <= 100:
            raise WebhookConfigError("BRIDGE_WEBHOOK_BATCH_SIZE: must be from 1 to 100")
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

    @property
    def batch_budget_s(self) -> float:
        """How long into its job a batch may still start a delivery: each one started then
        keeps the time of a single delivery's job for its POST and for waits on Redis."""
        return self.job_timeout_s - self.timeout_s - 30

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WebhookSettings:
        """The ``BRIDGE_WEBHOOK_*`` delivery settings in ``env``, checked by the settings model;
        ``WebhookConfigError`` names each bad one."""
        try:
            model = read_variables(env, FIELDS)
        except ConfigError as exc:
            raise WebhookConfigError(str(exc)) from None
        return cls(
            timeout_s=model.webhook_timeout_s,
            schedule_s=model.webhook_schedule_s,
            jitter=model.webhook_jitter,
            batch_size=model.webhook_batch_size,
            retry_after_cap_s=model.webhook_retry_after_cap_s,
            allow_private=model.webhook_allow_private,
            retention_s=model.webhook_retention_s,
            tls_verify=model.webhook_tls_verify,
            ca_bundle=model.webhook_ca_bundle,
        )
