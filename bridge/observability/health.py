"""Readiness and health checks per role, as ``(ok, reasons)``, and ``check`` for exec probes.

Each reason is one line naming what is wrong; ``check`` prints them and returns the exit code.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TextIO

import redis

from bridge.config.environment import read_variables
from bridge.config.redis_conn import connect
from bridge.config.redis_faults import probe_writable
from bridge.config.values import ConfigError
from bridge.session.lease import PollerLease
from bridge.session.store import SessionStore

# A healthy idle poller completes an event GET at least every event timeout (180 s by default).
DEFAULT_MAX_PULSE_AGE_S = 240.0
# An idle RQ worker heartbeats every worker_ttl - 15 s (45 s with the worker role's ttl of 60).
DEFAULT_MAX_HEARTBEAT_AGE_S = 120.0
WORKER_QUEUES = ("send", "webhooks")
ROLES = ("api", "poller", "worker")
EXIT_OK, EXIT_UNHEALTHY, EXIT_USAGE = 0, 1, 2

Result = tuple[bool, list[str]]


def redis_reasons(client: redis.Redis, writes: bool = False) -> list[str]:
    """Why Redis cannot serve; with ``writes``, also whether it takes a write (a read-only or
    full server answers pings)."""
    try:
        if not client.ping():
            return ["redis: ping failed"]
    except redis.RedisError as exc:
        return [f"redis: unreachable ({type(exc).__name__})"]
    if writes:
        try:
            probe_writable(client)
        except redis.RedisError as exc:
            return [f"redis: not taking writes ({type(exc).__name__})"]
    return []


def poller_reasons(
    client: redis.Redis,
    account: str,
    max_pulse_age_s: float = DEFAULT_MAX_PULSE_AGE_S,
    now: float | None = None,
) -> list[str]:
    """Why the account has no working poller: no lease, a session not ready, a stale pulse."""
    account = account.lower()
    reasons: list[str] = []
    if PollerLease.current(client, account) is None:
        reasons.append(f"poller: no live poller holds the lease for {account}")
    store = SessionStore(client, account)
    session = store.load()
    if session is None:
        reasons.append("session: no UCWA session has been published")
    elif session.state != "ready":
        reasons.append(f"session: state is {session.state}")
    pulse = store.last_pulse()
    if pulse is None:
        reasons.append("poller: no event GET has completed yet")
    else:
        age = (time.time() if now is None else now) - pulse
        if age > max_pulse_age_s:
            reasons.append(
                f"poller: last event GET completed {age:.0f}s ago (limit {max_pulse_age_s:.0f}s)"
            )
    return reasons


def api_readiness(
    client: redis.Redis,
    account: str | Sequence[str],
    max_pulse_age_s: float = DEFAULT_MAX_PULSE_AGE_S,
    now: float | None = None,
) -> Result:
    """Whether accepted messages can be sent: Redis answers and every account's poller is live
    (``account``: one account's key, or several). With several, each reason starts with the
    account it is about."""
    reasons = redis_reasons(client, writes=True)
    if reasons:
        return False, reasons
    _, by_account = accounts_readiness(client, account, max_pulse_age_s, now)
    several = not isinstance(account, str) and len(account) > 1
    for key, own in by_account.items():
        reasons.extend(f"{key}: {reason}" if several else reason for reason in own)
    return not reasons, reasons


def accounts_readiness(
    client: redis.Redis,
    account: str | Sequence[str],
    max_pulse_age_s: float = DEFAULT_MAX_PULSE_AGE_S,
    now: float | None = None,
) -> tuple[bool, dict[str, list[str]]]:
    """Each account's reasons not to be ready (none: ready), by the account's key."""
    keys = [account] if isinstance(account, str) else list(account)
    found: dict[str, list[str]] = {}
    for key in keys:
        try:
            found[key] = poller_reasons(client, key, max_pulse_age_s, now)
        except redis.RedisError as exc:
            found[key] = [f"redis: {type(exc).__name__}"]
    return not any(found.values()), found


def poller_health(
    client: redis.Redis,
    account: str | Sequence[str],
    max_pulse_age_s: float = DEFAULT_MAX_PULSE_AGE_S,
    now: float | None = None,
) -> Result:
    """The account-level view of the poller (any replica): use it for readiness and alerts.

    A standby replica reports the active one's health, so as a liveness probe give it a
    failure threshold longer than a lease takeover.
    """
    return api_readiness(client, account, max_pulse_age_s, now)


def worker_health(
    client: redis.Redis,
    hostname: str | None = None,
    max_heartbeat_age_s: float = DEFAULT_MAX_HEARTBEAT_AGE_S,
    queues: tuple[str, ...] = WORKER_QUEUES,
    now: datetime | None = None,
) -> Result:
    """Whether an RQ worker (on ``hostname``, if given) is registered, listens on ``queues``
    and has sent a heartbeat within ``max_heartbeat_age_s``."""
    from rq import Worker

    reasons = redis_reasons(client)
    if reasons:
        return False, reasons
    try:
        workers = Worker.all(connection=client)
    except redis.RedisError as exc:
        return False, [f"redis: {type(exc).__name__}"]
    where = f" on {hostname}" if hostname else ""
    mine = [w for w in workers if hostname is None or w.hostname == hostname]
    if not mine:
        return False, [f"worker: no RQ worker is registered{where}"]
    moment = now or datetime.now(UTC)
    stale: list[str] = []
    for worker in mine:
        missing = sorted(set(queues) - set(worker.queue_names()))
        beat = worker.last_heartbeat
        age = (moment - _aware(beat)).total_seconds() if beat else None
        if missing:
            stale.append(f"worker: {worker.name} does not listen on {', '.join(missing)}")
        elif age is None or age > max_heartbeat_age_s:
            shown = "never" if age is None else f"{age:.0f}s ago"
            stale.append(
                f"worker: {worker.name} last heartbeat {shown} (limit {max_heartbeat_age_s:.0f}s)"
            )
        else:
            return True, []
    return False, stale


def check(
    role: str,
    redis_url: str,
    account: str | Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
) -> int:
    """Run the role's check; print ``ok`` or one reason per line; return 0, 1, or 2 (usage).

    ``BRIDGE_POLLER_MAX_LAG_S`` and ``BRIDGE_WORKER_MAX_HEARTBEAT_S`` override the thresholds.
    The api's check includes the poller's only when ``account`` is given.
    """
    env = os.environ if environ is None else environ
    stream = out or sys.stdout
    if role not in ROLES:
        print(f"health: unknown role {role!r} (expected {', '.join(ROLES)})", file=stream)
        return EXIT_USAGE
    try:
        limits = read_variables(env, ("poller_max_lag_s", "worker_max_heartbeat_s"))
    except ConfigError as exc:
        for line in exc.lines:
            print(f"health: {line}", file=stream)
        return EXIT_USAGE
    if role == "poller" and not account:
        print("health: BRIDGE_UCWA_USERNAME is required to check the poller", file=stream)
        return EXIT_USAGE
    client = connect(redis_url, socket_timeout=3, socket_connect_timeout=3)
    try:
        if role == "worker":
            ok, reasons = worker_health(client, socket.gethostname(), limits.worker_max_heartbeat_s)
        elif account:
            ok, reasons = api_readiness(client, account, limits.poller_max_lag_s)
        else:
            # An api that knows no account checks Redis alone, as its /readyz does.
            reasons = redis_reasons(client, writes=True)
            ok = not reasons
    finally:
        client.close()
    for line in reasons or ["ok"]:
        print(line, file=stream)
    return EXIT_OK if ok else EXIT_UNHEALTHY


def max_pulse_age_s(environ: Mapping[str, str] | None = None) -> float:
    """``BRIDGE_POLLER_MAX_LAG_S`` or the default; a ``ConfigError`` (a ValueError) names a
    bad value."""
    env = os.environ if environ is None else environ
    return read_variables(env, ("poller_max_lag_s",)).poller_max_lag_s


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
