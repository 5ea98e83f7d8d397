"""``ucwa-bridge api | worker | poller | demo``: start one process role, configured by BRIDGE_*.

Bad configuration stops start-up with one line naming the variable and exit code 78.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from bridge.config.redis_faults import Outage, redis_unavailable, wait_until_writable
from bridge.config.settings import ConfigError, Settings, redact_url
from bridge.observability.logging import (
    REDACTED,
    add_secrets,
    configure_logging,
    install_excepthooks,
    log_startup,
    parse_level,
)
from bridge.webhooks.admin import url_secrets
from bridge.webhooks.endpoints import webhook_config
from bridge.webhooks.errors import WebhookConfigError

log = logging.getLogger("ucwa_bridge.worker")
cli_log = logging.getLogger("ucwa_bridge.cli")

EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, f"must be a number, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(name, "must be positive")
    return value


def poller_settings() -> object:
    from workers.poller import PollerSettings

    return PollerSettings(
        event_timeout_s=int(_env_float("BRIDGE_EVENT_TIMEOUT_S", 180)),
        keepalive_s=_env_float("BRIDGE_KEEPALIVE_S", 150),
        lease_ttl_s=_env_float("BRIDGE_POLLER_LEASE_S", 5),
        idle_conversation_s=_env_float("BRIDGE_CONVERSATION_IDLE_S", 600),
        sweep_s=_env_float("BRIDGE_SWEEP_S", 5),
        token_renew_margin_s=_env_float("BRIDGE_TOKEN_RENEW_MARGIN_S", 300),
    )


def send_settings() -> object:
    from bridge.outbound.sender import SendSettings

    return SendSettings(
        invitation_timeout_s=_env_float("BRIDGE_INVITATION_TIMEOUT_S", 45),
        message_timeout_s=_env_float("BRIDGE_MESSAGE_TIMEOUT_S", 20),
        ambiguity_grace_s=_env_float("BRIDGE_AMBIGUITY_GRACE_S", 5),
        max_attempts=int(_env_float("BRIDGE_MAX_ATTEMPTS", 8)),
        backoff_base_s=_env_float("BRIDGE_BACKOFF_BASE_S", 1),
        backoff_cap_s=_env_float("BRIDGE_BACKOFF_CAP_S", 60),
    )


def metrics_port() -> int | None:
    """``BRIDGE_METRICS_PORT``: where the worker or poller serves /metrics (unset: nowhere)."""
    raw = os.environ.get("BRIDGE_METRICS_PORT", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise ConfigError("BRIDGE_METRICS_PORT", f"must be a port number, got {raw!r}")
    return int(raw)


def serve_metrics() -> None:
    port = metrics_port()
    if port is not None:
        from bridge.observability.metrics import start_metrics_server

        start_metrics_server(port)


def run_poller(settings: Settings) -> int:
    from bridge.config.redis_conn import connect
    from bridge.hooks import inbound_events, status_events
    from bridge.observability.metrics import with_send_metrics
    from bridge.session.transport import TransportOptions
    from bridge.ucwa.auth import Credentials
    from workers.poller import Poller, PollerSettings

    assert settings.ucwa_username and settings.ucwa_password and settings.ucwa_discovery_url
    knobs = poller_settings()
    assert isinstance(knobs, PollerSettings)
    account = settings.ucwa_username.lower()
    poller = Poller(
        connect(settings.redis_url, socket_connect_timeout=5, socket_timeout=10),
        Credentials(settings.ucwa_username, settings.ucwa_password),
        settings.ucwa_discovery_url,
        knobs,
        inbound_hook=inbound_events(account),
        on_final=with_send_metrics(status_events(account)),
        transport_options=TransportOptions.from_settings(settings),
    )
    serve_metrics()
    signal.signal(signal.SIGTERM, poller.on_signal)
    signal.signal(signal.SIGINT, poller.on_signal)
    poller.run()
    return 0


def run_worker(settings: Settings, burst: bool = False) -> int:
    from rq import Queue

    from bridge.config.redis_conn import connect
    from bridge.outbound.sender import SendSettings
    from workers import send
    from workers.rq_worker import BridgeWorker, stopping

    knobs = send_settings()
    assert isinstance(knobs, SendSettings)
    send.configure(send.build_sender(settings, knobs))
    connection = connect(settings.redis_url, socket_connect_timeout=5)
    queues = [Queue(name, connection=connection) for name in ("send", "webhooks")]
    maintenance_interval = int(_env_float("BRIDGE_MAINTENANCE_INTERVAL_S", 30))
    serve_metrics()
    outage = Outage(log, "worker")
    while True:
        # Started with Redis down, or after RQ's loop gave up on an outage: wait for Redis to
        # take writes again (a read-only or full server answers pings), SIGTERM ends the wait.
        if not _wait_for_redis(connection, outage, stopping):
            return 0
        # Short monitoring and maintenance intervals: a killed worker's job is retried within
        # about two minutes (heartbeat TTL = monitoring interval + 60 s, then the next cleanup).
        worker = BridgeWorker(
            queues,
            connection=connection,
            job_monitoring_interval=10,
            maintenance_interval=maintenance_interval,
            worker_ttl=60,
        )
        worker.outage = outage
        try:
            worker.work(with_scheduler=True, burst=burst, logging_level="WARNING")
        except Exception as exc:
            # RQ's loop quits on any Redis error but a refused connection while idle, and its
            # teardown then raises the same error again.
            if not redis_unavailable(exc):
                raise
            outage.begin(exc, "the worker waits and resumes by itself")
        if burst or worker.stop_requested:
            return 0
        if not outage.active:
            log.warning("the RQ worker loop ended without a stop request; restarting it")
            stopping.wait(1.0)


def _wait_for_redis(connection: redis.Redis, outage: Outage, stop: threading.Event) -> bool:
    """Wait until Redis takes writes (True) or SIGTERM/SIGINT arrives (False).

    The handlers stay: a signal before RQ installs its own still stops the worker (it checks
    ``stop`` then)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return wait_until_writable(connection, stop, outage, "the worker waits and resumes by itself")


