"""The alert rules and the Grafana dashboard: promtool checks and unit-tests the rules, the chart
ships the same rules, every dashboard query parses, and each failure mode has its alert.

promtool comes from the Debian package ``prometheus`` or a Prometheus release (set ``PROMTOOL``
to use another binary); without it these tests skip, or fail with ``DEPLOY_TOOLS_REQUIRED=1``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import CHART, ROOT, missing_tool

RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
CHART_RULES = CHART / "files" / "alerts.yml"
DASHBOARD = CHART / "dashboards" / "ucwa-bridge.json"
PROMTOOL_HINT = "apt-get install prometheus (it ships promtool) or set PROMTOOL"
METRIC = re.compile(r"\bucwa_bridge_[a-z0-9_]+")

# The README's troubleshooting table, one alert per failure mode, plus the API's own SLO.
FAILURE_MODE_ALERTS = {
    "UcwaBridgeNoLivePoller",
    "UcwaBridgeCredentialsRejected",
    "UcwaBridgeSessionNotReady",
    "UcwaBridgePollerLag",
    "UcwaBridgeRedisDown",
    "UcwaBridgeMessagesStuckQueued",
    "UcwaBridgeSendQueueGrowing",
    "UcwaBridgeSendsFailing",
    "UcwaBridgeWebhookDeliveriesDead",
    "UcwaBridgeEventsQuarantined",
    "UcwaBridgeApiErrors",
    "UcwaBridgeApiLatency",
}
# What a user looks at first; each needs a panel.
DASHBOARD_METRICS = {
    "ucwa_bridge_sends_total",
    "ucwa_bridge_send_latency_seconds_bucket",
    "ucwa_bridge_webhook_attempts_total",
    "ucwa_bridge_queue_jobs",
    "ucwa_bridge_poller_lag_seconds",
    "ucwa_bridge_session_state",
    "ucwa_bridge_redis_up",
    "ucwa_bridge_http_requests_total",
    "ucwa_bridge_http_request_duration_seconds_bucket",
    "ucwa_bridge_events_quarantined_total",
}
# Grafana's variables, replaced by values Prometheus accepts before parsing a query.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__range": "1h", "$namespace": ".*"}


@cache
def find_promtool() -> str | None:
    for candidate in (os.environ.get("PROMTOOL", ""), shutil.which("promtool") or ""):
        if candidate and os.access(candidate, os.X_OK):
            try:
                subprocess.run(
                    [candidate, "--version"], capture_output=True, check=True, timeout=30
                )
            except (OSError, subprocess.SubprocessError):
                continue
            return candidate
    return None


@pytest.fixture(scope="module")
def promtool() -> str:
    binary = find_promtool()
    if binary is None:
        missing_tool(f"promtool not found: {PROMTOOL_HINT}")
    assert binary is not None
    return binary


def run_promtool(promtool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120, cwd=cwd)
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return document


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def queries() -> list[str]:
    return [target["expr"] for panel in panels() for target in panel["targets"]]


# -- alert rules -----------------------------------------------------------------------------------
def test_rules_pass_promtool_check(promtool: str) -> None:
    result = run_promtool(promtool, "check", "rules", RULES.name, cwd=RULES.parent)
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_rules_unit_tests_pass(promtool: str) -> None:
    run_promtool(promtool, "test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)


def test_unit_tests_cover_at_least_three_alerts() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert len(fired) >= 3 and fired <= FAILURE_MODE_ALERTS, fired


def test_every_failure_mode_has_an_alert_with_a_severity_and_summary() -> None:
    by_name = {rule["alert"]: rule for rule in rules()}
    assert set(by_name) == FAILURE_MODE_ALERTS
    for name, rule in by_name.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_the_chart_ships_the_same_rules() -> None:
    assert CHART_RULES.read_bytes() == RULES.read_bytes(), (
        "helm/ucwa-bridge/files/alerts.yml must be a copy of deploy/prometheus/alerts.yml"
    )


# -- dashboard -------------------------------------------------------------------------------------
def test_dashboard_is_valid_grafana_json() -> None:
    document = dashboard()
    assert document["uid"] == "ucwa-bridge" and document["title"]
    assert {v["name"] for v in document["templating"]["list"]} >= {"datasource", "namespace"}
    ids = [p["id"] for p in document["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in document["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
    for panel in panels():
        assert panel["targets"], panel["title"]
        # The data source is chosen on import, never one machine's uid.
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert 'namespace=~"$namespace"' in target["expr"], (panel["title"], target["expr"])


def test_dashboard_has_the_panels_users_look_at_first() -> None:
    used = {name for expr in queries() for name in METRIC.findall(expr)}
    assert used >= DASHBOARD_METRICS, DASHBOARD_METRICS - used


def test_dashboard_queries_parse(promtool: str, tmp_path: Path) -> None:
    """promtool parses each query as the expression of a recording rule."""
    recorded = []
    for number, expr in enumerate(queries()):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        recorded.append({"record": f"dashboard:query_{number}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}))
    run_promtool(promtool, "check", "rules", path.name, cwd=tmp_path)


def metric_names_in_assets() -> set[str]:
    """Every ucwa_bridge_* series name the dashboard and the alert rules query."""
    names = {name for expr in queries() for name in METRIC.findall(expr)}
    names |= {name for rule in rules() for name in METRIC.findall(rule["expr"])}
    return names
