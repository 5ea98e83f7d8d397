"""How poller processes share the accounts: who is a live member of the pool, how many accounts
each serves, and which ones it takes or gives up. The rules are pure; ``Membership`` is their
Redis shell (a sorted set of members scored by their last heartbeat).

Ownership itself is never decided here: a member only *tries* the per-account ``PollerLease``,
whose fencing counter alone guarantees one owner per account. A plan that two members compute
differently for a moment costs at most a lease attempt that fails or a handover too many.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass

import redis

from bridge.config.redis_text import text

MEMBERS_KEY = "pollers:members"

# Heartbeat, drop members long gone (they never come back under the same id), list the live ones.
# Redis's clock, not the members': their clocks need not agree.
_BEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
return redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[2]), '+inf')
"""


def member_id(joined: float | None = None) -> str:
    """A new member's id. It starts with the time it joined, so that sorting members by id puts
    the longest-standing first: a joining process ranks last and never takes the one extra
    account an incumbent holds (one account, two processes: the standby stays a standby)."""
    stamp = int((time.time() if joined is None else joined) * 1000)
    host = socket.gethostname().replace("|", "-") or "host"
    return f"{stamp:013d}-{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def target(accounts: int, members: Sequence[str], member: str) -> int:
    """How many accounts ``member`` should serve: ``accounts`` split evenly over the live
    ``members``, the remainder one each to the first members by id."""
    ranked = sorted(set(members) | {member})
    share, extra = divmod(accounts, len(ranked))
    return share + (1 if ranked.index(member) < extra else 0)


def preference(account: str, member: str) -> int:
    """Rendezvous hash: how much ``member`` wants ``account``. Stable, and different per member,
    so members racing for free accounts mostly try different ones first."""
    digest = hashlib.blake2b(f"{member}\n{account}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@dataclass(frozen=True)
class Plan:
    """What one member does this round: stop serving ``release``; try ``acquire`` in order
    until ``needed`` of them were taken; try every one of ``rescue`` whatever its target."""

    target: int
    release: tuple[str, ...] = ()
    acquire: tuple[str, ...] = ()
    needed: int = 0
    rescue: tuple[str, ...] = ()


def plan(
    accounts: Sequence[str],
    member: str,
    members: Sequence[str],
    holders: Mapping[str, str | None],
    serving: Set[str],
    busy: Set[str] = frozenset(),
    overdue: Set[str] = frozenset(),
) -> Plan:
    """The next step of ``member`` towards its target.

    ``holders``: each account's lease holder (None: free); ``serving``: the accounts this member
    serves and keeps; ``busy``: accounts whose poller here has not finished stopping (neither
    free nor taken); ``overdue``: free accounts nobody took for too long, which anyone takes.
    It gives accounts up, least preferred first, only when another live member exists to take
    them (a member alone keeps whatever it serves).
    """
    goal = target(len(accounts), members, member)
    mine = sorted(serving, key=lambda a: preference(a, member))
    free = [a for a in accounts if holders.get(a) is None and a not in serving | busy]
    free.sort(key=lambda a: preference(a, member), reverse=True)
    rescue = tuple(a for a in free if a in overdue)
    if len(mine) > goal and set(members) - {member}:
        # Targets add up to the number of accounts: another member is short and takes them.
        return Plan(goal, release=tuple(mine[: len(mine) - goal]))
    needed = max(goal - len(mine), 0)
    return Plan(goal, acquire=tuple(free) if needed else (), needed=needed, rescue=rescue)


class Membership:
    """This process's entry in ``pollers:members``: heartbeats, the live members, leaving."""

    def __init__(self, client: redis.Redis, ttl_s: float, member: str | None = None) -> None:
        self.client = client
        self.member = member or member_id()
        self.ttl_ms = int(ttl_s * 1000)
        self._beat = client.register_script(_BEAT)

    def beat(self) -> list[str]:
        """Heartbeat; the live members (heard from within one TTL), sorted, this one included."""
        live = self._beat(
            keys=[MEMBERS_KEY], args=[self.member, self.ttl_ms, max(self.ttl_ms * 20, 60_000)]
        )
        return sorted({text(m) for m in live} | {self.member})

    def leave(self) -> None:
        self.client.zrem(MEMBERS_KEY, self.member)

    def holders(self, lease_keys: Iterable[str]) -> list[str | None]:
        """The member holding each lease (``<holder>|<fence>``), None where it is free."""
        keys = list(lease_keys)
        if not keys:
            return []
        return [None if v is None else text(v).partition("|")[0] for v in self.client.mget(keys)]
