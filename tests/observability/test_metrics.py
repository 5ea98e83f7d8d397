"""Metrics: the hooks count what they should, across processes, and Redis gauges match RQ.

Uses the real Redis fixture, real RQ jobs and workers, and a real gunicorn with two workers.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import redis
import requests
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from rq import Queue
from rq.job import Job

from bridge.config.accounts import load_accounts
from bridge.config.embedded_redis import free_port
from bridge.demo import listen
from bridge.observability.metrics import (
    BoundedLabel,
    RedisStateCollector,
    count_webhook_outcome,
    observe_ucwa_request,
    record_send_outcome,
    render_metrics,
    with_send_metrics,
)
from bridge.outbound.messages import MessageError, MessageRecord, MessageStatus, format_time
from bridge.session.lease import PollerLease
from bridge.session.store import Session, SessionStore
from bridge.webhooks.delivery import AttemptOutcome
from workers.rq_worker import BridgeWorker

ACCOUNT = "sip:bot@contoso.com"


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def value(name: str, **labels: str) -> float:
    if name == "ucwa_bridge_sends_total":
        labels.setdefault("account", "default")
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- counters and hooks --------------------------------------------------------------------------
def test_ucwa_observer_counts_by_kind_and_status() -> None:
    before = value("ucwa_bridge_ucwa_requests_total", kind="events", status="200")
    lost = value("ucwa_bridge_ucwa_requests_total", kind="events", status="no_response")
    observe_ucwa_request("events", "GET", 200, 12.5)
    observe_ucwa_request("events", "GET", None, 30.0)
    assert value("ucwa_bridge_ucwa_requests_total", kind="events", status="200") == before + 1
    assert value("ucwa_bridge_ucwa_requests_total", kind="events", status="no_response") == lost + 1
    assert value("ucwa_bridge_ucwa_request_seconds_bucket", kind="events", le="30.0") >= 2


def test_labels_stay_bounded() -> None:
    label = BoundedLabel(2)
    assert [label(v) for v in ("a", "b", "c", "a", "bad value!", None)] == [
        "a",
        "b",
        "other",
        "a",
        "other",
        "other",
    ]


def _record(status: MessageStatus, code: str | None = None) -> MessageRecord:
    created = time.time() - 3.0
    record = MessageRecord.new(to="sip:alice@contoso.com", text="hi", validity_s=300, now=created)
    history = {**record.history, status.value: format_time(created + 2.5)}
    error = MessageError(code, "why") if code else None
    return MessageRecord(
        **{**record.__dict__, "status": status, "history": history, "error": error}
    )


def test_send_outcomes_and_latency() -> None:
    delivered = value("ucwa_bridge_sends_total", outcome="delivered", error_code="none")
    declined = value("ucwa_bridge_sends_total", outcome="failed", error_code="declined")
    count = value("ucwa_bridge_send_latency_seconds_count")
    total = value("ucwa_bridge_send_latency_seconds_sum")
    record_send_outcome(_record(MessageStatus.DELIVERED))
    record_send_outcome(_record(MessageStatus.FAILED, "declined"))
    record_send_outcome(_record(MessageStatus.SENDING))  # not final: ignored
    assert value("ucwa_bridge_sends_total", outcome="delivered", error_code="none") == delivered + 1
    assert value("ucwa_bridge_sends_total", outcome="failed", error_code="declined") == declined + 1
    assert value("ucwa_bridge_send_latency_seconds_count") == count + 1
    assert value("ucwa_bridge_send_latency_seconds_sum") - total == pytest.approx(2.5, abs=0.01)


def test_send_metrics_wrap_another_status_hook(redis_client: redis.Redis) -> None:
    seen: list[str] = []
    hook = with_send_metrics(lambda pipe, record: seen.append(record.id))
    expired = value("ucwa_bridge_sends_total", outcome="expired", error_code="expired")
    record = _record(MessageStatus.EXPIRED, "expired")
    with redis_client.pipeline() as pipe:
        hook(pipe, record)
        with_send_metrics(None)(pipe, record)
    assert seen == [record.id]
    assert value("ucwa_bridge_sends_total", outcome="expired", error_code="expired") == expired + 2


def test_webhook_outcomes_are_counted() -> None:
    before = value("ucwa_bridge_webhook_attempts_total", outcome="retry")
    count_webhook_outcome(
        AttemptOutcome("dlv_1", "default", "message.received", 1, "retry", "503", 503, 12)
    )
    assert value("ucwa_bridge_webhook_attempts_total", outcome="retry") == before + 1


# -- several processes ---------------------------------------------------------------------------
COUNT_IN_CHILD = """
import sys
from bridge.observability.metrics import observe_ucwa_request
for _ in range(int(sys.argv[1])):
    observe_ucwa_request("sendMessage", "POST", 201, 0.02)
