"""stage_event writes nothing unless the caller's transaction commits."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import redis
from rq import Queue

from bridge.webhooks.endpoints import WebhookEndpoint
from bridge.webhooks.jobs import QUEUE_NAME
from bridge.webhooks.log import Keys
from bridge.webhooks.outbox import new_event, stage_event
from tests.webhooks.harness import new_secret

ENDPOINTS = [
    WebhookEndpoint("a", "https://a.example/hook", [new_secret()]),
    WebhookEndpoint("b", "https://b.example/hook", [new_secret()]),
    WebhookEndpoint("off", "https://c.example/hook", [new_secret()], enabled=False),
]


def event() -> dict[str, object]:
    return new_event("message.received", {"text": "hi"}, datetime.now(UTC))


def test_commit_writes_cursor_records_and_jobs_together(redis_client: redis.Redis) -> None:
    evt = event()
    with redis_client.pipeline() as pipe:
        pipe.watch("poller:cursor")
        pipe.multi()
        pipe.set("poller:cursor", "next-2")
        ids = stage_event(pipe, evt, ENDPOINTS)
        pipe.execute()

    assert len(ids) == 2  # the disabled-in-config endpoint gets nothing
    assert redis_client.get("poller:cursor") == b"next-2"
    assert redis_client.exists(Keys.event(str(evt["id"])))
    queue = Queue(QUEUE_NAME, connection=redis_client)
    assert sorted(queue.job_ids) == sorted(f"{i}-t1" for i in ids)
    job = queue.fetch_job(f"{ids[0]}-t1")
    assert job is not None and job.func_name == "workers.webhook_jobs.deliver_webhook"
    assert job.args == [ids[0]] or job.args == (ids[0],)


def test_aborted_transaction_leaves_nothing(redis_client: redis.Redis) -> None:
    evt = event()
    with redis_client.pipeline() as pipe:
        pipe.watch("poller:cursor")
        pipe.multi()
        pipe.set("poller:cursor", "next-2")
        ids = stage_event(pipe, evt, ENDPOINTS)
        redis_client.set("poller:cursor", "someone-else")  # a competing poller wins
        with pytest.raises(redis.WatchError):
            pipe.execute()

    assert ids
    assert redis_client.get("poller:cursor") == b"someone-else"
    assert Queue(QUEUE_NAME, connection=redis_client).count == 0
    assert not redis_client.exists(Keys.event(str(evt["id"])))
    assert redis_client.keys("webhooks:*") == []
    assert redis_client.keys("rq:job:*") == []


def test_discarded_transaction_leaves_nothing(redis_client: redis.Redis) -> None:
    with redis_client.pipeline() as pipe:
        pipe.multi()
        stage_event(pipe, event(), ENDPOINTS)
        pipe.reset()
    assert redis_client.keys("*") == []


def test_refuses_a_watching_pipeline_outside_multi(redis_client: redis.Redis) -> None:
    with redis_client.pipeline() as pipe:
        pipe.watch("poller:cursor")
        with pytest.raises(ValueError, match="multi"):
            stage_event(pipe, event(), ENDPOINTS)
    assert redis_client.keys("*") == []


def test_new_event_envelope() -> None:
    now = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
    first = new_event("message.delivered", {"message_id": "m1"}, now)
    second = new_event("message.delivered", {"message_id": "m1"}, now)
    assert first["id"] != second["id"] and str(first["id"]).startswith("evt_")
    assert first["timestamp"] == "2024-05-06T07:08:09.123Z"
    assert first["type"] == "message.delivered" and first["data"] == {"message_id": "m1"}
    with pytest.raises(ValueError):
        new_event("message.bogus", {}, now)


def test_staging_costs_one_transaction_and_asks_the_server_its_version_once(
    redis_client: redis.Redis,
) -> None:
    """RQ asks the server for its version once per Queue object; staging builds its Queue per
    event, so without a cache every staged event (an inbound IM, a status change) cost one more
    round trip: an INFO, the poller's biggest CPU cost per IM."""
    redis_client.config_resetstat()
    for _ in range(20):
        with redis_client.pipeline() as pipe:
            pipe.multi()
            stage_event(pipe, event(), ENDPOINTS)
            pipe.execute()

    stats = redis_client.info("commandstats")
    assert stats.get("cmdstat_info", {}).get("calls", 0) <= 1
    assert stats["cmdstat_exec"]["calls"] == 20
    assert Queue(QUEUE_NAME, connection=redis_client).count == 40
