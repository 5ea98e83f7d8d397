"""One delivery try: claim it, vet the target, sign, POST, log the attempt, decide what comes next.

Run by the RQ job ``workers.webhook_jobs.deliver_webhook``. Never sleeps between tries (RQ's
scheduler retries); it only waits, within the job's time, for Redis to serve again.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TypeVar

import redis
from redis.client import Pipeline

from bridge.config.redis_conn import SentScript
from bridge.config.redis_faults import redis_unavailable
from bridge.webhooks import ssrf, transport
from bridge.webhooks.endpoint_status import EndpointStatusStore
from bridge.webhooks.endpoints import WebhookEndpoint
from bridge.webhooks.errors import AddressResolutionError, SsrfBlocked
from bridge.webhooks.jobs import DeliveryJobs
from bridge.webhooks.log import (
    Attempt,
    Claimed,
    DeliveryLog,
    DeliveryRecord,
    DeliveryStatus,
    NotDue,
)
from bridge.webhooks.retry import RetryPolicy, Verdict, decide, parse_retry_after
from bridge.webhooks.settings import WebhookSettings
from bridge.webhooks.signing import signed_headers

logger = logging.getLogger(__name__)

T = TypeVar("T")
# Left of the job's time when a wait for Redis gives up, so RQ's own timeout never cuts it.
REDIS_WAIT_MARGIN_S = 10.0
_NEEDS_AN_OPERATOR = frozenset({"dead", "disable_endpoint"})


@dataclass(frozen=True)
class AttemptOutcome:
    """What one try came to; the single place where attempt outcomes are counted."""

    delivery_id: str
    endpoint_id: str
    event_type: str
    try_no: int
    verdict: str  # succeeded | retry | dead | disable_endpoint
    reason: str
    status_code: int | None
    latency_ms: int | None


def log_outcome(outcome: AttemptOutcome) -> None:
    """Default outcome hook: one log line with the outcome's fields. Metrics plug in beside it.

    A delivery given up (``dead``) or an endpoint a 410 disabled needs an operator: WARNING."""
    level = logging.WARNING if outcome.verdict in _NEEDS_AN_OPERATOR else logging.INFO
    logger.log(level, "webhook attempt", extra=vars(outcome))


@dataclass(frozen=True)
class DeliveryReport:
    """What a job run did for a delivery: ``action`` is succeeded, retry_scheduled, dead,
    not_due, skipped or handed_back (a batch gave the try back, queued as a job of its own)."""

    delivery_id: str
    action: str
    reason: str = ""
    next_attempt_at: datetime | None = None


class Deliverer:
    """Performs delivery tries against the configured endpoints."""

    def __init__(
        self,
        connection: redis.Redis,
        settings: WebhookSettings,
        endpoints: Iterable[WebhookEndpoint],
        *,
        on_outcome: Callable[[AttemptOutcome], None] = log_outcome,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
        stop: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.endpoints = {e.id: e for e in endpoints}
        self.log = DeliveryLog(connection, settings.retention_s)
        self.jobs = DeliveryJobs(connection, job_timeout_s=settings.job_timeout_s)
        self.status = EndpointStatusStore(connection)
        self.policy = RetryPolicy.from_settings(settings)
        self._r = connection
        self._on_outcome = on_outcome
        self._rand = rand
        self._clock = clock
        self._stop = stop or threading.Event()
        self._deadline = float("inf")
        # A job's vetted targets by (URL, allow_private): a host is resolved and vetted once
        # per job for all its deliveries (a job lasts at most ``batch_budget_s``), as a DNS
        # cache with that TTL would; each job starts without.
        self._vetted: dict[tuple[str, bool], ssrf.Target | SsrfBlocked | AddressResolutionError]
        self._vetted = {}
        # The conclusion written before the last POST, its answer not yet read (``_settle``),
        # and the reports of those read, by delivery id.
        self._concluding: tuple[SentScript, _Outcome] | None = None
        self._late: dict[str, DeliveryReport] = {}

    def deliver(self, delivery_id: str) -> DeliveryReport:
        return self.deliver_many([delivery_id])[0]

    def deliver_many(self, delivery_ids: list[str]) -> list[DeliveryReport]:
        """Perform the scheduled tries of several deliveries in one job, one after another; a
        report for each, in order.

        Every try is claimed at the start, in one script call, so a run killed half-way leaves
        each one either unclaimed with its job or claimed under a lease the recovery sweep
        watches. A delivery starts only within ``settings.batch_budget_s`` of the job's start
        (each started one keeps a single delivery's time) and while the worker is not stopping;
        the rest are handed back, each queued again as a job of its own.
        """
        started = time.monotonic()
        self._deadline = started + max(self.settings.job_timeout_s - REDIS_WAIT_MARGIN_S, 1.0)
        self._vetted = {}
        lease_ms = self.settings.job_timeout_s * 1000
        claims = self._persist(
            lambda: self.log.claim_many(delivery_ids, self._now_ms(), lease_ms=lease_ms)
        )
        reports: list[DeliveryReport | None] = [None] * len(delivery_ids)
        claimed: list[tuple[int, Claimed]] = []
        not_due: list[tuple[int, NotDue]] = []
        for n, (delivery_id, claim) in enumerate(zip(delivery_ids, claims, strict=True)):
            if isinstance(claim, Claimed):
                claimed.append((n, claim))
            elif isinstance(claim, NotDue):
                not_due.append((n, claim))
            else:
                reports[n] = DeliveryReport(delivery_id, "skipped", claim.reason)
        if not_due:
            # Ran early (a duplicate run, or a manual enqueue): put the tries back on schedule.
            def reschedule() -> None:
                with self._r.pipeline() as pipe:
                    for n, claim in not_due:
                        at = _from_ms(claim.at_ms)
                        self.jobs.schedule(pipe, delivery_ids[n], claim.try_no, at)
                    pipe.execute()

            self._persist(reschedule)
            for n, claim in not_due:
                at = _from_ms(claim.at_ms)
                reports[n] = DeliveryReport(delivery_ids[n], "not_due", next_attempt_at=at)
        self._late = {}
        try:
            for k, (n, claim) in enumerate(claimed):
                if k and (
                    self._stop.is_set() or time.monotonic() - started > self.settings.batch_budget_s
                ):
                    rest = [(m, taken.record) for m, taken in claimed[k:]]
                    for m, report in self._hand_back(rest):
                        reports[m] = report
                    break
                reports[n] = self._deliver_claimed(claim.record, claim.body, claim.disabled)
        except BaseException:
            with contextlib.suppress(Exception):  # the error that stopped the batch is the one
                self._settle()
            raise
        self._settle()
        for n, claim in claimed:
            reports[n] = self._late.get(claim.record.id, reports[n])
        return [report for report in reports if report is not None]

    def _deliver_claimed(
        self, record: DeliveryRecord, body: bytes | None, disabled: bool
    ) -> DeliveryReport | None:
        """The try's report, or None when its conclusion's answer is still to be read."""
        endpoint = self.endpoints.get(record.endpoint_id)
        if endpoint is None:
            return self._dead(record, "endpoint_removed", None)
        if not endpoint.enabled or disabled:
            return self._dead(record, "endpoint_disabled", None)
        if body is None:
            return self._dead(record, "event_expired", None)
        return self._attempt(record, endpoint, body)

    def _hand_back(
        self, rest: list[tuple[int, DeliveryRecord]]
    ) -> list[tuple[int, DeliveryReport]]:
        """Give the claimed tries not yet attempted back, each queued as a job of its own."""

        def enqueue(pipe: Pipeline, delivery_id: str, try_no: int) -> None:
            self.jobs.enqueue_now(pipe, delivery_id, try_no)

        self._settle()
        records = [record for _, record in rest]
        given = set(self._persist(lambda: self.log.hand_back(records, self._now_ms(), enqueue)))
        logger.info(
            "a webhook batch handed back deliveries it had no time for",
            extra={"handed_back": len(given), "stopping": self._stop.is_set()},
        )
        return [
            (
                n,
                DeliveryReport(record.id, "handed_back")
                if record.id in given
                else DeliveryReport(record.id, "skipped", "try already taken"),
            )
            for n, record in rest
        ]

    def _attempt(
        self, record: DeliveryRecord, endpoint: WebhookEndpoint, body: bytes
    ) -> DeliveryReport | None:
        at_ms = self._now_ms()
        allow_private = endpoint.allow_private or self.settings.allow_private
        try:
            target = self._vet(endpoint.url, allow_private)
        except SsrfBlocked as exc:
            attempt = Attempt(at_ms, record.try_no, None, f"ssrf_blocked: {exc}", 0)
            return self._dead(record, "ssrf_blocked", attempt)
        except AddressResolutionError as exc:
            result = transport.HttpResult(None, f"dns_error: {exc}", 0, "", None)
        else:
            headers = {
                "Content-Type": "application/json",
                "User-Agent": self.settings.user_agent,
                **signed_headers(record.event_id, int(self._clock()), body, endpoint.secrets),
            }
            result = transport.post(
                endpoint.url,
                body,
                headers,
                pinned_address=target.address,
                timeout_s=self.settings.timeout_s,
                excerpt_bytes=self.settings.excerpt_bytes,
                verify=self.settings.verify,
            )
        attempt = Attempt(
            at_ms,
            record.try_no,
            result.status_code,
            result.error,
            result.latency_ms,
            result.excerpt,
        )
        decision = decide(
            self.policy,
            record.round_failures,
            result.status_code,
            result.error,
            parse_retry_after(result.retry_after, self._clock()),
            self._rand(),
        )
        now_ms = self._now_ms()
        if decision.verdict is Verdict.SUCCEEDED:
            done = replace(
                record,
                status=DeliveryStatus.SUCCEEDED,
                next_attempt_ms=None,
                reason="",
                updated_ms=now_ms,
            )
            return self._conclude(record, done, attempt, "succeeded", decision.verdict)
        if decision.verdict is Verdict.DISABLE_ENDPOINT:

            def disable(pipe: Pipeline) -> None:
                self.status.disable(pipe, endpoint.id, "410 Gone", now_ms, record.id)

            return self._dead(record, decision.reason, attempt, disable, decision.verdict)
        if decision.verdict is Verdict.DEAD:
            return self._dead(record, decision.reason, attempt)
        next_ms = now_ms + int(decision.delay_s * 1000)
        retry = replace(
            record,
            status=DeliveryStatus.FAILED,
            try_no=record.try_no + 1,
            round_failures=record.round_failures + 1,
            next_attempt_ms=next_ms,
            reason=decision.reason,
            updated_ms=now_ms,
        )

        def schedule(pipe: Pipeline) -> None:
            if decision.delay_s <= 0:
                self.jobs.enqueue_now(pipe, record.id, retry.try_no)
            else:
                self.jobs.schedule(pipe, record.id, retry.try_no, _from_ms(next_ms))

        report = self._conclude(
            record, retry, attempt, "retry_scheduled", decision.verdict, schedule
        )
        return report and replace(report, next_attempt_at=_from_ms(next_ms))

    def _vet(self, url: str, allow_private: bool) -> ssrf.Target:
        """``ssrf.vet``, once per job for a URL: its target, or the error it raised."""
        key = (url, allow_private)
        found = self._vetted.get(key)
        if found is None:
            try:
                found = ssrf.vet(url, allow_private=allow_private)
            except (SsrfBlocked, AddressResolutionError) as exc:
                found = exc
            self._vetted[key] = found
        if isinstance(found, Exception):
            raise found
        return found

    def _dead(
        self,
        record: DeliveryRecord,
        reason: str,
        attempt: Attempt | None,
        after: Callable[[Pipeline], None] | None = None,
        verdict: Verdict = Verdict.DEAD,
    ) -> DeliveryReport | None:
        dead = replace(
            record,
            status=DeliveryStatus.DEAD,
            next_attempt_ms=None,
            reason=reason,
            updated_ms=self._now_ms(),
        )
        return self._conclude(record, dead, attempt, "dead", verdict, after)

    def _conclude(
        self,
        claimed: DeliveryRecord,
        updated: DeliveryRecord,
        attempt: Attempt | None,
        action: str,
        verdict: Verdict,
        after: Callable[[Pipeline], None] | None = None,
    ) -> DeliveryReport | None:
        """Record the try's outcome before the next POST goes out.

        A conclusion that needs one script call (no job, no endpoint change: ``after`` is None)
        is written and its answer read after the next delivery's POST (``_settle``), so that
        Redis runs it while the POST is out: None then, the report comes with the answer. Any
        other conclusion waits for Redis, as every other write does."""
        self._settle()
        outcome = _Outcome(claimed, updated, attempt, action, verdict)
        if after is None:
            try:
                self._concluding = (self.log.send_conclusion(claimed, updated, attempt), outcome)
                return None
            except redis.RedisError:
                pass  # not written: conclude the ordinary way, waiting for Redis
        applied = self._persist(lambda: self.log.conclude(claimed, updated, attempt, after))
        return self._concluded(outcome, applied)

    def _settle(self) -> None:
        """Read the answer of the conclusion written before the last POST, if any."""
        if self._concluding is None:
            return
        (sent, c), self._concluding = self._concluding, None
        try:
            applied = bool(sent.answer())
        except redis.RedisError:
            # Refused (Redis read-only, or restarted without its scripts) or the answer lost:
            # conclude again the ordinary way, waiting for Redis. A conclusion that was applied
            # answers so again and counts nothing twice.
            applied = self._persist(lambda: self.log.conclude(c.claimed, c.updated, c.attempt))
        self._late[c.claimed.id] = self._concluded(c, applied)

    def _concluded(self, c: _Outcome, applied: bool) -> DeliveryReport:
        if not applied:
            return DeliveryReport(c.claimed.id, "skipped", "superseded")
        self._on_outcome(
            AttemptOutcome(
                delivery_id=c.claimed.id,
                endpoint_id=c.claimed.endpoint_id,
                event_type=c.claimed.event_type,
                try_no=c.claimed.try_no,
                verdict=c.verdict.value,
                reason=c.updated.reason,
                status_code=c.attempt.status_code if c.attempt else None,
                latency_ms=c.attempt.latency_ms if c.attempt else None,
            )
        )
        return DeliveryReport(c.claimed.id, c.action, c.updated.reason)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _persist(self, step: Callable[[], T]) -> T:
        """Run a Redis step, again while Redis is unavailable, until the job's time is nearly up.

        Once a try is claimed, its claim holds off every other run until the lease ends and its
        outcome lives only here: failing the job on a short outage would leave the delivery
        claimed and unanswered. Every step is a check-and-set transaction, so a repeat is safe.
        """
        delay = 0.2
        warned = False
        while True:
            try:
                return step()
            except redis.RedisError as exc:
                if not redis_unavailable(exc) or self._stop.is_set():
                    raise
                if time.monotonic() + delay >= self._deadline:
                    raise
                if not warned:
                    logger.warning(
                        "Redis unavailable during a webhook delivery; waiting for it",
                        extra={"error": type(exc).__name__},
                    )
                    warned = True
                self._stop.wait(delay)
                delay = min(delay * 2, 2.0)


@dataclass(frozen=True)
class _Outcome:
    """A try's outcome, to record: the record as claimed and as it ends, the attempt made."""

    claimed: DeliveryRecord
    updated: DeliveryRecord
    attempt: Attempt | None
    action: str
    verdict: Verdict


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
