"""Operator actions behind the API: list and inspect deliveries, retry, replay, endpoint state.

Returns plain JSON-ready dicts, endpoint URLs and errors quoting them with credentials redacted;
raises the package's errors for the API to map to problems.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

import redis
from redis.client import Pipeline

from bridge.webhooks.endpoint_status import EndpointStatusStore
from bridge.webhooks.endpoints import WebhookEndpoint
from bridge.webhooks.errors import DeliveryInFlight, DeliveryNotFound, EndpointNotFound
from bridge.webhooks.events import rfc3339
from bridge.webhooks.jobs import DeliveryJobs
from bridge.webhooks.log import DeliveryLog, DeliveryRecord
from bridge.webhooks.settings import WebhookSettings

REDACTED = "[REDACTED]"
# Query parameters that carry a credential by name (token=, api_key=, sig=, X-Amz-Signature=).
_SECRET_PARAM = re.compile(
    r"(?i)(?:^|[_.-])(?:token|key|secret|sig|signature|password|passwd|pwd|pass|auth"
    r"|authorization|credentials?|code|session)$|^(?:api|access|client|private)_?key$"
)
MIN_LITERAL_SECRET = 8
_USERINFO = re.compile(r"(://)[^/\s@?#]+@")
_QUERY_PAIR = re.compile(r"([?&;])([^=&;?#\s'\"]+)=([^&;#\s'\")]+)")
_CURSOR = re.compile(r"^([0-9]{1,15})\.(dlv_[A-Za-z0-9_-]{1,64})$")


def redact_url(url: str) -> str:
    """``url`` as operators may see it: user and password, and the values of query parameters
    named like credentials, replaced by [REDACTED]."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = REDACTED + "@" + netloc.rpartition("@")[2]
    query = "&".join(
        f"{name}={REDACTED}" if _is_secret_param(unquote(name)) and value else pair
        for pair in parts.query.split("&")
        for name, _, value in [pair.partition("=")]
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_secrets(url: str) -> set[str]:
    """The credentials ``redact_url`` hides, as written and decoded: for the log redactor."""
    parts = urlsplit(url)
    found: set[str] = set()
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        found |= {userinfo, userinfo.partition(":")[2]}
    for pair in parts.query.split("&"):
        name, _, value = pair.partition("=")
        if value and _is_secret_param(unquote(name)):
            found.add(value)
    for name, value in parse_qsl(parts.query, keep_blank_values=False):
        if _is_secret_param(name):
            found.add(value)
    found |= {unquote(value) for value in found}
    return {value for value in found if value}


def _is_secret_param(name: str) -> bool:
    return _SECRET_PARAM.search(name) is not None


def scrub(text: str | None, secrets: Iterable[str] = ()) -> str | None:
    """``text`` (an error that may quote a URL) with URL credentials and the values of
    ``secrets`` of at least 8 characters (shorter ones would mangle ordinary words) replaced."""
    if not text:
        return text
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= MIN_LITERAL_SECRET:
            text = text.replace(secret, REDACTED)
    text = _USERINFO.sub(r"\1" + REDACTED + "@", text)
    return _QUERY_PAIR.sub(
        lambda m: f"{m[1]}{m[2]}={REDACTED}" if _is_secret_param(unquote(m[2])) else m[0], text
    )


def _iso(ms: int | None) -> str | None:
    return None if ms is None else rfc3339(datetime.fromtimestamp(ms / 1000, tz=UTC))


def encode_cursor(cursor: tuple[int, str] | None) -> str | None:
    return None if cursor is None else f"{cursor[0]}.{cursor[1]}"


def decode_cursor(text: str) -> tuple[int, str]:
    """Inverse of ``encode_cursor``; raises ValueError on anything else (int() alone would
    take other scripts' digits, underscores, and numbers Redis refuses as a score)."""
    match = _CURSOR.match(text)
    if match is None:
        raise ValueError("malformed cursor")
    return int(match.group(1)), match.group(2)


class WebhookAdmin:
    def __init__(
        self,
        connection: redis.Redis,
        settings: WebhookSettings,
        endpoints: Iterable[WebhookEndpoint],
    ) -> None:
        self.endpoints = {e.id: e for e in endpoints}
        self.settings = settings
        self.log = DeliveryLog(connection, settings.retention_s)
        self.jobs = DeliveryJobs(connection, job_timeout_s=settings.job_timeout_s)
        self.status = EndpointStatusStore(connection)

    def list_deliveries(
        self,
        *,
        status: str | None = None,
        endpoint_id: str | None = None,
        event_type: str | None = None,
        limit: int = 50,
        cursor: tuple[int, str] | None = None,
    ) -> dict[str, Any]:
        records, next_cursor = self.log.page(
            status=status,
            endpoint_id=endpoint_id,
            event_type=event_type,
            limit=limit,
            cursor=cursor,
        )
        now_ms = _now_ms()
        return {
            "items": [self._render(r, now_ms) for r in records],
            "next_cursor": encode_cursor(next_cursor),
        }

    def get_delivery(self, delivery_id: str) -> dict[str, Any]:
        record = self.log.get(delivery_id)
        if record is None:
            raise DeliveryNotFound(delivery_id)
        view = self._render(record, _now_ms())
        endpoint = self.endpoints.get(record.endpoint_id)
        # A transport error quotes the URL it failed on, query credentials included.
        secrets = url_secrets(endpoint.url) if endpoint is not None else set()
        view["attempts"] = [
            {
                "at": _iso(a["at_ms"]),
                "try": a["try"],
                "status_code": a["status_code"],
                "error": scrub(a["error"], secrets),
                "latency_ms": a["latency_ms"],
                "response_excerpt": scrub(a["response_excerpt"], secrets),
            }
            for a in self.log.attempts(delivery_id)
        ]
        # The exact body that was signed and POSTed (kept as long as the delivery log), so a
        # receiver's team can see what it was sent; None once it has expired.
        body = self.log.event_body(record.event_id)
        view["payload"] = _payload(body)
        return view

    def retry(self, delivery_id: str) -> dict[str, Any]:
        """Enqueue a new try now (same event id, fresh schedule); DeliveryInFlight if busy."""
        now_ms = _now_ms()

        def enqueue(pipe: Pipeline, try_no: int) -> None:
            # Same job id as a retry already on the schedule: enqueue_now also unschedules it.
            self.jobs.enqueue_now(pipe, delivery_id, try_no)

        return self._render(self.log.requeue(delivery_id, now_ms, enqueue), now_ms)

    def replay(self, since: datetime, endpoint_id: str | None = None) -> int:
        """Retry every dead or failed delivery created since ``since``; returns how many."""
        if endpoint_id is not None and endpoint_id not in self.endpoints:
            raise EndpointNotFound(endpoint_id)
        count = 0
        for delivery_id in self.log.replayable_since(int(since.timestamp() * 1000), endpoint_id):
            try:
                self.retry(delivery_id)
            except (DeliveryInFlight, DeliveryNotFound):
                continue  # changed state meanwhile; nothing to replay
            count += 1
        return count

    def list_endpoints(self) -> list[dict[str, Any]]:
        disabled = self.status.disabled_many(self.endpoints)
        return [self._render_endpoint(e, disabled.get(e.id)) for e in self.endpoints.values()]

    def _allow_private(self, endpoint: WebhookEndpoint) -> bool:
        """What delivery applies: the endpoint's own flag or the global setting."""
        return endpoint.allow_private or self.settings.allow_private

    def enable_endpoint(self, endpoint_id: str) -> dict[str, Any]:
        endpoint = self.endpoints.get(endpoint_id)
        if endpoint is None:
            raise EndpointNotFound(endpoint_id)
        self.status.enable(endpoint_id)
        return self._render_endpoint(endpoint, None)

    def _render_endpoint(self, endpoint: WebhookEndpoint, disabled: Any) -> dict[str, Any]:
        view = endpoint.public_view()
        view["url"] = redact_url(endpoint.url)
        view["allow_private"] = self._allow_private(endpoint)
        view["disabled"] = (
            None
            if disabled is None
            else {
                "reason": disabled.reason,
                "at": _iso(disabled.at_ms),
                "delivery_id": disabled.delivery_id,
            }
        )
        view["active"] = endpoint.enabled and disabled is None
        return view

    @staticmethod
    def _render(record: DeliveryRecord, now_ms: int) -> dict[str, Any]:
        return {
            "id": record.id,
            "event_id": record.event_id,
            "event_type": record.event_type,
            "endpoint_id": record.endpoint_id,
            "status": record.status.value,
            "reason": record.reason or None,
            "attempt_count": record.attempt_count,
            "created_at": _iso(record.created_ms),
            "updated_at": _iso(record.updated_ms),
            "next_attempt_at": _iso(record.next_attempt_ms)
            if record.status.value in ("pending", "failed")
            else None,
            "in_flight": record.in_flight(now_ms),
        }


def _payload(body: bytes | None) -> Any:
    if body is None:
        return None
    try:
        return json.loads(body)
    except ValueError:  # never the case for bodies the bridge wrote; shown as text then
        return body.decode("utf-8", "replace")


def _now_ms() -> int:
    return int(time.time() * 1000)
