"""The command line: one line per bad variable and exit 78, --version, and each command's --help
listing what it reads (the list comes from the settings model)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time
from importlib.metadata import version

import pytest
import requests

from bridge import cli
from bridge.config.environment import shown_default
from bridge.config.variables import COMMANDS, fields_of, variable

CLEAN = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
UCWA = {
    "BRIDGE_REDIS_URL": "redis://127.0.0.1:1/0",
    "BRIDGE_UCWA_DISCOVERY_URL": "https://lyncdiscover.contoso.com",
    "BRIDGE_UCWA_USERNAME": "sip:bot@contoso.com",
    "BRIDGE_UCWA_PASSWORD": "Very-Secret-Pw",
}
API = {"BRIDGE_REDIS_URL": "redis://127.0.0.1:1/0", "BRIDGE_API_KEYS": "a-long-api-key-0123456789"}


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge.cli", *args],
        env={**CLEAN, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def errors(stderr: str) -> list[dict[str, object]]:
    """The configuration-error lines (JSON) a failed start printed."""
    entries = [json.loads(line) for line in stderr.splitlines()]
    assert all(e["message"].startswith("configuration error: ") for e in entries), stderr
    return entries


@pytest.mark.parametrize(
    ("command", "env", "bad"),
    [
        ("worker", {**UCWA, "BRIDGE_LOG_LEVEL": "LOUD"}, "BRIDGE_LOG_LEVEL"),
        ("api", {**API, "BRIDGE_API_WORKERS": "two"}, "BRIDGE_API_WORKERS"),
        ("poller", {**UCWA, "BRIDGE_LOG_FORMAT": "xml"}, "BRIDGE_LOG_FORMAT"),
        ("worker", {**UCWA, "BRIDGE_MAX_ATTEMPTS": "many"}, "BRIDGE_MAX_ATTEMPTS"),
        ("poller", {**UCWA, "BRIDGE_METRICS_PORT": "70000"}, "BRIDGE_METRICS_PORT"),
        ("api", {**API, "BRIDGE_RATE_LIMIT": "lots"}, "BRIDGE_RATE_LIMIT"),
        ("worker", {**UCWA, "BRIDGE_UCWA_DISCOVERY_URL": "ftp://x"}, "BRIDGE_UCWA_DISCOVERY_URL"),
        ("health", {"BRIDGE_REDIS_URL": "http://x"}, "BRIDGE_REDIS_URL"),
        ("quarantine", {"BRIDGE_REDIS_URL": "redis://r"}, "BRIDGE_UCWA_USERNAME"),
    ],
)
def test_a_bad_variable_is_one_line_naming_it_and_exit_78(
    command: str, env: dict[str, str], bad: str
) -> None:
    result = run(command, *(["api"] if command == "health" else []), **env)
    assert result.returncode == 78, result.stderr
    (entry,) = errors(result.stderr)
    assert entry["variable"] == bad and bad in str(entry["message"])
    assert entry["role"] == command
    assert "Very-Secret-Pw" not in result.stderr + result.stdout


def test_every_bad_variable_is_named_at_once() -> None:
    result = run(
        "worker",
        BRIDGE_LOG_LEVEL="LOUD",
        BRIDGE_UCWA_USERNAME="sip:bot@contoso.com",
        BRIDGE_MAX_ATTEMPTS="many",
        BRIDGE_WEBHOOK_JITTER="2",
        BRIDGE_SWEP_S="1",
    )
    assert result.returncode == 78
    assert [e["variable"] for e in errors(result.stderr)] == [
        "BRIDGE_LOG_LEVEL",
        "BRIDGE_REDIS_URL",
        "BRIDGE_UCWA_DISCOVERY_URL",
        "BRIDGE_UCWA_PASSWORD",
        "BRIDGE_MAX_ATTEMPTS",
        "BRIDGE_WEBHOOK_JITTER",
        "BRIDGE_SWEP_S",
    ]


def test_an_unknown_name_is_refused_with_the_closest_known_one() -> None:
    result = run("api", **API, BRIDGE_RATE_LIMT="5/s", BRIDGE_FOO="1")
    assert result.returncode == 78
    assert [e["message"] for e in errors(result.stderr)] == [
        "configuration error: BRIDGE_FOO: unknown variable; no command reads it",
        "configuration error: BRIDGE_RATE_LIMT: unknown variable; did you mean BRIDGE_RATE_LIMIT?",
    ]


def test_a_bad_webhook_endpoint_is_named_with_the_other_faults() -> None:
    result = run("worker", **UCWA, BRIDGE_WEBHOOK_URL="https://hooks.example", BRIDGE_SWEEP_S="x")
    assert result.returncode == 78
    messages = [str(e["message"]) for e in errors(result.stderr)]
    assert len(messages) == 1 and "BRIDGE_WEBHOOK_SECRET" in messages[0]  # sweep: poller only


def test_version_prints_the_package_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"ucwa-bridge {version('ucwa-bridge')}"


def test_health_help_exits_0_and_health_api_asks_for_no_ucwa_settings() -> None:
    helped = run("health", "--help")
    assert helped.returncode == 0 and "BRIDGE_POLLER_MAX_LAG_S" in helped.stdout
    # Redis is down: the check runs (exit 1, the reason on stdout) without any UCWA variable.
    checked = run("health", "api", BRIDGE_REDIS_URL="redis://127.0.0.1:1/0")
    assert checked.returncode == 1, checked.stderr
    assert checked.stdout.startswith("redis: unreachable") and checked.stderr == ""
    poller = run("health", "poller", BRIDGE_REDIS_URL="redis://127.0.0.1:1/0")
    assert poller.returncode == 78
    assert [e["variable"] for e in errors(poller.stderr)] == ["BRIDGE_UCWA_USERNAME"]


def help_of(*args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        if args[:1] == ("demo",):
            from bridge.demo import parse_args

            parse_args(list(args[1:]))
        else:
            cli.build_parser().parse_args(list(args))
    assert done.value.code == 0
    return out.getvalue()


@pytest.mark.parametrize("command", COMMANDS)
def test_each_commands_help_lists_every_variable_it_reads(command: str) -> None:
    text = help_of(command, "--help")
    listed = set(re.findall(r"^  (BRIDGE_[A-Z0-9_]+)  \[", text, re.MULTILINE))
    assert listed == {variable(name) for name in fields_of(command)}
    for name in fields_of(command):
        line = next(x for x in text.splitlines() if x.startswith(f"  {variable(name)}  ["))
        assert "required" in line or f"default: {shown_default(name)}" in line


@pytest.mark.parametrize("args", [(), *((c,) for c in COMMANDS)])
def test_help_text_has_no_markup(args: tuple[str, ...]) -> None:
    text = help_of(*args, "--help")
    assert "``" not in text
    assert not re.search(r":[a-z]+:`", text)


def test_required_variables_are_marked() -> None:
    text = help_of("worker", "--help")
    assert (
        "  BRIDGE_UCWA_PASSWORD  [required unless BRIDGE_ACCOUNTS or BRIDGE_ACCOUNTS_FILE is set]"
        in text
    )
    assert "  BRIDGE_API_KEYS  [required unless BRIDGE_AUTH_DISABLED is true]" in help_of(
        "api", "--help"
    )


def test_the_api_serves_from_a_gevent_patched_interpreter_without_warnings(redis_url: str) -> None:
    """``ucwa-bridge api`` replaces itself with an interpreter that patches before it imports."""
    from bridge.demo import listen

    with listen(0, "API") as sock:  # bound here: no other process can take it first
        port = sock.getsockname()[1]
        process = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "api", "--bind", f"fd://{sock.fileno()}"],
            env={**CLEAN, **API, "BRIDGE_REDIS_URL": redis_url, "BRIDGE_API_WORKERS": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            pass_fds=(sock.fileno(),),
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except (requests.ConnectionError, requests.Timeout):  # not serving yet
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.1)
        assert answer.status_code == 200
        with open(f"/proc/{process.pid}/cmdline", "rb") as cmdline:
            assert b"bridge.serve_api" in cmdline.read().split(b"\0")
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "MonkeyPatchWarning" not in stderr
    assert "Traceback" not in stderr
