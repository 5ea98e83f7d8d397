"""Readiness and health per role against a real Redis: what each one says, and why.

Worker checks register real RQ workers; ``check`` is exercised as a probe would run it.
"""

from __future__ import annotations

import io
import socket
import time
from datetime import UTC, datetime, timedelta

import redis
from rq import SimpleWorker

from bridge.config.embedded_redis import free_port
from bridge.observability.health import (
    api_readiness,
    check,
    poller_health,
    worker_health,
)
from bridge.session.lease import PollerLease
from bridge.session.store import Session, SessionStore

ACCOUNT = "sip:bot@contoso.com"


def publish(client: redis.Redis, state: str = "ready", pulse_age: float | None = 1.0) -> None:
    store = SessionStore(client, ACCOUNT)
    store.publish(
        Session(
            account=ACCOUNT,
            generation=1,
            base_url="http://127.0.0.1:1",
            application_href="/ucwa/oauth/v1/applications/1",
            token="cwt=x",
            token_expires_at=time.time() + 3600,
            token_url="",
            state=state,
        )
    )
    if pulse_age is not None:
        store.pulse(time.time() - pulse_age)


def test_no_poller_at_all(redis_client: redis.Redis) -> None:
    ok, reasons = api_readiness(redis_client, ACCOUNT)
    assert not ok
    assert reasons == [
        f"poller: no live poller holds the lease for {ACCOUNT}",
        "session: no UCWA session has been published",
        "poller: no event GET has completed yet",
    ]


def test_ready_when_lease_session_and_pulse_are_fresh(redis_client: redis.Redis) -> None:
    assert PollerLease(redis_client, ACCOUNT).try_acquire()
    publish(redis_client)
    assert api_readiness(redis_client, "SIP:Bot@Contoso.com") == (True, [])
    assert poller_health(redis_client, ACCOUNT) == (True, [])


def test_stale_pulse_and_dead_lease(redis_client: redis.Redis) -> None:
    publish(redis_client, pulse_age=1000)  # the poller died: its lease expired
    ok, reasons = api_readiness(redis_client, ACCOUNT, max_pulse_age_s=240)
    assert not ok
    assert reasons == [
        f"poller: no live poller holds the lease for {ACCOUNT}",
        "poller: last event GET completed 1000s ago (limit 240s)",
    ]


def test_threshold_is_configurable(redis_client: redis.Redis) -> None:
    assert PollerLease(redis_client, ACCOUNT).try_acquire()
    publish(redis_client, pulse_age=30)
    assert api_readiness(redis_client, ACCOUNT, max_pulse_age_s=60)[0]
    assert api_readiness(redis_client, ACCOUNT, max_pulse_age_s=10)[1] == [
        "poller: last event GET completed 30s ago (limit 10s)"
    ]


def test_session_not_ready(redis_client: redis.Redis) -> None:
    assert PollerLease(redis_client, ACCOUNT).try_acquire()
    publish(redis_client, state="rebuilding")
    assert api_readiness(redis_client, ACCOUNT) == (False, ["session: state is rebuilding"])


def test_redis_unreachable() -> None:
    client = redis.Redis(port=free_port(), socket_connect_timeout=0.2)
    ok, reasons = api_readiness(client, ACCOUNT)
    assert not ok and reasons == ["redis: unreachable (ConnectionError)"]


def test_worker_registered_and_beating(redis_client: redis.Redis) -> None:
    assert worker_health(redis_client) == (False, ["worker: no RQ worker is registered"])
    worker = SimpleWorker(["send", "webhooks"], connection=redis_client)
    worker.register_birth()
    try:
        assert worker_health(redis_client) == (True, [])
        assert worker_health(redis_client, hostname=socket.gethostname()) == (True, [])
        assert worker_health(redis_client, hostname="elsewhere") == (
            False,
            ["worker: no RQ worker is registered on elsewhere"],
        )
        later = datetime.now(UTC) + timedelta(seconds=500)
        ok, reasons = worker_health(redis_client, max_heartbeat_age_s=120, now=later)
        assert not ok and reasons[0].startswith(f"worker: {worker.name} last heartbeat 50")
    finally:
        worker.register_death()


def test_worker_on_the_wrong_queues(redis_client: redis.Redis) -> None:
    worker = SimpleWorker(["send"], connection=redis_client)
    worker.register_birth()
    try:
        assert worker_health(redis_client) == (
            False,
            [f"worker: {worker.name} does not listen on webhooks"],
        )
    finally:
        worker.register_death()


def test_check_exit_codes_and_output(redis_client: redis.Redis, redis_url: str) -> None:
    out = io.StringIO()
    assert check("poller", redis_url, ACCOUNT, environ={}, out=out) == 1
    assert "no live poller holds the lease" in out.getvalue()

    assert PollerLease(redis_client, ACCOUNT).try_acquire()
    publish(redis_client, pulse_age=100)
    out = io.StringIO()
    assert check("api", redis_url, ACCOUNT, environ={}, out=out) == 0
    assert out.getvalue() == "ok\n"
    out = io.StringIO()
    env = {"BRIDGE_POLLER_MAX_LAG_S": "50"}
    assert check("poller", redis_url, ACCOUNT, environ=env, out=out) == 1
    assert "limit 50s" in out.getvalue()

    out = io.StringIO()
    assert check("worker", redis_url, environ={}, out=out) == 1
    worker = SimpleWorker(["send", "webhooks"], connection=redis_client)
    worker.register_birth()
    try:
        assert check("worker", redis_url, environ={}, out=io.StringIO()) == 0
    finally:
        worker.register_death()


def test_the_api_check_without_an_account_asks_redis_alone(redis_url: str) -> None:
    out = io.StringIO()
    assert check("api", redis_url, None, environ={}, out=out) == 0
    assert out.getvalue() == "ok\n"
    out = io.StringIO()
    assert check("api", "redis://127.0.0.1:1/0", None, environ={}, out=out) == 1
    assert out.getvalue().startswith("redis: unreachable")


def test_check_usage_errors(redis_url: str) -> None:
    out = io.StringIO()
    assert check("scheduler", redis_url, ACCOUNT, environ={}, out=out) == 2
    assert check("poller", redis_url, None, environ={}, out=out) == 2
    assert check("api", redis_url, ACCOUNT, environ={"BRIDGE_POLLER_MAX_LAG_S": "x"}, out=out) == 2
    assert out.getvalue().splitlines() == [
        "health: unknown role 'scheduler' (expected api, poller, worker)",
        "health: BRIDGE_UCWA_USERNAME is required to check the poller",
        "health: BRIDGE_POLLER_MAX_LAG_S: must be a number, not 'x'",
    ]
