"""The tree tells the architecture: every module in its part, imports pointing one way, no cycles.

Reads the source with ``ast`` (no imports run), so an import inside a function or under
``TYPE_CHECKING`` counts as much as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Each part of ``bridge`` and the parts it may import. Entry points sit on top; the simulator and
# the process entry points in ``workers`` are outside ``bridge`` altogether.
ALLOWED: dict[str, set[str]] = {
    "bridge.config": set(),
    "bridge.net": set(),
    "bridge.ucwa": set(),
    "bridge.session": {"bridge.net", "bridge.ucwa", "bridge.config"},
    "bridge.webhooks": {"bridge.net", "bridge.config"},
    "bridge.outbound": {
        "bridge.session",
        "bridge.webhooks",
        "bridge.net",
        "bridge.ucwa",
        "bridge.config",
    },
    "bridge.inbound": {
        "bridge.outbound",
        "bridge.session",
        "bridge.webhooks",
        "bridge.ucwa",
        "bridge.config",
    },
    "bridge.observability": {
        "bridge.inbound",
        "bridge.outbound",
        "bridge.session",
        "bridge.webhooks",
        "bridge.config",
    },
    "bridge.api": {
        "bridge.observability",
        "bridge.outbound",
        "bridge.session",  # reads the conversation registry for GET /conversations
        "bridge.webhooks",
        "bridge.ucwa",
        "bridge.config",
    },
}
PARTS = set(ALLOWED)
ENTRY_POINTS = {"bridge", "bridge.cli", "bridge.demo", "bridge.hooks", "bridge.serve_api"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(package: str) -> dict[str, Path]:
    return {module_name(p): p for p in sorted((ROOT / package).rglob("*.py"))}


def imports_of(path: Path, name: str) -> set[str]:
    """Every module named by an import statement anywhere in the file, made absolute."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            # ``from bridge.api import webhooks`` names the module ``bridge.api.webhooks``.
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def part_of(module: str) -> str | None:
    for part in PARTS:
        if module == part or module.startswith(part + "."):
            return part
    return None


BRIDGE = modules("bridge")
KNOWN = set(BRIDGE) | set(modules("workers")) | set(modules("ucwasim"))


def internal_imports(path: Path, name: str) -> set[str]:
    return {m for m in imports_of(path, name) if m in KNOWN}


def test_every_module_lives_in_a_part_or_is_an_entry_point() -> None:
    loose = sorted(m for m in BRIDGE if part_of(m) is None and m not in ENTRY_POINTS)
    assert loose == [], f"modules outside every part of bridge/: {loose}"
    packages = {p.parent for p in (ROOT / "bridge").rglob("*.py")}
    folders = {module_name(d / "__init__.py") for d in packages} - {"bridge"}
    assert folders == PARTS, "a folder under bridge/ that is not a part (or a part with no folder)"


@pytest.mark.parametrize("part", sorted(PARTS | {"bridge", "workers", "ucwasim"}))
def test_each_package_says_what_it_is_for_and_may_import(part: str) -> None:
    init = ROOT / part.replace(".", "/") / "__init__.py"
    doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
    assert doc and len(doc.split()) >= 12, f"{init}: a docstring saying what the part is for"
    if part in PARTS:
        assert "import" in doc.lower(), f"{init}: the docstring says what the part may import"


@pytest.mark.parametrize("name", sorted(BRIDGE))
def test_imports_point_down(name: str) -> None:
    own = part_of(name)
    for target in internal_imports(BRIDGE[name], name):
        root = target.split(".")[0]
        assert root != "ucwasim", f"{name} imports {target}: bridge never imports the simulator"
        if own is None:
            continue  # entry points and wiring may import every part; the CLI starts workers
        assert root != "workers", f"{name} imports {target}: only entry points start workers"
        other = part_of(target)
        assert other is not None, f"{name} (in {own}) imports the entry point {target}"
        if other != own:
            assert other in ALLOWED[own], f"{name} ({own}) may not import {target} ({other})"


def test_the_parts_form_no_cycle() -> None:
    # ALLOWED itself must be a DAG, or "points down" would mean nothing.
    state: dict[str, str] = {}

    def visit(part: str, trail: tuple[str, ...]) -> None:
        if state.get(part) == "done":
            return
        assert state.get(part) != "open", f"cycle among parts: {' -> '.join((*trail, part))}"
        state[part] = "open"
        for below in ALLOWED[part]:
            visit(below, (*trail, part))
        state[part] = "done"

    for part in ALLOWED:
        visit(part, ())


def test_no_module_import_cycle() -> None:
    graph = {
        name: {t for t in internal_imports(path, name) if t in BRIDGE and t != name}
        for name, path in BRIDGE.items()
    }
    # A package's __init__ re-exporting its own module is not a cycle of the design.
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def strong(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            strong(v)
    assert cycles == []


@pytest.mark.parametrize("name", sorted(modules("ucwasim")))
def test_the_simulator_imports_nothing_of_the_bridge(name: str) -> None:
    path = modules("ucwasim")[name]
    leaks = {t for t in imports_of(path, name) if t.split(".")[0] in ("bridge", "workers")}
    assert leaks == set()


def test_workers_are_imported_by_nothing_in_bridge_and_import_no_simulator() -> None:
    for name, path in modules("workers").items():
        assert not {t for t in imports_of(path, name) if t.startswith("ucwasim")}, name


def test_the_checker_sees_a_violation() -> None:
    # The rules above must be able to fail: an upward import is caught by the same functions.
    assert part_of("bridge.outbound.sender") == "bridge.outbound"
    assert "bridge.api" not in ALLOWED["bridge.outbound"]
    found = imports_of(BRIDGE["bridge.api.app"], "bridge.api.app")
    assert "bridge.api.webhooks" in found and "bridge.outbound.intake" in found
