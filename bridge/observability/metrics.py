"""Prometheus metrics: counters the roles increment, and gauges read from Redis at scrape time.

Under gunicorn, set ``PROMETHEUS_MULTIPROC_DIR`` before ``prometheus_client`` is first imported.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import redis
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from bridge.config.accounts import ACCOUNT_ID, DEFAULT_ID, MAX_ACCOUNTS
from bridge.inbound.quarantine import Quarantine
from bridge.outbound.messages import MessageRecord, MessageStatus, parse_time
from bridge.session.lease import PollerLease
from bridge.session.store import SessionStore

if TYPE_CHECKING:
    from flask import Flask, Response

    from bridge.webhooks.delivery import AttemptOutcome

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
QUEUES = ("send", "webhooks")
REGISTRY_STATES = ("queued", "started", "scheduled", "failed", "deferred")
SESSION_STATES = ("ready", "rebuilding", "down", "stopped", "credentials_rejected", "missing")
WEBHOOK_OUTCOMES = ("succeeded", "retry", "dead", "disable_endpoint")
OTHER = "other"

SENDS = Counter(
    "ucwa_bridge_sends_total",
    "Messages that reached a final status, by status, bridge error code and account.",
    ["outcome", "error_code", "account"],
)
SEND_LATENCY = Histogram(
    "ucwa_bridge_send_latency_seconds",
    "Time from acceptance by the API to delivery confirmed on the event channel.",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
)
UCWA_REQUESTS = Counter(
    "ucwa_bridge_ucwa_requests_total",
    "UCWA HTTP exchanges by request kind and status (no_response: none came back).",
    ["kind", "status"],
)
UCWA_SECONDS = Histogram(
    "ucwa_bridge_ucwa_request_seconds",
    "Duration of UCWA HTTP exchanges; kind=events are long polls.",
    ["kind"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 180, 300),
)
WEBHOOK_ATTEMPTS = Counter(
    "ucwa_bridge_webhook_attempts_total",
    "Webhook delivery tries by verdict.",
    ["outcome"],
)
QUARANTINED = Counter(
    "ucwa_bridge_events_quarantined_total",
    "Event-channel input set aside instead of processed (stage event: one event; batch: a whole "
    "answer); read it with `ucwa-bridge quarantine`.",
    ["stage"],
)


HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"
HTTP_REQUESTS = Counter(
    "ucwa_bridge_http_requests_total",
    "API requests by route (the URL rule; unmatched when none matched), method and status.",
    ["route", "method", "status"],
)
# Fine below a second, where an SLO on accepting a message sits (e.g. 99 % under 250 ms).
HTTP_SECONDS = Histogram(
    "ucwa_bridge_http_request_duration_seconds",
    "API request duration, from the first request hook to the response, by route and method.",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
# Family names (a counter's without ``_total``) the worker and the poller observe and the API
# never does: its exposition leaves them out, where an empty histogram would read as no traffic.
NOT_OBSERVED_BY_API = frozenset(
    family.name
    for metric in (SENDS, SEND_LATENCY, UCWA_REQUESTS, UCWA_SECONDS, WEBHOOK_ATTEMPTS, QUARANTINED)
    for family in metric.describe()
)


class BoundedLabel:
    """Keeps a label's value set small: malformed values and any beyond ``limit`` become other."""

    def __init__(self, limit: int, pattern: str = r"^[A-Za-z][A-Za-z0-9_]{0,39}$") -> None:
        self.limit = limit
        self.pattern = re.compile(pattern)
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str | None) -> str:
        if not value or not self.pattern.match(value):
            return OTHER
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) >= self.limit:
                return OTHER
            self._seen.add(value)
            return value


_kind_label = BoundedLabel(32)
_error_label = BoundedLabel(40, r"^[a-z][a-z0-9_]{0,39}$")
_account_label = BoundedLabel(MAX_ACCOUNTS, ACCOUNT_ID.pattern)


def observe_ucwa_request(kind: str, method: str, status: int | None, seconds: float) -> None:
    """A ``bridge.session.transport.Observer``: pass it as ``UcwaTransport(observer=...)``."""
    label = _kind_label(kind)
    code = str(status) if status is not None and 100 <= status <= 599 else "no_response"
    UCWA_REQUESTS.labels(kind=label, status=code).inc()
    UCWA_SECONDS.labels(kind=label).observe(max(0.0, seconds))


