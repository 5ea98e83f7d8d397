"""Metrics from every role after real traffic: the API's gauges and HTTP requests, the worker's
UCWA requests and webhook attempts, the poller's send outcomes and latency (it settles them from
events); every series the dashboard and the alert rules query is exposed by some role."""

from __future__ import annotations

import requests
from prometheus_client.parser import text_string_to_metric_families

from bridge.config.embedded_redis import free_port
from tests.deploy.test_observability_assets import metric_names_in_assets
from tests.e2e.conftest import ALICE, MakeBridge, wait_for, webhook_env
from tests.webhooks.receiver import WebhookReceiver


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(url, timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def declared(url: str) -> set[str]:
    """Every series name the exposition declares, with or without samples yet."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    names: set[str] = set()
    for family in text_string_to_metric_families(requests.get(url, timeout=5).text):
        names |= {sample.name for sample in family.samples}
        names |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
    return names


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_every_role_reports_what_it_did(make_bridge: MakeBridge, receiver: WebhookReceiver) -> None:
    bridge = make_bridge(start=False, env=webhook_env(receiver))
    poller_port, worker_port = free_port(), free_port()
    bridge.start_api()
    bridge.start_poller(env={"BRIDGE_METRICS_PORT": str(poller_port)})
    bridge.start_worker(env={"BRIDGE_METRICS_PORT": str(worker_port)})
    delivered = bridge.send(ALICE, "counted")
    failed = bridge.send("sip:decliner@contoso.com", "declined")
    finals = bridge.wait_final(delivered, failed)
    assert [finals[delivered]["status"], finals[failed]["status"]] == ["delivered", "failed"]
    wait_for(lambda: len(receiver.received) >= 2, 15, "the two status webhooks")

    poller = f"http://127.0.0.1:{poller_port}/metrics"
    worker = f"http://127.0.0.1:{worker_port}/metrics"
    wait_for(
        lambda: (
            value(scrape(worker), "ucwa_bridge_webhook_attempts_total", outcome="succeeded") >= 2
        ),
        10,
        "the worker to count the webhook attempts",
    )
    at_worker = scrape(worker)
    assert (
        value(at_worker, "ucwa_bridge_ucwa_requests_total", kind="startMessaging", status="201")
        == 2
    )
    at_poller = scrape(poller)
    sends = "ucwa_bridge_sends_total"
    assert value(at_poller, sends, outcome="delivered", error_code="none", account="default") == 1
    assert value(at_poller, sends, outcome="failed", error_code="declined", account="default") == 1
    assert value(at_poller, "ucwa_bridge_send_latency_seconds_count") == 1
    assert value(at_poller, "ucwa_bridge_ucwa_requests_total", kind="events", status="200") >= 1

    at_api = scrape(bridge.api_url + "/metrics")
    assert value(at_api, "ucwa_bridge_session_state", account="default", state="ready") == 1
    assert value(at_api, "ucwa_bridge_poller_lease_held", account="default") == 1
    assert value(at_api, "ucwa_bridge_redis_up") == 1
    assert value(at_api, "ucwa_bridge_queue_jobs", queue="send", state="queued") == 0
    sent = {"route": "/messages", "method": "POST"}
    assert value(at_api, "ucwa_bridge_http_requests_total", status="202", **sent) == 2
    assert value(at_api, "ucwa_bridge_http_request_duration_seconds_count", **sent) == 2
    by_id = {"route": "/messages/<message_id>", "method": "GET", "status": "200"}
    assert value(at_api, "ucwa_bridge_http_requests_total", **by_id) >= 2, "one series, any id"
    assert not any(name.startswith("ucwa_bridge_send") for name, _ in at_api), "poller's figures"

    exposed = declared(poller) | declared(worker) | declared(bridge.api_url + "/metrics")
    assert metric_names_in_assets() - exposed == set(), "queried by the dashboard or the alerts"
