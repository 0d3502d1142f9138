"""The package's import graph runs one way: request -> data -> facts -> rules -> CRD -> cards.

Each module belongs to a floor; a module may import from its own floor or below, never above,
and no two modules import each other, directly or round a circle (imports under
`TYPE_CHECKING` count: they are the same dependency, only deferred). The floors are in
docs/design.md ("Floors").
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "service"

# Lowest first. A module's floor is the longest prefix listed here.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("service.yamlfile", "service.knowledge"),
    ("service.config", "service.logs", "service.cdshooks"),
    ("service.fhir", "service.security", "service.storage"),
    ("service.facts",),
    ("service.rules",),
    ("service.crd",),
    ("service.render",),
    ("service.pipeline", "service.runtime", "service.offline", "service.backtest"),
    ("service.api", "service.dashboard"),
    ("service.app", "service.cli"),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor_of(module: str) -> int:
    best, floor = -1, -1
    for level, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, floor = len(prefix), level
    if floor < 0:
        raise AssertionError(f"{module} is on no floor: add it to FLOORS and docs/design.md")
    return floor


def imports_of(path: Path) -> set[str]:
    """The service modules `path` imports (`from service.x import y` may name a module y)."""
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("service"):
                for alias in node.names:
                    candidate = f"{node.module}.{alias.name}"
                    found.add(candidate if candidate in modules else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("service")}
    return {m for m in found if m != "service"}


def relative_imports(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [n.lineno for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level > 0]


GRAPH = {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_import_from_a_floor_above(module: str) -> None:
    upward = sorted(m for m in GRAPH[module] if floor_of(m) > floor_of(module))
    assert not upward, f"{module} (floor {floor_of(module)}) imports from above: {upward}"


def test_imports_are_absolute() -> None:
    """The checks above read `from service.x import y`; a relative import would slip past."""
    found = {str(p): lines for p in PACKAGE.rglob("*.py") if (lines := relative_imports(p))}
    assert not found, found


def test_no_import_circle() -> None:
    """Depth-first search over the module graph; a back edge is a circle."""
    state: dict[str, str] = {}
    circles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(GRAPH.get(module, ())):
            if state.get(target) == "open":
                circles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_the_check_sees_an_upward_import() -> None:
    """Positive control: a rules module importing the renderer is caught."""
    assert floor_of("service.render.cards") > floor_of("service.rules.ffrct")
    assert floor_of("service.facts.build") > floor_of("service.fhir.gather")
    assert "service.knowledge.catalogue" in GRAPH["service.rules.ffrct"]
