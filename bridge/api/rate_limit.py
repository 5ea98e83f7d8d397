"""Per-API-key rate limiting in Redis (GCRA), shared by every gunicorn worker and replica.

One script call per request decides and records it (for POST /messages, the intake's own call);
answers carry the IETF RateLimit fields (draft-ietf-httpapi-ratelimit-headers-09), refusals a 429.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from flask import g

from bridge.api.problems import FieldError, Problem, ProblemType
from bridge.config.settings import RateLimit
from bridge.outbound.intake import Gate

RATE_LIMITED = ProblemType("rate-limited", 429, "Too many requests for this API key")
POLICY_NAME = "per-key"
KEY_PREFIX = "ratelimit:"

# The generic cell rate algorithm keeps one number per key: the theoretical arrival time (TAT)
# of the next request. A request is allowed while TAT - now stays within the burst tolerance.
# Redis's own clock is used, so every API process agrees on "now". The function is also the
# gate of the intake script (bridge.outbound.intake.Gate), so a POST is decided and stored in
# one call.
# A request of ``cost`` (a broadcast: its recipients) is let in when the allowance holds
# ``admit`` of them (its cost, at most the burst, so a large one is not refused forever) and
# then pays its whole cost: the key's next requests wait until that is paid off.
GCRA_FUNCTION = """
local function gcra(key, interval, tolerance, cost, admit)
  local time = redis.call('TIME')
  local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
  local tat = math.max(tonumber(redis.call('GET', key) or '0'), now)
  local slack = now - (tat + interval * admit - tolerance)
  if slack < 0 then
    return {0, 0, tostring(-slack), tostring(tat - now)}
  end
  local new_tat = tat + interval * cost
  redis.call('SET', key, tostring(new_tat), 'PX', math.ceil((new_tat - now) * 1000))
  local left = math.max(0, math.floor((tolerance - (new_tat - now)) / interval + 1e-9))
  return {1, left, '0', tostring(new_tat - now)}
end
"""
_GCRA = GCRA_FUNCTION + "return gcra(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), 1, 1)\n"
_GATE = (
    GCRA_FUNCTION
    + "local function gate(key, args)\n"
    + "  return gcra(key, tonumber(args[1]), tonumber(args[2]), tonumber(args[3]),"
    + " tonumber(args[4]))\n"
    + "end\n"
)


@dataclass(frozen=True)
class Decision:
    """The limiter's answer for one request, and the header fields that tell the caller."""

    allowed: bool
    remaining: int
    retry_after_s: float
    reset_after_s: float
    limit: RateLimit

    @property
    def headers(self) -> dict[str, str]:
        window_s = math.ceil(self.limit.burst * self.limit.emission_interval_s)
        headers = {
            "RateLimit-Policy": f'"{POLICY_NAME}";q={self.limit.burst};w={window_s}',
            "RateLimit": (f'"{POLICY_NAME}";r={self.remaining};t={math.ceil(self.reset_after_s)}'),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after_s)))
        return headers

    def raise_if_refused(self) -> None:
        if not self.allowed:
            raise self.refusal()

    def refusal(self) -> Problem:
        """The 429 problem for a refused request."""
        return Problem(
            RATE_LIMITED,
            f"the rate limit of this API key ({self.limit}) is reached; retry after "
            f"{self.headers['Retry-After']} s",
            errors=[FieldError("Authorization", "rate limit of this API key exceeded", "rate")],
            headers=self.headers,
        )


class RateLimiter:
    """Decides per API key id; ``limits`` overrides ``default`` for single keys (None: none)."""

    def __init__(
        self,
        client: redis.Redis,
        default: RateLimit | None,
        limits: Mapping[str, RateLimit | None] | None = None,
    ) -> None:
        self._default = default
        self._limits = dict(limits or {})
        self._script = client.register_script(_GCRA)

    def limit_for(self, key_id: str) -> RateLimit | None:
        return self._limits.get(key_id, self._default)

    def check(self, key_id: str) -> Decision | None:
        """Count one request of ``key_id``; None when the key is not limited."""
        limit = self.limit_for(key_id)
        if limit is None:
            return None
        interval = limit.emission_interval_s
        reply = self._script(
            keys=[KEY_PREFIX + key_id], args=[repr(interval), repr(interval * limit.burst)]
        )
        return _decision(reply, limit)

    def gate(self, key_id: str, cost: int = 1) -> Gate | None:
        """The same check, to run inside the intake's script (``Intake.submit_gated``); None
        when the key is not limited. Read its reply with ``decide``. A request of ``cost``
        (a broadcast: one per recipient) goes when the allowance holds ``cost``, or all of
        the burst for a larger one, and then spends all of ``cost``."""
        limit = self.limit_for(key_id)
        if limit is None:
            return None
        interval = limit.emission_interval_s
        admit = min(cost, limit.burst)
        arguments = (repr(interval), repr(interval * limit.burst), str(cost), str(admit))
        return Gate(_GATE, KEY_PREFIX + key_id, arguments)

    def decide(self, key_id: str, reply: Sequence[Any]) -> Decision:
        """The ``Decision`` in the reply of ``key_id``'s gate."""
        limit = self.limit_for(key_id)
        if limit is None:
            raise ValueError(f"{key_id} is not rate limited, so it has no gate")
        return _decision(reply, limit)


def count_request(limiter: RateLimiter, key_id: str) -> None:
    """Count one request of ``key_id`` on its own: its RateLimit fields go on the answer
    (``flask.g.rate_limit_headers``), and beyond the limit a 429 is raised."""
    decision = limiter.check(key_id)
    if decision is not None:
        g.rate_limit_headers = decision.headers
        decision.raise_if_refused()


def _decision(reply: Sequence[Any], limit: RateLimit) -> Decision:
    """The ``Decision`` in a GCRA reply: allowed, remaining, retry after, reset after."""
    allowed, remaining, retry_after, reset_after = reply
    return Decision(
        allowed=bool(allowed),
        remaining=int(remaining),
        retry_after_s=float(retry_after),
        reset_after_s=float(reset_after),
        limit=limit,
    )