def run_api(settings: Settings, bind: str) -> int:
    from gunicorn.app.wsgiapp import run as gunicorn_run

    # graceful_timeout (BRIDGE_API_GRACEFUL_TIMEOUT_S) comes from gunicorn_conf, so a plain
    # ``gunicorn -c python:bridge.observability.gunicorn_conf`` shuts down the same way.
    sys.argv = [
        "gunicorn",
        "--config",
        "python:bridge.observability.gunicorn_conf",
        "--bind",
        bind,
        "--workers",
        os.environ.get("BRIDGE_API_WORKERS", "2"),
        "bridge.api.wsgi:app",
    ]
    gunicorn_run()
    return 0


def show_quarantine(argv: Sequence[str]) -> int:
    """``ucwa-bridge quarantine [--limit N]``: one JSON object per line, newest first."""
    from bridge.config.redis_conn import connect
    from bridge.inbound.quarantine import Quarantine

    parser = argparse.ArgumentParser(
        prog="ucwa-bridge quarantine",
        description="Event-channel input the poller could not process and skipped, newest first "
        "(needs BRIDGE_REDIS_URL and BRIDGE_UCWA_USERNAME).",
    )
    parser.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    args = parser.parse_args(list(argv))
    url, account = os.environ.get("BRIDGE_REDIS_URL"), os.environ.get("BRIDGE_UCWA_USERNAME")
    if not url or not account:
        print(
            "ucwa-bridge quarantine needs BRIDGE_REDIS_URL and BRIDGE_UCWA_USERNAME",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    try:
        entries = Quarantine(connect(url), account.lower()).entries(max(1, args.limit))
    except redis.RedisError as exc:
        print(f"ucwa-bridge quarantine: Redis is unavailable: {exc}", file=sys.stderr)
        return 1
    for entry in entries:
        print(json.dumps(entry, ensure_ascii=False))
    return 0


def setup_logging(role: str) -> None:
    """JSON (or text) logs with ``role`` on every line and uncaught exceptions as one line each.

    A bad ``BRIDGE_LOG_LEVEL`` or ``BRIDGE_LOG_FORMAT`` is a ``ConfigError``, raised once
    logging is set up with the defaults, so it is reported like every other one."""
    raw_format = os.environ.get("BRIDGE_LOG_FORMAT", "").strip().lower() or "json"
    configure_logging("INFO", json=raw_format != "text", role=role)
    install_excepthooks()
    if raw_format not in ("json", "text"):
        raise ConfigError("BRIDGE_LOG_FORMAT", f"must be json or text, got {raw_format!r}")
    try:
        level = parse_level(os.environ.get("BRIDGE_LOG_LEVEL"))
    except ValueError as exc:
        raise ConfigError("BRIDGE_LOG_LEVEL", str(exc)) from None
    logging.getLogger().setLevel(level)


def config_error(exc: ConfigError | WebhookConfigError) -> int:
    """One line naming the variable, in the log format, and the exit code for it."""
    cli_log.error(
        "configuration error: %s", exc, extra={"variable": getattr(exc, "variable", None)}
    )
    return EXIT_CONFIG


def effective_settings(settings: Settings, **extra: Any) -> dict[str, Any]:
    """``settings`` and the role's own knobs as plain values, for the start-up line: API keys
    by id only, the password and URL credentials left out."""
    values: dict[str, Any] = {}
    for item in dataclasses.fields(settings):
        values[item.name] = getattr(settings, item.name)
    values["api_key_ids"] = [key.key_id for key in values.pop("api_keys")]
    values["redis_url"] = redact_url(settings.redis_url)
    values["ucwa_password"] = REDACTED if settings.ucwa_password else None
    values["rate_limit"] = str(settings.rate_limit) if settings.rate_limit else None
    values["rate_limit_keys"] = {k: str(v) for k, v in settings.rate_limit_keys.items()}
    values["log_level"] = logging.getLevelName(logging.getLogger().level)
    for name, value in extra.items():
        is_instance = dataclasses.is_dataclass(value) and not isinstance(value, type)
        values[name] = dataclasses.asdict(value) if is_instance else value
    return {k: _plain(v) for k, v in values.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list | set | frozenset):
        return [_plain(v) for v in value]
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["demo"]:
        from bridge.demo import run_demo

        try:
            setup_logging("demo")
        except ConfigError as exc:
            return config_error(exc)
        return run_demo(args_list[1:])
    if args_list[:1] == ["health"]:
        from bridge.observability.health import check

        if len(args_list) != 2 or not os.environ.get("BRIDGE_REDIS_URL"):
            print(
                "usage: ucwa-bridge health api|poller|worker (needs BRIDGE_REDIS_URL)",
                file=sys.stderr,
            )
            return EXIT_CONFIG
        return check(
            args_list[1], os.environ["BRIDGE_REDIS_URL"], os.environ.get("BRIDGE_UCWA_USERNAME")
        )
    if args_list[:1] == ["quarantine"]:
        return show_quarantine(args_list[1:])
    parser = argparse.ArgumentParser(prog="ucwa-bridge", description=__doc__)
    sub = parser.add_subparsers(dest="role", required=True)
    api = sub.add_parser("api", help="serve the HTTP API with gunicorn")
    api.add_argument("--bind", default=os.environ.get("BRIDGE_API_BIND", "127.0.0.1:8080"))
    worker = sub.add_parser("worker", help="run an RQ worker (send and webhook queues)")
    worker.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    sub.add_parser("poller", help="own the UCWA session and its event channel")
    sub.add_parser("demo", help="run everything locally against the simulator")
    sub.add_parser("health", help="exit 0 if the role is healthy: health api|poller|worker")
    sub.add_parser("quarantine", help="print the event-channel input the poller set aside")
    args = parser.parse_args(args_list)
    try:
        setup_logging(args.role)
        settings = Settings.from_env(args.role)
        add_secrets([settings.ucwa_password or "", *(k.secret for k in settings.api_keys)])
        if args.role in ("poller", "worker"):
            endpoints, _ = webhook_config()  # refuse a bad webhook configuration at start-up
            add_secrets(secret for endpoint in endpoints for secret in endpoint.secrets)
            # credentials in webhook URLs (user:password@, token=…) are secrets too
            add_secrets(value for endpoint in endpoints for value in url_secrets(endpoint.url))
            metrics_port()
        if args.role == "poller":
            knobs = poller_settings()
            log_startup(cli_log, "poller", effective_settings(settings, poller=knobs))
            return run_poller(settings)
        if args.role == "worker":
            knobs = send_settings()
            log_startup(
                cli_log,
                "worker",
                effective_settings(settings, send=knobs, webhook_endpoints=len(endpoints)),
            )
            return run_worker(settings, burst=args.burst)
        _env_float("BRIDGE_API_GRACEFUL_TIMEOUT_S", 20)  # refused here, applied by gunicorn_conf
        log_startup(
            cli_log,
            "api",
            effective_settings(
                settings, bind=args.bind, workers=os.environ.get("BRIDGE_API_WORKERS", "2")
            ),
        )
        return run_api(settings, args.bind)
    except (ConfigError, WebhookConfigError) as exc:
        return config_error(exc)


if __name__ == "__main__":
    sys.exit(main())
