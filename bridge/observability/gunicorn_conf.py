"""Gunicorn settings for the api role: logs in the bridge's format, metrics across workers,
graceful shutdown.

Load with ``gunicorn -c python:bridge.observability.gunicorn_conf``; it runs in the master first.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bridge.config.environment import read_variables
from bridge.config.settings import CONFIG_EXIT_CODE, ConfigError, gunicorn_limits
from bridge.config.variables import BridgeEnvironment
from bridge.observability.logging import gunicorn_logconfig

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# What this file reads; the app checks the rest when a worker builds it (``bridge.api.wsgi``).
FIELDS = (
    "log_level",
    "log_format",
    "api_graceful_timeout_s",
    "api_limit_request_line",
    "api_limit_request_fields",
    "api_limit_request_field_size",
    "api_worker_connections",
    "api_header_timeout_s",
    "api_body_timeout_s",
)
_created: list[str] = []


def prepare_multiproc_dir() -> str:
    """Point ``PROMETHEUS_MULTIPROC_DIR`` at an empty directory before any worker imports
    prometheus_client: a private temporary one if unset, else the given one, emptied of the
    files a previous run left (they would otherwise be summed into this run's counters)."""
    path = os.environ.get(MULTIPROC_ENV, "").strip()
    if not path:
        path = tempfile.mkdtemp(prefix="ucwa-bridge-metrics-")
        _created.append(path)
        os.environ[MULTIPROC_ENV] = path
        return path
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)
    return path


def graceful_timeout_s(env: BridgeEnvironment) -> int:
    """Seconds gunicorn gives in-flight requests after SIGTERM (whole seconds, at least 1)."""
    return max(1, math.ceil(env.api_graceful_timeout_s))


def read_config() -> BridgeEnvironment:
    """What this file reads from ``BRIDGE_*``; one line per invalid variable and exit 78."""
    try:
        return read_variables(os.environ, FIELDS)
    except ConfigError as exc:
        for line in exc.lines:
            print(f"configuration error: {line}", file=sys.stderr)
        raise SystemExit(CONFIG_EXIT_CODE) from None


prepare_multiproc_dir()
# gevent: a greenlet per connection, so clients that trickle headers or bodies cannot hold the
# workers /healthz and POST /messages need (sync workers were held, one per slow client). The
# worker cuts a client off at BRIDGE_API_HEADER_TIMEOUT_S / BRIDGE_API_BODY_TIMEOUT_S (408), and
# answers every refusal gunicorn writes itself (400, 414, 431, ...) as problem+json.
worker_class = "bridge.api.gunicorn_worker.ProblemGeventWorker"
_env = read_config()
_limits = gunicorn_limits(_env)
# Connections a worker holds at once; beyond it, new ones wait in the listen backlog.
worker_connections = _limits["worker_connections"]
limit_request_line = _limits["limit_request_line"]
limit_request_fields = _limits["limit_request_fields"]
limit_request_field_size = _limits["limit_request_field_size"]
# SIGTERM: the master closes the listening socket and tells the workers to finish the request
# each is serving, then exits 0; a request still running after graceful_timeout is cut off.
# Keep it below the orchestrator's grace period (Kubernetes terminationGracePeriodSeconds,
# compose stop_grace_period).
graceful_timeout = graceful_timeout_s(_env)
# The default control socket (~/.gunicorn/gunicorn.ctl) is shared by every gunicorn of the user.
control_socket_disable = True
logconfig_dict = gunicorn_logconfig(_env.log_level, json=_env.log_format == "json")


def child_exit(server: Any, worker: Any) -> None:
    """Let a dead worker's live gauges drop out; its counters keep counting in the total."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    for path in _created:
        shutil.rmtree(path, ignore_errors=True)
