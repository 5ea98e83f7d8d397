"""HTTP metrics of the API: one series per URL rule, method and status, timed from the first hook,
and an exposition without the families only the worker and the poller observe."""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import requests
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from bridge.api import create_app
from bridge.config.settings import Settings
from bridge.observability.metrics import NOT_OBSERVED_BY_API, UNMATCHED_ROUTE
from tests.observability.test_metrics import gunicorn_app, sample  # noqa: F401 - fixture

API_KEY = "metrics-test-key-0123456789"
REQUESTS = "ucwa_bridge_http_requests_total"
SECONDS = "ucwa_bridge_http_request_duration_seconds"


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def route_labels() -> set[str]:
    return {
        s.labels["route"]
        for family in REGISTRY.collect()
        for s in family.samples
        if s.name == REQUESTS
    }


@pytest.fixture()
def client(redis_url: str, redis_client: redis.Redis) -> FlaskClient:
    env = {"BRIDGE_REDIS_URL": redis_url, "BRIDGE_API_KEYS": API_KEY, "BRIDGE_RATE_LIMIT": "off"}
    return create_app(Settings.from_env("api", env), redis_client).test_client()


def test_unknown_paths_share_one_route_label(client: FlaskClient) -> None:
    before = value(REQUESTS, route=UNMATCHED_ROUTE, method="GET", status="404")
    timed = value(f"{SECONDS}_count", route=UNMATCHED_ROUTE, method="GET")
    paths = [f"/no-such-{secrets.token_hex(8)}/{n}" for n in range(100)]
    for path in paths:
        assert client.get(path).status_code == 404
    assert value(REQUESTS, route=UNMATCHED_ROUTE, method="GET", status="404") == before + 100
    assert value(f"{SECONDS}_count", route=UNMATCHED_ROUTE, method="GET") == timed + 100
    labels = route_labels()
    assert not [label for label in labels if label.startswith("/no-such-")]
    assert all(label == UNMATCHED_ROUTE or label.startswith("/") for label in labels)


def test_message_ids_share_the_url_rule(client: FlaskClient) -> None:
    route = "/messages/<message_id>"
    before = value(REQUESTS, route=route, method="GET", status="404")
    headers = {"Authorization": f"Bearer {API_KEY}"}
    for _ in range(20):
        answer = client.get(f"/messages/msg_{secrets.token_hex(16)}", headers=headers)
        assert answer.status_code == 404
    assert value(REQUESTS, route=route, method="GET", status="404") == before + 20
    assert not [label for label in route_labels() if label.startswith("/messages/msg_")]


def test_a_request_a_hook_refuses_is_counted_and_timed(client: FlaskClient) -> None:
    before = value(REQUESTS, route="/messages", method="POST", status="401")
    timed = value(f"{SECONDS}_count", route="/messages", method="POST")
    assert (
        client.post("/messages", json={"to": "sip:a@contoso.com", "text": "x"}).status_code == 401
    )
    assert value(REQUESTS, route="/messages", method="POST", status="401") == before + 1
    assert value(f"{SECONDS}_count", route="/messages", method="POST") == timed + 1
    # The latency buckets are those of an SLO: fine below a second.
    assert value(f"{SECONDS}_bucket", route="/messages", method="POST", le="0.25") >= 1


def test_unknown_methods_are_one_label(client: FlaskClient) -> None:
    before = value(REQUESTS, route="/healthz", method="other", status="405")
    for method in ("BREW", "PROPFIND", "X-CUSTOM"):
        assert client.open("/healthz", method=method).status_code == 405
    # A method the rule does not allow matches no rule: 405 under the route "unmatched".
    after = value(REQUESTS, route=UNMATCHED_ROUTE, method="other", status="405")
    assert after >= 3 and value(REQUESTS, route="/healthz", method="other", status="405") == before


def test_api_exposes_http_and_redis_figures_only(client: FlaskClient) -> None:
    client.get("/healthz")
    text = client.get("/metrics").get_data(as_text=True)
    names = {family.name for family in text_string_to_metric_families(text)}
    assert "ucwa_bridge_http_requests" in names
    assert "ucwa_bridge_http_request_duration_seconds" in names
    assert {"ucwa_bridge_redis_up", "ucwa_bridge_queue_jobs"} <= names
    assert not names & NOT_OBSERVED_BY_API, "an empty send latency would read as no traffic"
    assert "ucwa_bridge_send_latency_seconds_count" not in text


def test_gunicorn_workers_sum_http_requests(gunicorn_app: str) -> None:  # noqa: F811
    # Which worker accepts a connection is the kernel's choice: on a busy machine one worker
    # can take a whole batch, so batches go on until both have served (or 20 batches).
    pids: set[str] = set()
    hits = 0
    with ThreadPoolExecutor(max_workers=4) as pool:
        while len(pids) < 2 and hits < 600:
            batch = pool.map(
                lambda _: requests.get(f"{gunicorn_app}/hit", timeout=5).text, range(30)
            )
            pids |= set(batch)
            hits += 30
    assert len(pids) == 2, "both workers served hits"
    for _ in range(4):
        text = requests.get(f"{gunicorn_app}/metrics", timeout=5).text
        labels = {"route": "/hit", "method": "GET"}
        assert sample(text, REQUESTS, status="200", **labels) == hits
        assert sample(text, f"{SECONDS}_count", **labels) == hits
