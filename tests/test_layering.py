"""The import graph of charlm/ is a stack: no circle, at most MAX_FLOORS floors.

Counted as ../shared/tools/shape.py counts (written here again, so the suite needs nothing
outside the repository): every import of a sibling module, wherever it stands (top level,
inside a function, under TYPE_CHECKING), `__main__` included; a floor is one link of the
longest chain of imports. Also: no function over 60 lines, no class over 200.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "charlm"
MAX_FLOORS = 8
MAX_FUNCTION_LINES, MAX_CLASS_LINES = 60, 200


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The sibling modules that `path` imports, in any form and at any depth of its code."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "charlm":  # from charlm import x: x may be a module
                names = [a.name for a in node.names]
            elif node.module.startswith("charlm."):
                names = [node.module.split(".")[1]]
            elif node.level == 1:
                names = [node.module.split(".")[0]]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1] for a in node.names if a.name.startswith("charlm.")]
        found |= {n for n in names if n in modules}
    return found - {path.stem}


def graph() -> dict[str, set[str]]:
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    return {p.stem: _imports(p, modules) for p in PACKAGE.glob("*.py")}


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(edges[v]):
            if state.get(w) == 1:
                return [*path[path.index(w) :], w]
            if w not in state and (found := visit(w)):
                return found
        path.pop()
        state[v] = 2
        return None

    for v in sorted(edges):
        if v not in state and (found := visit(v)):
            return found
    return None


def floors(edges: dict[str, set[str]]) -> dict[str, int]:
    """Each module's floor: 1 + the highest floor among what it imports (a DAG)."""
    memo: dict[str, int] = {}

    def height(v: str) -> int:
        if v not in memo:
            memo[v] = 1 + max((height(w) for w in edges[v]), default=0)
        return memo[v]

    return {v: height(v) for v in edges}


def test_the_import_graph_has_no_circle() -> None:
    assert _cycle(graph()) is None, " -> ".join(_cycle(graph()) or [])


def test_the_import_graph_has_at_most_eight_floors() -> None:
    edges = graph()
    assert _cycle(edges) is None
    height = floors(edges)
    top = max(height, key=height.get)
    chain = [top]
    while edges[chain[-1]]:
        chain.append(max(edges[chain[-1]], key=height.get))
    assert height[top] <= MAX_FLOORS, f"{height[top]} floors: {' -> '.join(chain)}"


def test_the_counter_sees_a_circle_and_every_kind_of_import() -> None:
    """The checks above can fail: a circle and function-level imports are seen."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert floors({"a": {"b"}, "b": {"c"}, "c": set()})["a"] == 3
    code = PACKAGE / "cli.py"
    assert "config" in _imports(code, {p.stem for p in PACKAGE.glob("*.py")})


def test_no_function_or_class_is_too_long() -> None:
    long = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            lines = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.name}:{node.name} ({lines} lines)")
            elif isinstance(node, ast.ClassDef) and lines > MAX_CLASS_LINES:
                long.append(f"{path.name}:{node.name} ({lines} lines)")
    assert not long, long