"""


def test_counters_from_two_processes_add_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for times in (2, 3):
        subprocess.run([sys.executable, "-c", COUNT_IN_CHILD, str(times)], env=env, check=True)
    assert len(list(tmp_path.glob("counter_*.db"))) == 2
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    body, content_type = render_metrics()
    text = body.decode()
    assert content_type.startswith("text/plain")
    labels = {"kind": "sendMessage", "status": "201"}
    assert sample(text, "ucwa_bridge_ucwa_requests_total", **labels) == 5
    assert sample(text, "ucwa_bridge_ucwa_request_seconds_count", kind="sendMessage") == 5


@pytest.fixture()
def gunicorn_app(tmp_path: Path) -> Iterator[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "metrics")
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics" / "counter_99999.db").write_bytes(b"stale")  # from an earlier run
    with listen(0, "API") as sock:  # bound here: no other process can take it first
        port = sock.getsockname()[1]
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "gunicorn"),
                *("-c", "python:bridge.observability.gunicorn_conf"),
                *("--bind", f"fd://{sock.fileno()}", "--workers", "2"),
                "tests.observability.metrics_app:app",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(sock.fileno(),),
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                requests.get(f"{url}/metrics", timeout=1)
                break
            except (requests.ConnectionError, requests.Timeout):  # not serving yet
                assert process.poll() is None, "gunicorn exited"
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_gunicorn_workers_report_one_total(gunicorn_app: str) -> None:
    session = requests.Session()
    pids: set[str] = set()
    hits = 0
    # On busy cores one worker may take a whole round of hits: go on until both have served.
    with ThreadPoolExecutor(max_workers=4) as pool:
        while len(pids) < 2 and hits < 400:
            pids |= set(
                pool.map(lambda _: requests.get(f"{gunicorn_app}/hit", timeout=5).text, range(40))
            )
            hits += 40
    assert len(pids) == 2, "both workers served hits"
    totals = set()
    for _ in range(6):
        text = session.get(f"{gunicorn_app}/metrics", timeout=5).text
        totals.add(
            sample(text, "ucwa_bridge_ucwa_requests_total", kind="sendMessage", status="201")
        )
    assert totals == {float(hits)}, "every worker must see the sum over all workers"


# -- gauges from Redis ---------------------------------------------------------------------------
def succeed() -> str:
    return "ok"


def explode() -> None:
    raise RuntimeError("boom")


def started_seen_by_scrape(redis_url: str) -> float | None:
    client = redis.Redis.from_url(redis_url)
    text = render_metrics(client, ACCOUNT)[0].decode()
    return sample(text, "ucwa_bridge_queue_jobs", queue="send", state="started")


def test_queue_gauges_follow_real_rq_state(redis_client: redis.Redis, redis_url: str) -> None:
    send = Queue("send", connection=redis_client)
    webhooks = Queue("webhooks", connection=redis_client)
    failing = send.enqueue(explode)
    running = send.enqueue(started_seen_by_scrape, redis_url)
    BridgeWorker([send], connection=redis_client).work(burst=True)
    assert failing.get_status() == "failed"
    assert Job.fetch(running.id, connection=redis_client).return_value() == 1.0
    parent = send.enqueue(succeed)
    send.enqueue(succeed, depends_on=parent)  # deferred until the parent finishes
    webhooks.enqueue(succeed)
    webhooks.enqueue(succeed)
    webhooks.enqueue_in(timedelta(hours=1), succeed)

    text = render_metrics(redis_client, ACCOUNT)[0].decode()

    def jobs(queue: str, state: str) -> float | None:
        return sample(text, "ucwa_bridge_queue_jobs", queue=queue, state=state)

    assert jobs("send", "queued") == 1 and jobs("send", "deferred") == 1
    assert jobs("send", "failed") == 1 and jobs("send", "started") == 0
    assert jobs("webhooks", "queued") == 2 and jobs("webhooks", "scheduled") == 1
    assert jobs("webhooks", "failed") == 0
    assert sample(text, "ucwa_bridge_redis_up") == 1


def _session(state: str) -> Session:
    return Session(
        account=ACCOUNT,
        generation=1,
        base_url="http://127.0.0.1:1",
        application_href="/ucwa/oauth/v1/applications/1",
        token="cwt=secret",
        token_expires_at=time.time() + 3600,
        token_url="",
        state=state,
    )


def test_poller_and_session_gauges(redis_client: redis.Redis) -> None:
    text = render_metrics(redis_client, ACCOUNT)[0].decode()
    assert sample(text, "ucwa_bridge_poller_lag_seconds") == math.inf
    assert sample(text, "ucwa_bridge_poller_lease_held") == 0
    assert sample(text, "ucwa_bridge_session_state", state="missing") == 1

    store = SessionStore(redis_client, ACCOUNT)
    store.publish(_session("ready"))
    store.pulse(time.time() - 30)
    lease = PollerLease(redis_client, ACCOUNT)
    assert lease.try_acquire()
    text = render_metrics(redis_client, ACCOUNT)[0].decode()
    assert sample(text, "ucwa_bridge_poller_lag_seconds") == pytest.approx(30, abs=2)
    assert sample(text, "ucwa_bridge_poller_lease_held") == 1
    assert sample(text, "ucwa_bridge_session_state", state="ready") == 1
    assert sample(text, "ucwa_bridge_session_state", state="missing") == 0
    assert "cwt=secret" not in text


def test_every_account_has_its_own_poller_and_session_gauges(redis_client: redis.Redis) -> None:
    accounts = load_accounts(
        {
            "BRIDGE_ACCOUNTS": json.dumps(
                [
                    {"id": "bot", "username": ACCOUNT, "password": "x", "default": True},
                    {"id": "alerts", "username": "sip:alerts@contoso.com", "password": "y"},
                ]
            ),
            "BRIDGE_UCWA_DISCOVERY_URL": "https://lyncdiscover.contoso.com",
        }
    )
    SessionStore(redis_client, ACCOUNT).publish(_session("ready"))
    assert PollerLease(redis_client, ACCOUNT).try_acquire()
    text = render_metrics(redis_client, accounts)[0].decode()
    assert sample(text, "ucwa_bridge_poller_lease_held", account="bot") == 1
    assert sample(text, "ucwa_bridge_poller_lease_held", account="alerts") == 0
    assert sample(text, "ucwa_bridge_session_state", account="bot", state="ready") == 1
    assert sample(text, "ucwa_bridge_session_state", account="alerts", state="missing") == 1
    assert sample(text, "ucwa_bridge_quarantined_events", account="alerts") == 0

    sent = replace(
        MessageRecord.new(to="sip:a@contoso.com", text="x", validity_s=60, account="alerts"),
        status=MessageStatus.FAILED,
        error=MessageError("declined", "no"),
    )
    before = value("ucwa_bridge_sends_total", outcome="failed", error_code="declined",
                   account="alerts")  # fmt: skip
    with_send_metrics(None)(redis_client.pipeline(), sent)
    after = value("ucwa_bridge_sends_total", outcome="failed", error_code="declined",
                  account="alerts")  # fmt: skip
    assert after == before + 1


def test_unreachable_redis_reports_down_instead_of_failing() -> None:
    client = redis.Redis(port=free_port(), socket_connect_timeout=0.2)
    families = {f.name: f for f in RedisStateCollector(client, ACCOUNT).collect()}
    assert list(families) == ["ucwa_bridge_redis_up"]
    assert families["ucwa_bridge_redis_up"].samples[0].value == 0
