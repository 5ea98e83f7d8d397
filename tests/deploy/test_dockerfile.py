"""Lint-like checks of the Dockerfile and .dockerignore (no Docker engine needed)."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from dataclasses import dataclass

import pytest

from tests.deploy.conftest import DOCKERFILE, DOCKERIGNORE, ROOT


@dataclass
class Instruction:
    line: int
    keyword: str
    args: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comments inside a continued instruction
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        keyword, _, args = " ".join(p for p in pending if p).partition(" ")
        instructions.append(Instruction(start, keyword.upper(), args.strip()))
        pending = []
    assert not pending, "the Dockerfile ends inside a continued line"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = instruction.args.split()
            words = [w for w in words if not w.startswith("--platform")]
            base = re.sub(
                r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?",
                lambda m: global_args.get(m.group(1), m.group(0)),
                words[0],
            )
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name, []))
        elif not stages:
            assert instruction.keyword == "ARG", f"line {instruction.line}: before FROM"
            name, _, default = instruction.args.partition("=")
            global_args[name] = default
        else:
            stages[-1].instructions.append(instruction)
    return global_args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))[1]


def exec_form(instruction: Instruction) -> list[str]:
    value = json.loads(instruction.args)
    assert isinstance(value, list), f"line {instruction.line}: use the exec (JSON) form"
    return value


def test_multi_stage_on_a_slim_python_311(stages: list[Stage]) -> None:
    assert len(stages) >= 2, "build and runtime stages"
    for stage in stages:
        assert re.fullmatch(
            r"python:3\.11(\.\d+)?-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", stage.base
        ), stage.base
    runtime = stages[-1]
    copies = [i.args for i in runtime.all("COPY")]
    assert copies and all(c.startswith("--from=") for c in copies), (
        "the runtime stage only copies built artefacts from earlier stages"
    )
    assert not runtime.all("ADD")


def test_runs_as_a_numeric_non_root_user(stages: list[Stage]) -> None:
    users = stages[-1].all("USER")
    assert users, "the runtime stage must set USER"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0"), "runs as root"
    assert user.isdigit(), "numeric, so Kubernetes' runAsNonRoot can verify it"
    assert int(user) >= 1000


def test_entrypoint_cmd_and_environment(stages: list[Stage]) -> None:
    runtime = stages[-1]
    assert exec_form(runtime.all("ENTRYPOINT")[-1]) == ["ucwa-bridge"]
    assert exec_form(runtime.all("CMD")[-1])[:1] == ["api"]
    assert "0.0.0.0:8080" in exec_form(runtime.all("CMD")[-1])
    env = " ".join(i.args for i in runtime.all("ENV"))
    assert re.search(r"\bPYTHONUNBUFFERED=1\b", env)
    assert re.search(r"\bPATH=/opt/venv/bin:", env)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "ucwa-bridge" in scripts and "ucwasim" in scripts


def test_installs_no_dev_or_test_dependencies(stages: list[Stage]) -> None:
    for stage in stages:
        for run in stage.all("RUN"):
            assert not re.search(r"\[(test|dev|demo)[^\]]*\]", run.args), run.args
            assert " -e " not in f" {run.args} ", "no editable install"
            for command in run.args.split("&&"):
                words = shlex.split(command)
                if words[:2] == ["apt-get", "install"]:
                    assert "--no-install-recommends" in words, run.args


def test_no_unpinned_or_remote_sources() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert ":latest" not in text
    assert not re.search(r"^\s*ADD\s+https?://", text, re.MULTILINE | re.IGNORECASE)
    assert not re.search(r"curl[^\n|]*\|\s*(ba)?sh", text)


def dockerignore_patterns() -> list[tuple[bool, str]]:
    patterns = []
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            patterns.append((negated, line.lstrip("!").removeprefix("/").rstrip("/")))
    return patterns


def ignored(path: str, patterns: list[tuple[bool, str]]) -> bool:
    """Docker's rule: the last matching pattern wins; a directory pattern covers its contents."""
    result = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for negated, pattern in patterns:
        candidates = {pattern, pattern.removeprefix("**/")}
        if any(fnmatch.fnmatch(p, c) for p in prefixes for c in candidates) or any(
            fnmatch.fnmatch(part, pattern.removeprefix("**/"))
            for part in parts
            if pattern.startswith("**/")
        ):
            result = not negated
    return result


def test_build_context_keeps_what_the_build_copies(stages: list[Stage]) -> None:
    patterns = dockerignore_patterns()
    for stage in stages:
        for copy in stage.all("COPY"):
            if copy.args.startswith("--from="):
                continue
            *sources, _ = copy.args.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
                assert not ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"
                if (ROOT / source).is_dir():
                    for file in (ROOT / source).rglob("*.py"):
                        rel = file.relative_to(ROOT).as_posix()
                        if "__pycache__" not in rel:
                            assert not ignored(rel, patterns), f"{rel} excluded by .dockerignore"


def test_build_context_leaves_out_secrets_and_clutter() -> None:
    patterns = dockerignore_patterns()
    for path in (
        ".env",
        ".git/config",
        ".venv/bin/python",
        "tests/conftest.py",
        "bridge/__pycache__/cli.cpython-311.pyc",
        "deploy/tools/node_modules/x",
        "helm/ucwa-bridge/values.yaml",
    ):
        assert ignored(path, patterns), path
    for path in (
        "pyproject.toml",
        "README.md",
        "bridge/cli.py",
        "ucwasim/cli.py",
        "workers/send.py",
    ):
        assert not ignored(path, patterns), path
