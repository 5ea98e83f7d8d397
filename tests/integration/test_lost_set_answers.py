"""A key taken with SET NX whose answer was lost: Redis ran the command, the connection dropped
before the reply came, and redis-py sent the command again (the quick retries every role
connects with). The retry finds the key taken, by the very call that retries: the Idempotency-Key
claim and the poller's lease must take it as theirs, not as someone else's (a 409 for the
request's own key until the claim's TTL; no active poller until the lease's TTL). The send lock's
case is in ``tests/outbound/test_claim_answer_lost.py``.

A real redis-server behind a proxy that lets one command through, drops its reply and closes
that one connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import redis

from bridge.api.idempotency import Claim, IdempotencyStore, StoredResponse
from bridge.config.redis_conn import connect
from bridge.outbound.messages import MessageRecord
from bridge.session import lease as lease_module
from bridge.session.lease import PollerLease
from tests.redis_cutting_proxy import CuttingProxy


@pytest.fixture()
def proxy(redis_url: str) -> Iterator[CuttingProxy]:
    port = urlsplit(redis_url).port
    assert port is not None
    cutting = CuttingProxy(port, every=False)  # one connection drops; Redis stays up
    yield cutting
    cutting.close()


def never_render(record: MessageRecord) -> StoredResponse:
    raise AssertionError("not expected to complete")


def test_an_idempotency_claim_whose_answer_was_lost_is_this_claim(
    proxy: CuttingProxy, redis_client: redis.Redis
) -> None:
    store = IdempotencyStore(connect(proxy.url()), ttl_s=600, lock_ttl_s=60)
    proxy.cut_when(lambda data: b"idem:" in data and b"NX" in data)

    claim = store.begin("key-1", "order-7", "fingerprint", never_render)

    assert proxy.cuts == 1
    assert isinstance(claim, Claim)
    claim.release()  # it is ours: giving it back frees the key
    assert not redis_client.exists(claim.key)


def test_a_lease_whose_acquisition_answer_was_lost_is_held(
    proxy: CuttingProxy, redis_client: redis.Redis
) -> None:
    redis_client.script_load(lease_module._ACQUIRE)  # so the first EVALSHA runs the script
    lease = PollerLease(connect(proxy.url()), "bot", ttl_s=30)
    proxy.cut_when(lambda data: b"EVALSHA" in data and b"poller:lease:bot" in data)

    assert lease.try_acquire()

    assert proxy.cuts == 1
    assert lease.fence == int(redis_client.get("poller:fence:bot") or 0) == 1
    holder = PollerLease.current(redis_client, "bot")
    assert holder is not None and (holder.holder, holder.fence) == (lease.holder, 1)
    lease.renew()  # the lease it holds is the one in Redis
    assert not PollerLease(redis_client, "bot").try_acquire()  # and nobody else's
