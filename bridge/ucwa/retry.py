"""Retry policy as small pure deciders over (attempt, error): exponential backoff with jitter,
Retry-After honoured within bounds. They return a delay; they never sleep.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from bridge.ucwa.errors import (
    ApplicationGone,
    AuthenticationRequired,
    ServiceFailure,
    Throttled,
    TransportError,
    UcwaError,
)

Rng = Callable[[], float]


def backoff_delay(
    attempt: int,
    base: float = 1.0,
    cap: float = 60.0,
    jitter_ratio: float | None = None,
    rng: Rng = random.random,
) -> float:
    """Delay before retry number ``attempt`` (1-based): ``base * 2**(attempt-1)`` capped.

    ``jitter_ratio=None`` is full jitter (uniform in [0, delay]); a ratio r spreads the delay
    uniformly over ±r; 0 means no jitter. The result never exceeds ``cap``.
    """
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    delay = min(cap, base * (2 ** min(attempt - 1, 62)))
    if jitter_ratio is None:
        return delay * rng()
    if not 0 <= jitter_ratio <= 1:
        raise ValueError("jitter_ratio must be within [0, 1]")
    spread = delay * jitter_ratio * (2 * rng() - 1)
    return max(0.0, min(cap, delay + spread))


@dataclass(frozen=True)
class RetryPolicy:
    base: float = 1.0
    cap: float = 60.0
    jitter_ratio: float | None = 0.2
    max_retry_after: float = 300.0  # a longer Retry-After is not waited for
    retry_after_jitter: float = 0.1  # added on top, so clients do not return in lockstep


@dataclass(frozen=True)
class RetryDecision:
    retry: bool
    delay_s: float
    reason: str


DEFAULT_POLICY = RetryPolicy()


def decide(
    attempt: int,
    error: UcwaError,
    max_attempts: int,
    now: datetime | None = None,
    *,
    policy: RetryPolicy = DEFAULT_POLICY,
    idempotent: bool = True,
    rng: Rng = random.random,
) -> RetryDecision:
    """Whether to retry after failed attempt number ``attempt`` (1-based), and after how long."""
    now = now or datetime.now(UTC)
    name = type(error).__name__
    if error.status == 410:
        return RetryDecision(False, 0.0, f"{name}: 410 Gone is never retried")
    if error.permanent:
        return RetryDecision(False, 0.0, f"{name} is permanent")
    if attempt >= max_attempts:
        return RetryDecision(False, 0.0, f"{name}: gave up after {attempt} attempts")
    if not idempotent and isinstance(error, TransportError | ServiceFailure):
        # The server may have acted; reconcile (events, GET the href) before sending again.
        return RetryDecision(False, 0.0, f"{name}: outcome unknown for a non-idempotent request")
    if isinstance(error, AuthenticationRequired) and attempt == 1:
        return RetryDecision(True, 0.0, f"{name}: re-authenticate and retry")
    if error.retry_at is not None or error.retry_after is not None:
        wait = _retry_after_seconds(error, now)
        if wait > policy.max_retry_after:
            return RetryDecision(
                False,
                wait,
                f"{name}: Retry-After {wait:.0f}s exceeds {policy.max_retry_after:.0f}s",
            )
        wait += wait * policy.retry_after_jitter * rng()
        return RetryDecision(True, wait, f"{name}: honouring Retry-After")
    delay = backoff_delay(attempt, policy.base, policy.cap, policy.jitter_ratio, rng)
    if isinstance(error, ApplicationGone):
        return RetryDecision(True, delay, f"{name}: rebuild the session, then retry")
    if isinstance(error, Throttled):
        return RetryDecision(True, delay, f"{name}: throttled without Retry-After")
    return RetryDecision(True, delay, f"{name}: transient")


def _retry_after_seconds(error: UcwaError, now: datetime) -> float:
    if error.retry_at is not None:
        return max(0.0, (error.retry_at - now).total_seconds())
    return max(0.0, error.retry_after or 0.0)