def count_quarantined(stage: str, count: int) -> None:
    if count:
        QUARANTINED.labels(stage=stage).inc(count)


def record_send_outcome(record: MessageRecord) -> None:
    """Count a message that reached a final status; delivered ones feed the latency histogram."""
    if not record.status.is_terminal:
        return
    code = _error_label(record.error.code) if record.error is not None else "none"
    account = _account_label(record.account or DEFAULT_ID)
    SENDS.labels(outcome=record.status.value, error_code=code, account=account).inc()
    if record.status is MessageStatus.DELIVERED:
        delivered = record.history.get(MessageStatus.DELIVERED.value)
        try:
            end = parse_time(delivered) if delivered else time.time()
            # From when it joined its line: a scheduled message's wait for send_at is not latency
            start = record.history.get(MessageStatus.QUEUED.value, record.created_at)
            seconds = end - parse_time(start)
        except ValueError:
            return
        if seconds >= 0:
            SEND_LATENCY.observe(seconds)


def send_outcome_hook(pipe: redis.client.Pipeline, record: MessageRecord) -> None:
    """A ``bridge.outbound.outcomes.StatusHook`` (``Outbound(on_final=...)``); adds nothing to
    ``pipe``."""
    record_send_outcome(record)


def with_send_metrics(
    hook: Callable[[redis.client.Pipeline, MessageRecord], None] | None,
) -> Callable[[redis.client.Pipeline, MessageRecord], None]:
    """``hook`` (e.g. the status-webhook hook, or None) followed by the send counters."""

    def both(pipe: redis.client.Pipeline, record: MessageRecord) -> None:
        if hook is not None:
            hook(pipe, record)
        record_send_outcome(record)

    return both


def count_webhook_outcome(outcome: AttemptOutcome) -> None:
    """An ``on_outcome`` hook for ``bridge.webhooks.delivery.Deliverer``: counts only."""
    verdict = outcome.verdict if outcome.verdict in WEBHOOK_OUTCOMES else OTHER
    WEBHOOK_ATTEMPTS.labels(outcome=verdict).inc()


def log_and_count_webhook_outcome(outcome: AttemptOutcome) -> None:
    """The Deliverer's default log line plus the counter: pass as ``on_outcome``."""
    from bridge.webhooks.delivery import log_outcome

    log_outcome(outcome)
    count_webhook_outcome(outcome)


def instrument_http(app: Flask) -> None:
    """Count and time every request of ``app``. Call it before registering other hooks: the
    timer starts first, so a request another hook refuses (401, 413, 429) is timed too."""
    app.before_request_funcs.setdefault(None, []).insert(0, _start_http_timer)
    app.after_request(_observe_http_request)


def _start_http_timer() -> None:
    from flask import g

    g.metrics_started = time.perf_counter()


def _observe_http_request(response: Response) -> Response:
    from flask import g, request

    # The URL rule, never the path: /messages/<message_id> is one series whatever the id.
    rule = request.url_rule
    route = rule.rule if rule is not None else UNMATCHED_ROUTE
    method = request.method if request.method in HTTP_METHODS else OTHER
    HTTP_REQUESTS.labels(route=route, method=method, status=str(response.status_code)).inc()
    started = g.pop("metrics_started", None)
    if started is not None:
        HTTP_SECONDS.labels(route=route, method=method).observe(time.perf_counter() - started)
    return response


# Accounts as metric labels: ``(id, key)`` pairs; the key names the account's Redis state.
AccountLabels = tuple[tuple[str, str], ...]


def account_labels(accounts: Any) -> AccountLabels:
    """``(id, key)`` for each of ``accounts`` (``bridge.config.accounts.Accounts``), or for a
    single account's key as the account ``default``."""
    if accounts is None:
        return ()
    if isinstance(accounts, str):
        return ((DEFAULT_ID, accounts.lower()),)
    return tuple((account.id, account.key) for account in accounts)


