"""ucwa-bridge COMMAND: start one process role (api, worker, poller), run the whole bridge
locally (demo), check a role's health or list the events the poller set aside (quarantine).

Every command reads BRIDGE_* environment variables; its --help lists those it reads. Bad
configuration stops start-up with one line per variable that is wrong and exit code 78.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import redis

from bridge.config.accounts import load_accounts
from bridge.config.environment import (
    accounts_environ,
    read_environment,
    read_variables,
    variables_help,
)
from bridge.config.redis_faults import Outage, redis_unavailable, wait_until_writable
from bridge.config.settings import ConfigError, Settings, redact_url
from bridge.config.values import check_bind
from bridge.config.variables import BridgeEnvironment
from bridge.observability.logging import (
    REDACTED,
    add_secrets,
    configure_logging,
    install_excepthooks,
    log_startup,
    package_version,
)
from bridge.webhooks.admin import url_secrets
from bridge.webhooks.endpoints import WebhookEndpoint, webhook_config
from bridge.webhooks.errors import WebhookConfigError

if TYPE_CHECKING:
    from bridge.outbound.holders import ProcessLiveness
    from bridge.session.slot import UcwaSlot

log = logging.getLogger("ucwa_bridge.worker")
cli_log = logging.getLogger("ucwa_bridge.cli")

EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h


def poller_settings(env: BridgeEnvironment) -> object:
    from workers.poller import PollerSettings

    return PollerSettings(
        event_timeout_s=env.event_timeout_s,
        keepalive_s=env.keepalive_s,
        lease_ttl_s=env.poller_lease_s,
        idle_conversation_s=env.conversation_idle_s,
        sweep_s=env.sweep_s,
        token_renew_margin_s=env.token_renew_margin_s,
        record_ttl_s=env.record_ttl_s,
    )


def send_settings(env: BridgeEnvironment) -> object:
    from bridge.outbound.sender import SendSettings

    return SendSettings(
        invitation_timeout_s=env.invitation_timeout_s,
        message_timeout_s=env.message_timeout_s,
        ambiguity_grace_s=env.ambiguity_grace_s,
        max_attempts=env.max_attempts,
        backoff_base_s=env.backoff_base_s,
        backoff_cap_s=env.backoff_cap_s,
    )


def serve_metrics(port: int | None) -> None:
    """``BRIDGE_METRICS_PORT``: where the worker or poller serves /metrics (unset: nowhere; 0:
    a free port, named in the log line ``serving /metrics``)."""
    if port is not None:
        from bridge.observability.metrics import METRICS_LINE, start_metrics_server

        log.info(METRICS_LINE, extra={"port": start_metrics_server(port)})


def run_poller(settings: Settings, env: BridgeEnvironment) -> int:
    """Serve this process's share of every configured account until SIGTERM or SIGINT; poller
    processes share the accounts among themselves through Redis (see ``workers.poller``)."""
    from bridge.config.accounts import Account
    from bridge.config.redis_conn import connect
    from bridge.hooks import inbound_events, status_events
    from bridge.observability.metrics import with_send_metrics
    from bridge.session.transport import TransportOptions
    from bridge.ucwa.auth import Credentials
    from workers.poller import Poller, PollerSettings
    from workers.poller_pool import PollerPool

    assert settings.accounts
    knobs = poller_settings(env)
    assert isinstance(knobs, PollerSettings)
    client = connect(settings.redis_url, socket_connect_timeout=5, socket_timeout=10)
    options = TransportOptions.from_settings(settings)

    def build(account: Account, holder: str, outage: Outage) -> Poller:
        return Poller(
            client,
            Credentials(account.username, account.password),
            account.discovery_url,
            knobs,
            inbound_hook=inbound_events(account.key, account_id=account.id),
            on_final=with_send_metrics(status_events(account.key)),
            transport_options=options,
            account_id=account.id,
            holder=holder,
            outage=outage,
        )

    pool = PollerPool(client, list(settings.accounts), build, knobs)
    serve_metrics(env.metrics_port)
    signal.signal(signal.SIGTERM, pool.stop)
    signal.signal(signal.SIGINT, pool.stop)
    pool.run()
    return 0


def run_worker(settings: Settings, env: BridgeEnvironment, burst: bool = False) -> int:
    """``BRIDGE_WORKER_RUNNERS`` job runners in this process, each an RQ worker of its own in a
    thread (the first in the main thread, with RQ's scheduler and the signal handlers), sharing
    one UCWA request in flight: while one runner's POST is out, another does the Redis part of
    its next job."""
    from bridge.config.redis_conn import connect
    from bridge.outbound.holders import ProcessLiveness
    from bridge.session.slot import UcwaSlot
    from workers.rq_worker import stop_process_scheduler, stopping, stopping_cold

    knobs = send_settings(env)
    runners = env.worker_runners
    slot = UcwaSlot(closed=stopping_cold) if runners > 1 else None
    serve_metrics(env.metrics_port)
    outage = Outage(log, "worker")
    # The process named in the send locks its runners take, alive while it renews its key: a
    # lock of this process, killed, is taken over within seconds, not its TTL.
    alive = ProcessLiveness(connect(settings.redis_url, socket_connect_timeout=5)).start()
    threads = [
        threading.Thread(
            target=_run_thread_runner,
            args=(settings, env, knobs, (slot, alive), outage, burst),
            name=f"job-runner-{index}",
            daemon=True,
        )
        for index in range(1, runners)
    ]
    for thread in threads:
        thread.start()
    try:
        _run_runner(settings, env, knobs, (slot, alive), outage, burst)
    finally:
        if threads and stopping_cold.is_set():
            # Cold: the runners in threads abandon their jobs too, as the main runner did (RQ
            # ends its job and its loop). The process ends now, without waiting for them, and
            # without the interpreter's exit, which daemon threads still logging can abort.
            log.warning("cold stop: the jobs of the other job runners are abandoned")
            _flush_logs()
            os._exit(0)
        if not burst:
            stopping.set()  # the main runner ended: so do the others, after their jobs
        for thread in threads:
            thread.join()
        stop_process_scheduler()  # it gives the queues' scheduler locks back
        alive.stop()
    return 1 if _runner_failed.is_set() else 0


# Set when a runner in a thread failed: the worker exits with status 1 once every runner ended.
_runner_failed = threading.Event()


def _flush_logs() -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()


def _run_thread_runner(*args: Any) -> None:
    """A runner in a thread of its own; one that fails stops the whole worker, as the main
    runner's failure does, so that the process ends and is started again."""
    from workers.rq_worker import stopping

    try:
        _run_runner(*args)
    except BaseException:
        log.exception("a job runner failed; the worker stops")
        _runner_failed.set()
        stopping.set()
        os.kill(os.getpid(), signal.SIGTERM)  # the main runner stops after its job, too


def _run_runner(
    settings: Settings,
    env: BridgeEnvironment,
    knobs: Any,
    shared: tuple[UcwaSlot | None, ProcessLiveness],
    outage: Outage,
    burst: bool,
) -> int:
    from rq import Queue
    from rq.exceptions import StopRequested

    from bridge.config.redis_conn import connect
    from workers import send
    from workers.rq_worker import BridgeWorker, stopping

    main = threading.current_thread() is threading.main_thread()
    slot, alive = shared
    send.configure(send.build_sender(settings, knobs, slot=slot, liveness=alive))
    connection = connect(settings.redis_url, socket_connect_timeout=5)
    # Webhook deliveries on the main runner only: a worker process delivers them one at a time,
    # in the order they were staged, whatever its runners.
    names = ("send", "webhooks") if main else ("send",)
    queues = [Queue(name, connection=connection) for name in names]
    while True:
        # Started with Redis down, or after RQ's loop gave up on an outage: wait for Redis to
        # take writes again (a read-only or full server answers pings), SIGTERM ends the wait.
        if main:
            ready = _wait_for_redis(connection, outage, stopping)
        else:
            ready = wait_until_writable(
                connection, stopping, outage, "the worker waits and resumes by itself"
            )
        if not ready:
            return 0
        worker: BridgeWorker | None = None
        try:
            # Short monitoring and maintenance intervals: a killed worker's job is retried
            # within about two minutes (heartbeat TTL = monitoring interval + 60 s, then the
            # next cleanup). RQ's worker names its connection and lists the clients as it is
            # built: Redis going away again right then is an outage like any other.
            worker = BridgeWorker(
                queues,
                connection=connection,
                job_monitoring_interval=10,
                maintenance_interval=env.maintenance_interval_s,
                worker_ttl=60,
            )
            worker.outage = outage
            worker.work(with_scheduler=main, burst=burst, logging_level="WARNING")
        except Exception as exc:
            # RQ's loop quits on any Redis error but a refused connection while idle, and its
            # teardown then raises the same error again.
            if not redis_unavailable(exc):
                raise
            outage.begin(exc, "the worker waits and resumes by itself")
        if burst or (worker is not None and worker.stop_requested):
            return 0
        if not outage.active:
            log.warning("the RQ worker loop ended without a stop request; restarting it")
            try:
                stopping.wait(1.0)
            except StopRequested:  # a SIGTERM in this wait, through RQ's handler still in place
                return 0


def _wait_for_redis(connection: redis.Redis, outage: Outage, stop: threading.Event) -> bool:
    """Wait until Redis takes writes (True) or SIGTERM/SIGINT arrives (False).

    The handlers stay: a signal before RQ installs its own still stops the worker (it checks
    ``stop`` then)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return wait_until_writable(connection, stop, outage, "the worker waits and resumes by itself")


def run_api(settings: Settings, bind: str, workers: int) -> int:
    # gevent has to patch the standard library before ssl, socket and threading are imported,
    # and this process imported them long ago: gunicorn runs in a fresh interpreter
    # (bridge.serve_api) that patches first. graceful_timeout (BRIDGE_API_GRACEFUL_TIMEOUT_S)
    # comes from gunicorn_conf, so a plain ``gunicorn -c python:bridge.observability.gunicorn_conf``
    # shuts down the same way.
    del settings  # validated by the caller; the workers read it again from the environment
    argv = [
        sys.executable,
        "-m",
        "bridge.serve_api",
        "--config",
        "python:bridge.observability.gunicorn_conf",
        "--bind",
        bind,
        "--workers",
        str(workers),
        "bridge.api.wsgi:app",
    ]
    _flush_logs()
    os.execv(sys.executable, argv)
    return 0  # pragma: no cover - execv does not return


def show_quarantine(env: BridgeEnvironment, limit: int, account_id: str | None = None) -> int:
    """One JSON object per line on stdout, newest first."""
    from bridge.config.redis_conn import connect
    from bridge.inbound.quarantine import Quarantine

    assert env.redis_url
    chosen = load_accounts(accounts_environ(env), need_passwords=False).get(account_id)
    if chosen is None:
        print(f"ucwa-bridge quarantine: no account {account_id!r} is configured", file=sys.stderr)
        return 2
    try:
        entries = Quarantine(connect(env.redis_url), chosen.key).entries(limit)
    except redis.RedisError as exc:
        print(f"ucwa-bridge quarantine: Redis is unavailable: {exc}", file=sys.stderr)
        return 1
    for entry in entries:
        print(json.dumps(entry, ensure_ascii=False))
    return 0


def setup_logging(command: str) -> None:
    """JSON (or text) logs with the command's role on every line and uncaught exceptions as
    one line each. A bad BRIDGE_LOG_LEVEL or BRIDGE_LOG_FORMAT leaves the defaults in place:
    ``read_config`` then reports it with every other fault."""
    try:
        logs = read_variables(os.environ, ("log_level", "log_format"))
        level, json_lines = logs.log_level, logs.log_format == "json"
    except ConfigError:
        level, json_lines = "INFO", True
    configure_logging(level, json=json_lines, role=command)
    install_excepthooks()


def read_config(command: str) -> tuple[BridgeEnvironment, list[WebhookEndpoint]]:
    """The checked variables of ``command`` and, for the roles that deliver or show them, the
    webhook endpoints. A ``ConfigError`` lists every fault, one per variable."""
    problems: list[tuple[str, str]] = []
    env: BridgeEnvironment | None = None
    try:
        env = read_environment(command)
    except ConfigError as exc:
        problems.extend(exc.problems)
    endpoints: list[WebhookEndpoint] = []
    if command in ("api", "worker", "poller"):
        try:
            endpoints, _ = webhook_config()
        except WebhookConfigError as exc:
            where, _, problem = str(exc).partition(": ")
            if where not in {variable for variable, _ in problems}:
                problems.append((where, problem))
    if env is not None and endpoints:
        known = set(load_accounts(accounts_environ(env), need_passwords=False).ids) or {"default"}
        for endpoint in endpoints:
            unknown = sorted((endpoint.accounts or frozenset()) - known)
            if unknown:
                problems.append(
                    (
                        "BRIDGE_WEBHOOKS",
                        f"endpoint {endpoint.id!r} names unknown accounts {', '.join(unknown)}",
                    )
                )
    if problems:
        raise ConfigError.of(problems)
    assert env is not None
    return env, endpoints


def config_error(exc: ConfigError) -> int:
    """One line per variable that is wrong, in the log format, and the exit code for it."""
    for variable, problem in exc.problems:
        cli_log.error(
            "configuration error: %s: %s",
            variable,
            problem,
            extra={"variable": variable if variable.startswith("BRIDGE_") else None},
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


def plain_text(text: str) -> str:
    """Help text from a docstring: reST roles (:class:`X`) and literals (``x``) as plain text."""
    text = re.sub(r":[a-z]+(?::[a-z]+)?:`~?([^`]+)`", r"\1", text)
    return text.replace("``", "")


COMMAND_HELP = {
    "api": "serve the HTTP API with gunicorn",
    "worker": "run an RQ worker (send and webhook queues, with the scheduler)",
    "poller": "own the UCWA sessions and event channels of the accounts; poller processes "
    "share the accounts (run at least two: the others take over a stopped one's share)",
    "demo": "run everything locally against the UCWA simulator (see ucwa-bridge demo --help)",
    "health": "exit 0 if the role is healthy, else 1 with one reason per line",
    "quarantine": "print the event-channel input the poller set aside, newest first",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ucwa-bridge",
        description=plain_text(__doc__ or ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parsers = {
        name: sub.add_parser(
            name,
            help=text,
            description=f"ucwa-bridge {name}: {text}.",
            epilog=variables_help(name),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        for name, text in COMMAND_HELP.items()
    }
    parsers["api"].add_argument(
        "--bind", help="where gunicorn listens (default: BRIDGE_API_BIND, else 127.0.0.1:8080)"
    )
    parsers["worker"].add_argument(
        "--burst", action="store_true", help="exit when the queues are empty"
    )
    parsers["health"].add_argument(
        "role",
        choices=("api", "poller", "worker"),
        help="api: Redis takes writes and, with accounts configured, every account's poller "
        "is live; poller: every account's poller is live; worker: an RQ worker on this host "
        "heartbeats",
    )
    parsers["quarantine"].add_argument(
        "--limit", type=int, default=100, help="at most this many (default 100)"
    )
    parsers["quarantine"].add_argument(
        "--account", default=None, help="the account's id (default: the default account)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["demo"]:
        # The demo has options of its own (``ucwa-bridge demo --help``) and sets every other
        # variable itself for the processes it starts.
        from bridge.demo import run_demo

        setup_logging("demo")
        try:
            read_config("demo")
        except ConfigError as exc:
            return config_error(exc)
        return run_demo(args_list[1:])
    args = build_parser().parse_args(args_list)
    setup_logging(args.command)
    bad_options = option_problems(args)
    try:
        env, endpoints = read_config(args.command)
    except ConfigError as exc:
        return config_error(ConfigError.of([*exc.problems, *bad_options]))
    if bad_options:
        return config_error(ConfigError.of(bad_options))
    if args.command == "health":
        return run_health(args.role, env)
    if args.command == "quarantine":
        return show_quarantine(env, max(1, args.limit), args.account)
    settings = Settings.from_variables(args.command, env)
    add_secrets([settings.ucwa_password or "", *(k.secret for k in settings.api_keys)])
    add_secrets(account.password for account in settings.accounts)
    add_secrets(secret for endpoint in endpoints for secret in endpoint.secrets)
    # credentials in webhook URLs (user:password@, token=…) are secrets too
    add_secrets(value for endpoint in endpoints for value in url_secrets(endpoint.url))
    if args.command == "poller":
        knobs = poller_settings(env)
        log_startup(cli_log, "poller", effective_settings(settings, poller=knobs))
        return run_poller(settings, env)
    if args.command == "worker":
        knobs = send_settings(env)
        log_startup(
            cli_log,
            "worker",
            effective_settings(settings, send=knobs, webhook_endpoints=len(endpoints)),
        )
        return run_worker(settings, env, burst=args.burst)
    bind = args.bind or env.api_bind
    log_startup(
        cli_log,
        "api",
        effective_settings(
            settings,
            bind=bind,
            workers=env.api_workers,
            graceful_timeout_s=env.api_graceful_timeout_s,
            webhook_endpoints=len(endpoints),
        ),
    )
    return run_api(settings, bind, env.api_workers)


def option_problems(args: argparse.Namespace) -> list[tuple[str, str]]:
    """Options checked as the variables they stand in for: ``--bind`` as BRIDGE_API_BIND."""
    bind = getattr(args, "bind", None)
    if not bind:
        return []
    try:
        check_bind(bind)
    except ValueError as exc:
        return [("--bind", str(exc))]
    return []


def run_health(role: str, env: BridgeEnvironment) -> int:
    from bridge.observability.health import check

    accounts = load_accounts(accounts_environ(env), need_passwords=False)
    if role == "poller" and not accounts:
        return config_error(
            ConfigError(
                "BRIDGE_UCWA_USERNAME",
                "is required to check the poller (or BRIDGE_ACCOUNTS, BRIDGE_ACCOUNTS_FILE)",
            )
        )
    assert env.redis_url
    return check(role, env.redis_url, [a.key for a in accounts] or None)


if __name__ == "__main__":
    sys.exit(main())
