"""The command line refuses bad configuration with one line naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CLEAN = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}


def run(role: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge.cli", role],
        env={**CLEAN, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize("role", ["api", "worker", "poller"])
def test_missing_redis_url_is_named(role: str) -> None:
    result = run(role)
    assert result.returncode == 78
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "BRIDGE_REDIS_URL" in lines[0]


def test_poller_needs_ucwa_credentials() -> None:
    result = run(
        "poller",
        BRIDGE_REDIS_URL="redis://127.0.0.1:1/0",
        BRIDGE_UCWA_DISCOVERY_URL="https://lyncdiscover.contoso.com",
    )
    assert result.returncode == 78
    assert "BRIDGE_UCWA_USERNAME" in result.stderr


def test_bad_number_is_named_and_password_not_echoed() -> None:
    result = run(
        "worker",
        BRIDGE_REDIS_URL="redis://127.0.0.1:1/0",
        BRIDGE_UCWA_DISCOVERY_URL="https://lyncdiscover.contoso.com",
        BRIDGE_UCWA_USERNAME="sip:bot@contoso.com",
        BRIDGE_UCWA_PASSWORD="Very-Secret-Pw",
        BRIDGE_MAX_ATTEMPTS="many",
    )
    assert result.returncode == 78
    assert "BRIDGE_MAX_ATTEMPTS" in result.stderr
    assert "Very-Secret-Pw" not in result.stderr + result.stdout
