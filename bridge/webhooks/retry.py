"""Retry policy as pure deciders over (failures so far, HTTP status, Retry-After, randomness).

No I/O and no clock: callers pass ``now`` and a random number, so every branch is testable.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import StrEnum

from bridge.webhooks.settings import WebhookSettings

RETRY_AFTER_STATUSES = frozenset({429, 503})


class Verdict(StrEnum):
    SUCCEEDED = "succeeded"
    RETRY = "retry"
    DEAD = "dead"
    DISABLE_ENDPOINT = "disable_endpoint"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str = ""
    delay_s: float = 0.0


@dataclass(frozen=True)
class RetryPolicy:
    """``schedule_s[n]`` is the wait after the (n+1)-th consecutive failure; past its end, dead."""

    schedule_s: tuple[float, ...]
    jitter: float = 0.2
    retry_after_cap_s: float = 36000.0

    @classmethod
    def from_settings(cls, settings: WebhookSettings) -> RetryPolicy:
        return cls(settings.schedule_s, settings.jitter, settings.retry_after_cap_s)


def jittered(delay_s: float, jitter: float, rand: float) -> float:
    """Spread ``delay_s`` uniformly over ±``jitter`` using ``rand`` in [0, 1)."""
    return max(0.0, delay_s * (1.0 + jitter * (2.0 * rand - 1.0)))


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait per a Retry-After value (delta-seconds or HTTP-date); None if unusable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - now)


def failure_reason(status_code: int | None, error: str | None) -> str:
    """A short stable code for a failed attempt: ``http_500``, ``redirect_302``, ``timeout``..."""
    if status_code is not None:
        return f"redirect_{status_code}" if 300 <= status_code < 400 else f"http_{status_code}"
    return (error or "error").split(":", 1)[0]


def decide(
    policy: RetryPolicy,
    failures_before: int,
    status_code: int | None,
    error: str | None = None,
    retry_after_s: float | None = None,
    rand: float = 0.5,
) -> Decision:
    """What to do after one attempt.

    2xx succeeds; 410 disables the endpoint; anything else (3xx, 4xx, 5xx, timeouts,
    connection errors) retries per the schedule. On 429/503 a Retry-After delays the retry
    to ``max(jittered schedule delay, min(Retry-After, cap))``: never earlier than the
    receiver asked, never later than the cap.
    """
    if status_code is not None and 200 <= status_code < 300:
        return Decision(Verdict.SUCCEEDED)
    if status_code == 410:
        return Decision(Verdict.DISABLE_ENDPOINT, "endpoint_gone")
    reason = failure_reason(status_code, error)
    if failures_before >= len(policy.schedule_s):
        return Decision(Verdict.DEAD, "retries_exhausted")
    delay = jittered(policy.schedule_s[failures_before], policy.jitter, rand)
    if status_code in RETRY_AFTER_STATUSES and retry_after_s is not None:
        delay = max(delay, min(retry_after_s, policy.retry_after_cap_s))
    return Decision(Verdict.RETRY, reason, delay)
