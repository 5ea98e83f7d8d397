"""Liveness and readiness checks for the API process.

``readiness`` is the hook other components extend with their own checks.
"""

from __future__ import annotations

import redis


def readiness(client: redis.Redis) -> tuple[bool, list[str]]:
    """Whether the API can accept messages; ``reasons`` says why not, one line each."""
    reasons: list[str] = []
    try:
        if not client.ping():
            reasons.append("redis: ping failed")
    except redis.RedisError as exc:
        reasons.append(f"redis: {type(exc).__name__}")
    return not reasons, reasons
