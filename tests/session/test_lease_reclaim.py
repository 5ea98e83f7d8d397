"""A lapsed poller lease is taken back under the same fence only if nobody held it meanwhile."""

from __future__ import annotations

import time

import pytest
import redis

from bridge.session.lease import LeaseLost, PollerLease


def lapse(lease: PollerLease) -> None:
    time.sleep(lease.ttl_ms / 1000 + 0.1)


def test_a_lapsed_lease_nobody_took_is_reclaimed_with_its_fence(
    redis_client: redis.Redis,
) -> None:
    lease = PollerLease(redis_client, "bot", ttl_s=0.2)
    assert lease.try_acquire()
    fence = lease.fence
    lapse(lease)
    assert PollerLease.current(redis_client, "bot") is None
    lease.renew_or_reclaim()
    holder = PollerLease.current(redis_client, "bot")
    assert holder is not None and holder.fence == fence == lease.fence
    assert not PollerLease(redis_client, "bot", ttl_s=0.2).try_acquire()


def test_a_lease_another_poller_held_meanwhile_is_lost(redis_client: redis.Redis) -> None:
    mine = PollerLease(redis_client, "bot", ttl_s=0.2)
    assert mine.try_acquire()
    lapse(mine)
    other = PollerLease(redis_client, "bot", ttl_s=0.2)
    assert other.try_acquire()
    other.release()  # free again, but the fence moved on: our view may be stale
    with pytest.raises(LeaseLost):
        mine.renew_or_reclaim()
    assert not mine.held


def test_a_held_lease_is_renewed(redis_client: redis.Redis) -> None:
    lease = PollerLease(redis_client, "bot", ttl_s=0.3)
    assert lease.try_acquire()
    for _ in range(4):
        time.sleep(0.15)
        lease.renew_or_reclaim()
    holder = PollerLease.current(redis_client, "bot")
    assert holder is not None and holder.holder == lease.holder
