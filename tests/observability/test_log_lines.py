"""Every line a role prints is one JSON object with its role: access log, start-up line,
uncaught exceptions, warnings, configuration errors and the levels operators act on.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from gunicorn.config import Config
from gunicorn.glogging import Logger, SafeAtoms

import bridge.observability.logging as bridge_logging
from bridge.cli import effective_settings
from bridge.config.settings import Settings
from bridge.observability.logging import (
    ACCESS_LOGGER,
    KEY_ID_ENVIRON,
    REDACTED,
    JsonFormatter,
    RedactingFormatter,
    configure_logging,
    gunicorn_logconfig,
    log_startup,
    package_version,
)
from bridge.session.lease import PollerLease
from bridge.ucwa.auth import Credentials
from bridge.webhooks.delivery import AttemptOutcome, log_outcome
from workers.poller import Poller

CLEAN = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
FIELDS = ("time", "level", "logger", "message", "role")


@pytest.fixture()
def root_stream(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The root logger writing JSON to a buffer; handlers, level and role restored after."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    monkeypatch.setattr(bridge_logging, "_role", None)
    stream = io.StringIO()
    try:
        yield stream
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)
        logging.captureWarnings(False)


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def access_record(query: str = "", status: str = "202 ACCEPTED") -> logging.LogRecord:
    """The record gunicorn's ``Logger.access`` logs, built from gunicorn's own atoms."""
    glog = Logger.__new__(Logger)
    glog.cfg = Config()
    environ = {
        "REQUEST_METHOD": "POST",
        "RAW_URI": "/messages" + (f"?{query}" if query else ""),
        "PATH_INFO": "/messages",
        "QUERY_STRING": query,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "10.1.2.3",
        "HTTP_USER_AGENT": "curl/8",
        KEY_ID_ENVIRON: "3f2a9c0011223344",
    }
    request = SimpleNamespace(
        headers=[("AUTHORIZATION", "Bearer e2e-secret-api-key-0123"), ("X-REQUEST-ID", "abc")]
    )
    response = SimpleNamespace(
        status=status, sent=57, headers=[("Content-Type", "json"), ("X-Request-ID", "abc")]
    )
    atoms = SafeAtoms(glog.atoms(response, request, environ, timedelta(microseconds=12_345)))
    return logging.LogRecord(
        ACCESS_LOGGER, logging.INFO, __file__, 1, glog.cfg.access_log_format, (atoms,), None
    )


def test_the_access_log_is_structured_and_joinable_by_request_id() -> None:
    line = JsonFormatter(role="api").format(access_record("cursor=7&token=hunter2-xyz"))
    entry = json.loads(line)
    assert entry["role"] == "api" and entry["logger"] == ACCESS_LOGGER
    assert entry["message"] == "POST /messages 202"
    assert (entry["method"], entry["path"], entry["status"]) == ("POST", "/messages", 202)
    assert entry["duration_ms"] == 12.345 and entry["bytes"] == 57
    assert (entry["request_id"], entry["key_id"]) == ("abc", "3f2a9c0011223344")
    assert entry["remote_addr"] == "10.1.2.3" and entry["user_agent"] == "curl/8"
    assert entry["query"] == f"cursor=7&token={REDACTED}"
    assert "e2e-secret-api-key" not in line and "hunter2" not in line


def test_the_text_access_line_is_one_line_too() -> None:
    text = RedactingFormatter(role="api").format(access_record())
    assert "\n" not in text and text.startswith("api ")
    assert "POST /messages 202 12.345ms" in text and "request_id=abc" in text
    assert "key_id=3f2a9c0011223344" in text


def test_gunicorn_logconfig_names_the_role_and_tolerates_a_bad_level() -> None:
    config = gunicorn_logconfig("nonsense")
    assert config["formatters"]["bridge"]["role"] == "api"
    assert config["root"]["level"] == "INFO"
    assert gunicorn_logconfig("debug", json=False)["root"]["level"] == "DEBUG"


def test_role_on_every_line_and_pasted_tracebacks_move_to_exc_info(
    root_stream: io.StringIO,
) -> None:
    configure_logging("INFO", stream=root_stream, role="worker")
    logging.getLogger("rq.scheduler").error(
        "Scheduler [PID 7] raised an exception.\nTraceback (most recent call last):\n"
        '  File "x.py", line 1\nConnectionError: gone\n'
    )
    logging.getLogger("urllib3.connectionpool").warning("Retrying after %s", "reset")
    first, second = lines(root_stream.getvalue())
    assert all(entry["role"] == "worker" for entry in (first, second))
    assert first["message"] == "Scheduler [PID 7] raised an exception."
    assert first["exc_info"].startswith("Traceback") and "ConnectionError" in first["exc_info"]
    assert second["message"] == "Retrying after reset" and "exc_info" not in second


def test_warnings_are_logged_as_json(root_stream: io.StringIO) -> None:
    configure_logging("INFO", stream=root_stream, role="poller")
    import warnings

    warnings.warn("this knob is deprecated", DeprecationWarning, stacklevel=1)
    (entry,) = lines(root_stream.getvalue())
    assert entry["logger"] == "py.warnings" and "this knob is deprecated" in entry["message"]
    assert entry["role"] == "poller" and entry["level"] == "WARNING"


def test_start_up_line_has_version_and_settings_without_secrets(
    root_stream: io.StringIO,
) -> None:
    configure_logging("INFO", stream=root_stream, role="api")
    settings = Settings.from_env(
        "api",
        {
            "BRIDGE_REDIS_URL": "redis://:redis-pass-123@cache:6379/0",
            "BRIDGE_API_KEYS": "api-key-secret-0123456789",
            "BRIDGE_UCWA_PASSWORD": "ucwa-password-0123",
        },
    )
    log_startup(
        logging.getLogger("ucwa_bridge.cli"), "api", effective_settings(settings, bind=":1")
    )
    line = root_stream.getvalue()
    (entry,) = lines(line)
    assert entry["message"] == "api starting" and entry["role"] == "api"
    assert entry["version"] == package_version() != "unknown"
    assert entry["settings"]["bind"] == ":1" and entry["settings"]["max_body_bytes"] == 65536
    assert entry["settings"]["api_key_ids"] == [settings.api_keys[0].key_id]
    assert entry["settings"]["ucwa_password"] is None  # the api never reads it
    for secret in ("redis-pass-123", "api-key-secret-0123456789", "ucwa-password-0123"):
        assert secret not in line


@pytest.mark.parametrize(
    ("verdict", "level"),
    [("dead", "WARNING"), ("disable_endpoint", "WARNING"), ("retry", "INFO")],
)
def test_dead_deliveries_and_disabled_endpoints_are_warnings(
    root_stream: io.StringIO, verdict: str, level: str
) -> None:
    configure_logging("INFO", stream=root_stream, role="worker")
    log_outcome(AttemptOutcome("dlv_1", "default", "message.received", 5, verdict, "x", 410, 3))
    (entry,) = lines(root_stream.getvalue())
    assert entry["level"] == level and entry["verdict"] == verdict


def test_a_standby_poller_names_the_lease_holder(
    redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    account = "sip:bot@contoso.com"
    holder = PollerLease(redis_client, account, ttl_s=30)
    assert holder.try_acquire()
    poller = Poller(redis_client, Credentials(account, "pw"), "http://127.0.0.1:1/discover")
    with caplog.at_level(logging.INFO, logger="ucwa_bridge.poller"):
        poller._log_standby()
    (record,) = caplog.records
    assert record.getMessage() == "standing by: another poller holds the lease"
    assert record.__dict__["lease_holder"] == holder.holder


def run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**CLEAN, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_uncaught_exceptions_are_one_json_line_each() -> None:
    result = run(
        "import threading\n"
        "from bridge.observability.logging import configure_logging, install_excepthooks\n"
        "configure_logging(role='poller'); install_excepthooks()\n"
        "t = threading.Thread(target=lambda: 1 / 0, name='keeper'); t.start(); t.join()\n"
        "raise RuntimeError('start-up failed, password=hunter2-xyz')\n"
    )
    assert result.returncode == 1
    in_thread, in_main = lines(result.stderr)
    assert in_thread["thread_name"] == "keeper" and "ZeroDivisionError" in in_thread["exc_info"]
    assert in_main["level"] == "CRITICAL" and in_main["role"] == "poller"
    assert "RuntimeError" in in_main["exc_info"] and "hunter2" not in result.stderr


@pytest.mark.parametrize(
    ("variable", "value"), [("BRIDGE_LOG_LEVEL", "LOUD"), ("BRIDGE_LOG_FORMAT", "xml")]
)
def test_a_bad_log_setting_is_one_line_and_exit_78(variable: str, value: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "worker"],
        env={
            **CLEAN,
            "BRIDGE_REDIS_URL": "redis://127.0.0.1:1/0",
            "BRIDGE_UCWA_DISCOVERY_URL": "https://lyncdiscover.contoso.com",
            "BRIDGE_UCWA_USERNAME": "bot@contoso.com",
            "BRIDGE_UCWA_PASSWORD": "hunter2-password",
            variable: value,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 78
    (entry,) = lines(result.stderr)
    assert all(name in entry for name in FIELDS) and entry["role"] == "worker"
    assert entry["variable"] == variable and variable in entry["message"]
    assert result.stdout == ""
