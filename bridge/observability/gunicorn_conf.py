"""Gunicorn settings for the api role: logs in the bridge's format, metrics across workers.

Load with ``gunicorn -c python:bridge.observability.gunicorn_conf``; it runs in the master first.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bridge.observability.logging import gunicorn_logconfig

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
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


prepare_multiproc_dir()
# The default control socket (~/.gunicorn/gunicorn.ctl) is shared by every gunicorn of the user.
control_socket_disable = True
logconfig_dict = gunicorn_logconfig(
    os.environ.get("BRIDGE_LOG_LEVEL", "INFO"),
    json=os.environ.get("BRIDGE_LOG_FORMAT", "json").strip().lower() != "text",
)


def child_exit(server: Any, worker: Any) -> None:
    """Let a dead worker's live gauges drop out; its counters keep counting in the total."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    for path in _created:
        shutil.rmtree(path, ignore_errors=True)
