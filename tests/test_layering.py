"""The package's import picture: layers import only downward, and no module imports itself back.

Layers, bottom to top: errors/paths -> nn -> models -> data -> training -> tracking -> report
-> the entry points (train, rerun, cli, config, output_check).  Every import counts, also the
ones inside functions (they run too, only later).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "convrepro"
# errors, paths, threads and signals are the foundation, all at the bottom; anything not named
# is an entry point.
RANK = {"errors": 0, "paths": 0, "threads": 0, "signals": 0,
        "nn": 1, "models": 2, "data": 3, "training": 4, "tracking": 5, "report": 6}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part(module: str) -> str:
    name = module.split(".")[1] if "." in module else "top"
    return name if name in RANK else "top"


def layer(module: str) -> int:
    return RANK.get(part(module), 7)


def imports(path: Path) -> set[str]:
    """convrepro modules that ``path`` imports (absolute or relative, at any depth)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)  # `from pkg import module`
    return {m for m in found if m == "convrepro" or m.startswith("convrepro.")}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports(path) if m in modules and m != name} for name, path in modules.items()}


def test_no_import_runs_upward(graph):
    upward = [f"{a} ({part(a)}) imports {b} ({part(b)})" for a, deps in graph.items() for b in deps
              if layer(b) > layer(a) and b != "convrepro"]
    assert not upward, "\n".join(upward)


def test_no_import_cycle(graph):
    # Package __init__ files re-export their children: a child importing its own package is not a cycle.
    edges = {a: {b for b in deps if not a.startswith(b + ".")} for a, deps in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for nxt in edges.get(node, ()):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


def test_the_check_sees_an_upward_import():
    """The checker itself: a made-up upward import is found."""
    assert layer("convrepro.nn.conv") < layer("convrepro.training.task") < layer("convrepro.train")
    assert layer("convrepro.errors") == 0 and layer("convrepro.report.build") == 6
