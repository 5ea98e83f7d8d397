"""End-to-end deliveries: real Redis, real RQ worker and scheduler, a real HTTP receiver."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
import redis
from standardwebhooks import Webhook, WebhookVerificationError

from bridge.webhooks.delivery import Deliverer
from bridge.webhooks.endpoint_status import EndpointStatusStore
from bridge.webhooks.endpoints import load_endpoints
from bridge.webhooks.jobs import DeliveryJobs, job_id_for
from bridge.webhooks.log import Keys
from bridge.webhooks.settings import WebhookSettings
from tests.webhooks.harness import (
    attempts,
    configure,
    new_secret,
    publish,
    record,
    run_deliveries,
)
from tests.webhooks.receiver import Reply, WebhookReceiver


def endpoint(receiver: WebhookReceiver, **extra: object) -> dict[str, object]:
    return {
        "id": "ops",
        "url": receiver.url(),
        "secrets": [new_secret()],
        "allow_private": True,
        **extra,
    }


def test_signed_post_verifies_with_each_rotating_secret(
    redis_client: redis.Redis, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = new_secret(), new_secret()
    endpoints = configure(monkeypatch, endpoint(receiver, secrets=[old, new]))
    event, ids = publish(redis_client, endpoints, data={"text": "héllo"})
    run_deliveries(redis_client)

    [got] = receiver.received
    assert got.method == "POST" and got.path == "/hook"
    assert got.headers["content-type"] == "application/json"
    assert got.headers["user-agent"].startswith("ucwa-bridge-webhooks/")
    assert got.headers["webhook-id"] == event["id"]
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 30
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        assert Webhook(secret).verify(got.body, got.headers) == event
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(got.body, got.headers)
    assert record(redis_client, ids[0]).status == "succeeded"


def test_single_secret_signature_verifies(
    redis_client: redis.Redis, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = new_secret()
    monkeypatch.setenv("BRIDGE_WEBHOOK_URL", receiver.url())
    monkeypatch.setenv("BRIDGE_WEBHOOK_SECRET", secret)
    monkeypatch.setenv("BRIDGE_WEBHOOK_ALLOW_PRIVATE", "true")
    publish(redis_client, load_endpoints(os.environ))
    run_deliveries(redis_client)
    [got] = receiver.received
    assert " " not in got.headers["webhook-signature"]
    assert Webhook(secret).verify(got.body, got.headers)["data"] == {"text": "hello"}


def test_500_then_200_retries_through_the_scheduler_with_the_same_webhook_id(
    redis_client: redis.Redis, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_WEBHOOK_SCHEDULE_S", "1")
    endpoints = configure(monkeypatch, endpoint(receiver))
    receiver.script(Reply(500, body=b"x" * 5000), Reply(200, body=b"thanks"))
    event, [delivery_id] = publish(redis_client, endpoints)
    run_deliveries(redis_client, wait_scheduled_s=3)

    first, second = receiver.received
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == event["id"]
    assert first.body == second.body
    assert second.at - first.at >= 0.9  # waited on RQ's scheduler, not immediately
    assert record(redis_client, delivery_id).status == "succeeded"
    failed, ok = attempts(redis_client, delivery_id)
    assert (failed["status_code"], ok["status_code"]) == (500, 200)
    assert len(failed["response_excerpt"]) == 1024
    assert ok["response_excerpt"] == "thanks"
    assert all(a["latency_ms"] >= 0 and a["error"] is None for a in (failed, ok))


def test_retry_after_on_429_sets_the_scheduled_time(
    redis_client: redis.Redis, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoints = configure(monkeypatch, endpoint(receiver))
    receiver.script(Reply(429, headers={"Retry-After": "120"}))
    _, [delivery_id] = publish(redis_client, endpoints)
    before = time.time()
    run_deliveries(redis_client)

    assert len(receiver.received) == 1  # the schedule's immediate retry waits for Retry-After
    rec = record(redis_client, delivery_id)
    assert rec.status == "failed" and rec.reason == "http_429"
    assert rec.next_attempt_ms is not None
    assert before + 119 <= rec.next_attempt_ms / 1000 <= time.time() + 121
    scheduled = DeliveryJobs(redis_client).scheduled_at(job_id_for(delivery_id, 2))
    assert scheduled is not None
    assert before + 119 <= scheduled.timestamp() <= time.time() + 122


def test_410_disables_the_endpoint_and_later_events_are_dead_lettered_unsent(
    redis_client: redis.Redis, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoints = configure(monkeypatch, endpoint(receiver))
    receiver.script(Reply(410))
    _, [gone] = publish(redis_client, endpoints)
    run_deliveries(redis_client)
    assert len(receiver.received) == 1
    assert (record(redis_client, gone).status, record(redis_client, gone).reason) == (
        "dead",
        "endpoint_gone",
    )
    state = EndpointStatusStore(redis_client).disabled("ops")
    assert state is not None and state.delivery_id == gone

    _, [later] = publish(redis_client, endpoints)
    run_deliveries(redis_client)
    assert len(receiver.received) == 1  # no request to a disabled endpoint
    later_rec = record(redis_client, later)
    assert (later_rec.status, later_rec.reason) == ("dead", "endpoint_disabled")
    assert attempts(redis_client, later) == []
    assert redis_client.zscore(Keys.dead, later) is not None


def test_slow_receiver_times_out_then_the_retry_succeeds(
    redis_client: redis.Redis, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_WEBHOOK_TIMEOUT_S", "0.5")
    endpoints = configure(monkeypatch, endpoint(receiver))
    receiver.script(Reply(200, delay_s=2))
    _, [delivery_id] = publish(redis_client, endpoints)
    run_deliveries(redis_client)

    assert len(receiver.received) == 2
    slow, ok = attempts(redis_client, delivery_id)
    assert slow["status_code"] is None and slow["error"].startswith("timeout")
    assert 400 <= slow["latency_ms"] < 1900
    assert ok["status_code"] == 200
    assert record(redis_client, delivery_id).status == "succeeded"


def test_redirects_are_not_followed(
    redis_client: redis.Redis, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_WEBHOOK_SCHEDULE_S", "0")
    endpoints = configure(monkeypatch, endpoint(receiver))
    receiver.default = Reply(302, headers={"Location": receiver.url("/moved")})
    _, [delivery_id] = publish(redis_client, endpoints)
    run_deliveries(redis_client)

    assert receiver.paths() == ["/hook", "/hook"]  # /moved never reached
    assert [a["status_code"] for a in attempts(redis_client, delivery_id)] == [302, 302]
    rec = record(redis_client, delivery_id)
    assert (rec.status, rec.reason) == ("dead", "retries_exhausted")


def test_exhausted_schedule_dead_letters(
    redis_client: redis.Redis, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoints = configure(monkeypatch, endpoint(receiver))
    receiver.default = Reply(500)
    _, [delivery_id] = publish(redis_client, endpoints)
    run_deliveries(redis_client)

    assert len(receiver.received) == 3  # first try + the two retries of "0,0"
    rec = record(redis_client, delivery_id)
    assert (rec.status, rec.reason, rec.attempt_count) == ("dead", "retries_exhausted", 3)
    assert redis_client.zscore(Keys.dead, delivery_id) is not None


def test_event_type_filter_and_default_types(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    with WebhookReceiver() as everything, WebhookReceiver() as typing_only:
        endpoints = configure(
            monkeypatch,
            {
                "id": "all",
                "url": everything.url(),
                "secrets": [new_secret()],
                "allow_private": True,
            },
            {
                "id": "typing",
                "url": typing_only.url(),
                "secrets": [new_secret()],
                "event_types": ["conversation.typing"],
                "allow_private": True,
            },
        )
        _, typing_ids = publish(redis_client, endpoints, "conversation.typing")
        _, received_ids = publish(redis_client, endpoints, "message.received")
        run_deliveries(redis_client)

        assert len(typing_ids) == len(received_ids) == 1
        [t] = typing_only.received
        [m] = everything.received
        assert json.loads(t.body)["type"] == "conversation.typing"
        assert json.loads(m.body)["type"] == "message.received"


def test_ssrf_guard_refuses_loopback_without_sending(
    redis_client: redis.Redis, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoints = configure(monkeypatch, endpoint(receiver, allow_private=False))
    _, [delivery_id] = publish(redis_client, endpoints)
    run_deliveries(redis_client)

    assert receiver.received == []
    rec = record(redis_client, delivery_id)
    assert (rec.status, rec.reason) == ("dead", "ssrf_blocked")
    [attempt] = attempts(redis_client, delivery_id)
    assert "127.0.0.1" in attempt["error"] and "loopback" in attempt["error"]


def test_global_allow_private_setting_permits_loopback(
    redis_client: redis.Redis, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_WEBHOOK_ALLOW_PRIVATE", "true")
    endpoints = configure(monkeypatch, endpoint(receiver, allow_private=False))
    _, [delivery_id] = publish(redis_client, endpoints)
    run_deliveries(redis_client)
    assert len(receiver.received) == 1
    assert record(redis_client, delivery_id).status == "succeeded"


def test_a_try_run_twice_sends_once(
    redis_client: redis.Redis, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoints = configure(monkeypatch, endpoint(receiver))
    _, [delivery_id] = publish(redis_client, endpoints)
    with redis_client.pipeline() as pipe:  # the same try's job lands on the queue again
        DeliveryJobs(redis_client).enqueue_now(pipe, delivery_id, 1)
        pipe.execute()
    run_deliveries(redis_client)

    assert len(receiver.received) == 1
    assert len(attempts(redis_client, delivery_id)) == 1


def test_concurrent_runs_of_one_try_send_once(
    redis_client: redis.Redis, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoints = configure(monkeypatch, endpoint(receiver))
    receiver.script(
        Reply(200, delay_s=0.5)
    )  # the first run is still sending when the second starts
    _, [delivery_id] = publish(redis_client, endpoints)
    settings = WebhookSettings.from_env(os.environ)
    reports: list[str] = []

    def run() -> None:
        reports.append(Deliverer(redis_client, settings, endpoints).deliver(delivery_id).action)

    first = threading.Thread(target=run)
    first.start()
    receiver.wait_for(1)
    run()
    first.join()

    assert sorted(reports) == ["skipped", "succeeded"]
    assert len(receiver.received) == 1
    assert len(attempts(redis_client, delivery_id)) == 1
