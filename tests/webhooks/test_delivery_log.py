"""The delivery log's claim and conclude on real Redis: each check of a claim, and the one-call
conclude leaving Redis exactly as the WATCH/MULTI transaction does.

Claim and the conclude of a try that needs no job are one script call each (they were three
round trips each); a try whose outcome schedules a job still concludes in a transaction.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.webhooks.log import (
    Attempt,
    Claimed,
    DeliveryLog,
    DeliveryRecord,
    DeliveryStatus,
    Keys,
    NotDue,
    Skipped,
)

NOW = 1_800_000_000_000
LEASE = 120_000


def staged(client: redis.Redis, log: DeliveryLog, **fields: Any) -> DeliveryRecord:
    record = DeliveryRecord(
        id=fields.pop("id", "dlv_1"),
        event_id="evt_1",
        event_type="message.received",
        endpoint_id="ops",
        status=DeliveryStatus.PENDING,
        created_ms=NOW - 5_000,
        updated_ms=NOW - 5_000,
        next_attempt_ms=NOW - 5_000,
    )
    record = replace(record, **fields)
    with client.pipeline() as pipe:
        log.stage(pipe, record, b'{"id": "evt_1"}')
        pipe.execute()
    return record


def state(client: redis.Redis, delivery_id: str) -> dict[str, Any]:
    """Everything the log keeps about one delivery, comparable across runs."""
    indexes = {
        status.value: client.zscore(Keys.by_status(status), delivery_id)
        for status in DeliveryStatus
    }
    return {
        "record": client.hgetall(Keys.delivery(delivery_id)),
        "attempts": client.lrange(Keys.attempts(delivery_id), 0, -1),
        "indexes": indexes,
        "dead": client.zscore(Keys.dead, delivery_id),
        "ttls": [
            client.ttl(Keys.delivery(delivery_id)) > 0,
            client.ttl(Keys.event("evt_1")) > 0,
            client.ttl(Keys.attempts(delivery_id)) != -1,
        ],
    }


@pytest.fixture()
def log(redis_client: redis.Redis) -> DeliveryLog:
    return DeliveryLog(redis_client, retention_s=3600)


def test_a_claim_takes_the_try_once(redis_client: redis.Redis, log: DeliveryLog) -> None:
    staged(redis_client, log)

    first = log.claim("dlv_1", NOW, LEASE)
    again = log.claim("dlv_1", NOW, LEASE)

    assert isinstance(first, Claimed)
    assert first.record.started == 1 and first.record.lease_until_ms == NOW + LEASE
    assert first.record.status is DeliveryStatus.PENDING and first.record.updated_ms == NOW
    assert again == Skipped("try already taken")


def test_a_claim_refuses_what_is_missing_final_or_not_due(
    redis_client: redis.Redis, log: DeliveryLog
) -> None:
    assert log.claim("dlv_nothing", NOW, LEASE) == Skipped("missing")
    staged(redis_client, log, id="dlv_done", status=DeliveryStatus.SUCCEEDED)
    assert log.claim("dlv_done", NOW, LEASE) == Skipped("already succeeded")
    staged(redis_client, log, id="dlv_later", try_no=3, started=2, next_attempt_ms=NOW + 60_000)
    assert log.claim("dlv_later", NOW, LEASE) == NotDue(3, NOW + 60_000)
    # Up to a second early is due: the scheduler keeps whole seconds.
    staged(redis_client, log, id="dlv_soon", next_attempt_ms=NOW + 900)
    assert isinstance(log.claim("dlv_soon", NOW, LEASE), Claimed)


def test_claiming_a_failed_try_moves_it_back_to_pending(
    redis_client: redis.Redis, log: DeliveryLog
) -> None:
    staged(redis_client, log, status=DeliveryStatus.FAILED, try_no=2, started=1)

    claimed = log.claim("dlv_1", NOW, LEASE)

    assert isinstance(claimed, Claimed) and claimed.record.started == 2
    assert redis_client.zscore(Keys.by_status(DeliveryStatus.FAILED), "dlv_1") is None
    assert redis_client.zscore(Keys.by_status(DeliveryStatus.PENDING), "dlv_1") is not None


def test_a_conclude_after_another_run_took_the_try_writes_nothing(
    redis_client: redis.Redis, log: DeliveryLog
) -> None:
    staged(redis_client, log)
    claim = log.claim("dlv_1", NOW, LEASE)
    assert isinstance(claim, Claimed)
    # An operator's requeue and a new run claimed try 2 meanwhile.
    redis_client.hset(Keys.delivery("dlv_1"), mapping={"try_no": 2, "started": 2})
    before = state(redis_client, "dlv_1")
    done = replace(claim.record, status=DeliveryStatus.SUCCEEDED, next_attempt_ms=None)

    assert not log.conclude(claim.record, done, Attempt(NOW, 1, 200, None, 5))
    assert state(redis_client, "dlv_1") == before


OUTCOMES = st.sampled_from([DeliveryStatus.SUCCEEDED, DeliveryStatus.DEAD])


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    final=OUTCOMES,
    with_attempt=st.booleans(),
    status_code=st.sampled_from([200, 204, 400, 410, None]),
    earlier=st.integers(0, 5),
    reason=st.sampled_from(["", "endpoint_disabled", "event_expired", "status 400"]),
)
def test_the_one_call_conclude_leaves_redis_as_the_transaction_does(
    redis_client: redis.Redis,
    final: DeliveryStatus,
    with_attempt: bool,
    status_code: int | None,
    earlier: int,
    reason: str,
) -> None:
    log = DeliveryLog(redis_client, retention_s=3600)
    results = []
    for after in (None, lambda pipe: None):  # no job: one script call; with one: WATCH/MULTI
        redis_client.flushdb()
        staged(redis_client, log, attempt_count=earlier)
        claim = log.claim("dlv_1", NOW, LEASE)
        assert isinstance(claim, Claimed)
        updated = replace(
            claim.record,
            status=final,
            next_attempt_ms=None,
            reason=reason,
            updated_ms=NOW + 40,
        )
        attempt = Attempt(NOW + 10, 1, status_code, None, 30, "ok") if with_attempt else None
        assert log.conclude(claim.record, updated, attempt, after)
        results.append(state(redis_client, "dlv_1"))
    assert results[0] == results[1]
    concluded = results[0]
    assert concluded["record"][b"status"] == final.value.encode()
    assert int(concluded["record"][b"attempt_count"]) == earlier + (1 if with_attempt else 0)
    assert concluded["indexes"][DeliveryStatus.PENDING.value] is None
    assert (concluded["dead"] is not None) == (final is DeliveryStatus.DEAD)