class RedisStateCollector(Collector):
    """Gauges computed from Redis on every scrape: queues, RQ registries, and per account its
    poller and session (label ``account``, bounded by the configured accounts)."""

    def __init__(
        self, client: redis.Redis, accounts: Any = None, queues: tuple[str, ...] = QUEUES
    ) -> None:
        self.client = client
        self.accounts = account_labels(accounts)
        self.queues = queues

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("ucwa_bridge_redis_up", "Whether Redis answered this scrape.")
        try:
            families = list(self._families())
        except redis.RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self) -> Iterator[Metric]:
        from rq import Queue

        jobs = GaugeMetricFamily(
            "ucwa_bridge_queue_jobs",
            "RQ jobs per queue and state (queued = waiting in the queue list).",
            labels=["queue", "state"],
        )
        for name in self.queues:
            queue = Queue(name, connection=self.client)
            jobs.add_metric([name, "queued"], queue.count)
            registries: dict[str, Any] = {
                "started": queue.started_job_registry,
                "scheduled": queue.scheduled_job_registry,
                "failed": queue.failed_job_registry,
                "deferred": queue.deferred_job_registry,
            }
            for state, registry in registries.items():
                # cleanup=False: a scrape observes; RQ's own maintenance moves stale entries.
                jobs.add_metric([name, state], registry.get_job_count(cleanup=False))
        yield jobs
        if not self.accounts:
            return
        lag = GaugeMetricFamily(
            "ucwa_bridge_poller_lag_seconds",
            "Seconds since the account's poller's last completed event GET; +Inf if it never "
            "reported.",
            labels=["account"],
        )
        lease = GaugeMetricFamily(
            "ucwa_bridge_poller_lease_held",
            "Whether some poller holds the account's lease.",
            labels=["account"],
        )
        states = GaugeMetricFamily(
            "ucwa_bridge_session_state",
            "1 for the account's UCWA session's current state, 0 for the others.",
            labels=["account", "state"],
        )
        held = GaugeMetricFamily(
            "ucwa_bridge_quarantined_events",
            "Entries in the account's quarantine list (capped); see `ucwa-bridge quarantine`.",
            labels=["account"],
        )
        for account_id, key in self.accounts:
            store = SessionStore(self.client, key)
            pulse = store.last_pulse()
            lag.add_metric(
                [account_id], max(0.0, time.time() - pulse) if pulse is not None else math.inf
            )
            lease.add_metric([account_id], 1 if PollerLease.current(self.client, key) else 0)
            session = store.load()
            current = "missing" if session is None else session.state
            if current not in SESSION_STATES:
                current = OTHER
            for name in (*SESSION_STATES, OTHER):
                states.add_metric([account_id, name], 1 if name == current else 0)
            held.add_metric([account_id], Quarantine(self.client, key).size())
        yield lag
        yield lease
        yield states
        yield held


class _Combined(Collector):
    def __init__(self, *parts: Any, exclude: frozenset[str] = frozenset()) -> None:
        self.parts = parts
        self.exclude = exclude

    def collect(self) -> Iterator[Metric]:
        for part in self.parts:
            for family in part.collect():
                if family.name not in self.exclude:
                    yield family


def render_metrics(
    client: redis.Redis | None = None,
    account: Any = None,
    exclude: frozenset[str] = frozenset(),
) -> tuple[bytes, str]:
    """The exposition body and its content type: every process's counters when
    ``PROMETHEUS_MULTIPROC_DIR`` is set (gunicorn), else this process's, plus Redis gauges;
    without the families named in ``exclude``."""
    parts: list[Any] = []
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        parts.append(registry)
    else:
        parts.append(REGISTRY)
    if client is not None:
        parts.append(RedisStateCollector(client, account))
    return generate_latest(_Combined(*parts, exclude=exclude)), CONTENT_TYPE_LATEST


def metrics_response(
    client: redis.Redis | None = None,
    account: Any = None,
    exclude: frozenset[str] = frozenset(),
) -> Response:
    """A Flask response for ``GET /metrics``."""
    from flask import Response

    body, content_type = render_metrics(client, account, exclude)
    return Response(body, status=200, headers={"Content-Type": content_type})


# The log line a worker or poller writes with the port its /metrics listens on (its ``port``
# field): with BRIDGE_METRICS_PORT=0 the only place that names it.
METRICS_LINE = "serving /metrics"


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> int:
    """Serve this process's metrics on ``port`` (worker and poller; one process each); the port
    it listens on (``port`` 0: one the system chose)."""
    server, _ = start_http_server(port, addr=addr)
    return int(server.server_port)
