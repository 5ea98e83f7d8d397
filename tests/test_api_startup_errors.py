"""``ucwa-bridge api`` that cannot start says so in log lines only: every line it prints, its
gunicorn child's included, is one JSON object, and a bad setting is named and exits 78."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from bridge.config.embedded_redis import free_port

CLEAN = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "GUNICORN_"))}
API = {
    "BRIDGE_REDIS_URL": "redis://127.0.0.1:1/0",
    "BRIDGE_API_KEYS": "a-long-api-key-0123456789",
    "BRIDGE_API_WORKERS": "1",
}
SERVE_API = ["-m", "bridge.serve_api", "--config", "python:bridge.observability.gunicorn_conf"]


@dataclass
class Start:
    """One start-up to try: ``args`` after the interpreter and extra environment."""

    args: list[str]
    env: dict[str, str]


def api(*args: str, **env: str) -> Start:
    return Start(["-m", "bridge.cli", "api", *args], env)


def gunicorn(bind: str, app: str = "bridge.api.wsgi:app", **env: str) -> Start:
    """The child ``ucwa-bridge api`` execs, started directly (as a custom command would)."""
    return Start([*SERVE_API, "--bind", bind, app], env)


# What goes wrong, and the setting the one configuration-error line names.
CONFIGURATION_ERRORS = {
    "a port past 65535": (api("--bind", "127.0.0.1:99999"), "--bind"),
    "an unclosed IPv6 bracket": (api("--bind", "[::1"), "--bind"),
    "a port that is no number": (api("--bind", "127.0.0.1:http"), "--bind"),
    "an IPv6 address without brackets": (api("--bind", "::1"), "bind"),
    "a file descriptor that is no number": (api("--bind", "fd://abc"), "bind"),
    "the same from BRIDGE_API_BIND": (api(BRIDGE_API_BIND="::1"), "bind"),
    "a port past 65535, gunicorn started directly": (gunicorn("127.0.0.1:70000"), "bind"),
    "a worker class that cannot be imported": (
        api(GUNICORN_CMD_ARGS="--worker-class no_such_module.Worker"),
        "worker_class",
    ),
    "an option gunicorn does not know": (
        api(GUNICORN_CMD_ARGS="--no-such-option"),
        "GUNICORN_CMD_ARGS",
    ),
    "an option value gunicorn refuses": (
        api(GUNICORN_CMD_ARGS="--workers many"),
        "GUNICORN_CMD_ARGS",
    ),
    "a variable gunicorn's settings read, gunicorn started directly": (
        gunicorn("127.0.0.1:0", BRIDGE_API_HEADER_TIMEOUT_S="soon"),
        "BRIDGE_API_HEADER_TIMEOUT_S",
    ),
}


def json_lines(output: str, where: str) -> list[dict[str, Any]]:
    """Every line of ``output`` as a JSON object (none is anything else)."""
    entries = []
    for line in output.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            raise AssertionError(f"a line on {where} that is no JSON: {line!r}\n{output}") from None
        assert isinstance(entry, dict), line
        entries.append(entry)
    return entries


def start(attempt: Start) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *attempt.args],
        env={**CLEAN, **API, **attempt.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def outcome(process: subprocess.Popen[str]) -> tuple[int, list[dict[str, Any]]]:
    stdout, stderr = process.communicate(timeout=60)
    return process.returncode, json_lines(stdout, "stdout") + json_lines(stderr, "stderr")


def test_every_failed_start_prints_json_lines_and_a_bad_setting_exits_78() -> None:
    # All at once: each is an interpreter start, most of them a gunicorn master's too, and
    # gunicorn tries a port in use five times a second apart.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        in_use = f"127.0.0.1:{holder.getsockname()[1]}"
        others = {
            "a port in use": (api("--bind", in_use), "in use"),
            "a port in use, gunicorn started directly": (gunicorn(in_use), "in use"),
            # The worker prints the import error itself (gunicorn's arbiter), after logging it.
            "an app that cannot be imported": (
                gunicorn(f"127.0.0.1:{free_port()}", "no_such_app:app"),
                "No module named 'no_such_app'",
            ),
        }
        attempts = {**CONFIGURATION_ERRORS, **others}
        processes = {case: start(attempt) for case, (attempt, _) in attempts.items()}
        outcomes = {case: outcome(process) for case, process in processes.items()}
    failures = []
    for case, (_, setting) in CONFIGURATION_ERRORS.items():
        code, entries = outcomes[case]
        errors = [e for e in entries if e["message"].startswith("configuration error: ")]
        named = bool(errors) and errors[0]["message"].startswith(
            f"configuration error: {setting}: "
        )
        if code != 78 or not named or any(e["level"] == "CRITICAL" for e in entries):
            failures.append(f"{case}: exit {code}, lines {entries}")
    for case, (_, said) in others.items():
        code, entries = outcomes[case]
        if code in (0, 78) or not any(said in e["message"] for e in entries):
            failures.append(f"{case}: exit {code}, lines {entries}")
    for case, (_, entries) in outcomes.items():
        if any(e.get("role") != "api" for e in entries):
            failures.append(f"{case}: a line without the api role: {entries}")
    assert failures == [], "\n".join(failures)


def test_an_unimportable_worker_class_keeps_its_traceback_in_exc_info() -> None:
    code, entries = outcome(start(api(GUNICORN_CMD_ARGS="--worker-class no_such_module.Worker")))
    assert code == 78
    (error,) = [e for e in entries if e["level"] == "ERROR"]
    assert error["message"] == (
        "configuration error: worker_class: class uri 'no_such_module.Worker' invalid or not "
        "found: ModuleNotFoundError: No module named 'no_such_module'"
    )
    assert error["setting"] == "worker_class"
    assert error["exc_info"].startswith("Traceback (most recent call last):\n")
    assert "No module named 'no_such_module'" in error["exc_info"]


def test_the_api_entry_point_leaves_prometheus_client_to_the_workers() -> None:
    """prometheus_client picks its multiprocess mode when first imported: gunicorn's master
    must not import it before the gunicorn settings set its directory, or every worker counts
    in memory and ``/metrics`` shows none of the API's requests."""
    probe = (
        "import sys, bridge.serve_api\n"
        "bridge.serve_api.use_os_poll_for_idle_checks()\n"
        "print(sorted(m for m in sys.modules if m.startswith(('prometheus_client', 'bridge.api'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout
