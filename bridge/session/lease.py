"""A Redis lease that makes exactly one poller active per UCWA account.

Acquiring bumps a fencing counter; every write the poller makes is checked against it.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import redis

from bridge.config.redis_conn import watch_and_get
from bridge.config.redis_text import text

# A lease that already names this holder was taken by an acquisition whose answer was lost
# (Redis ran it and the connection dropped): it is this holder's, under the fence it got then.
_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
local mine = ARGV[1] .. '|'
if current and string.sub(current, 1, #mine) == mine then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(string.sub(current, #mine + 1))
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local fence = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[1] .. '|' .. fence, 'PX', ARGV[2])
  return fence
end
return 0
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


# Take a lapsed lease back with the same fence, only if nobody acquired it meanwhile (the counter
# still shows our fence): no other poller can have written, so nothing we hold is stale.
_RECLAIM = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if current == false and redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


class LeaseLost(RuntimeError):
    """Another poller holds the lease now; this one must stop acting."""


@dataclass(frozen=True)
class LeaseHolder:
    holder: str
    fence: int
    ttl_ms: int


class PollerLease:
    """``lease:<account>`` holds ``<holder>|<fence>`` with a TTL; ``fence:<account>`` counts."""

    def __init__(self, client: redis.Redis, account: str, ttl_s: float = 5.0) -> None:
        self.client = client
        self.key = f"poller:lease:{account}"
        self.fence_key = f"poller:fence:{account}"
        self.ttl_ms = int(ttl_s * 1000)
        self.holder = f"{uuid.uuid4().hex[:12]}"
        self.fence: int | None = None
        self._value: str | None = None
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._reclaim = client.register_script(_RECLAIM)

    def try_acquire(self) -> bool:
        fence = int(self._acquire(keys=[self.key, self.fence_key], args=[self.holder, self.ttl_ms]))
        if fence:
            self.fence, self._value = fence, f"{self.holder}|{fence}"
            return True
        return False

    def acquire(self, timeout: float | None = None, poll_s: float = 0.5) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.try_acquire():
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(poll_s)

    def renew(self) -> None:
        if self._value is None or not self._renew(keys=[self.key], args=[self._value, self.ttl_ms]):
            self.fence = self._value = None
            raise LeaseLost(self.key)

    def renew_or_reclaim(self) -> None:
        """Renew; if the lease lapsed (Redis was unavailable for longer than its TTL) take it back
        under the same fence when nobody else took it meanwhile. Raises LeaseLost otherwise."""
        value, fence = self._value, self.fence
        if value is None or fence is None:
            raise LeaseLost(self.key)
        if not self._reclaim(keys=[self.key, self.fence_key], args=[value, self.ttl_ms, fence]):
            self.fence = self._value = None
            raise LeaseLost(self.key)

    def release(self) -> None:
        """Delete the lease if it is still ours, so a standby can take over without waiting for
        the TTL. Forgets it locally even if Redis cannot be reached (the TTL ends it then)."""
        value, self.fence, self._value = self._value, None, None
        if value is not None:
            self._release(keys=[self.key], args=[value])

    @property
    def held(self) -> bool:
        return self._value is not None

    def check(self, pipe: redis.client.Pipeline) -> None:
        """WATCH the fencing counter inside ``pipe``; raise if another poller took over.

        The counter changes only on a successful acquisition, so renewals never abort the
        caller's transaction, while a takeover makes its EXEC fail with WatchError.
        """
        current = watch_and_get(pipe, self.fence_key)
        if self.fence is None or current is None or int(current) != self.fence:
            raise LeaseLost(self.key)

    @staticmethod
    def current(client: redis.Redis, account: str) -> LeaseHolder | None:
        key = f"poller:lease:{account}"
        value = client.get(key)
        if value is None:
            return None
        holder, _, fence = text(value).partition("|")
        return LeaseHolder(holder, int(fence or 0), int(client.pttl(key)))
