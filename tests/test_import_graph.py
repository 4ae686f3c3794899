"""The package's modules import one another one way: no cycle, TYPE_CHECKING imports included.

Run alone with ``python -m pytest tests/test_import_graph.py``; it runs in the normal suite,
hence in CI. Every ``import`` and ``from ... import`` of every module is read with ``ast``
(those under ``if TYPE_CHECKING:`` and inside functions too), relative imports resolved.

One kind of edge is left out: a package's ``__init__`` importing its own submodules to
re-export their names. Importing any submodule runs its package's ``__init__`` first, so
counting those edges would make every submodule that imports a sibling through the package
look cyclic; the re-export is a façade over the package, not a dependency of its parts. An
import *of* a package from elsewhere still counts, as an edge to that ``__init__``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import hailuo_async

PACKAGE_DIR = Path(hailuo_async.__file__).parent
PACKAGE = "hailuo_async"


def module_name(path: Path) -> str:
    """The dotted name of the module at ``path``."""
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    return {module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules that the module ``name`` (at ``path``) imports."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets.add(base)
            # `from . import x` and `from .pkg import sub` import submodules too.
            targets.update(f"{base}.{alias.name}" for alias in node.names)
    edges = set()
    for named in targets:
        # The longest known module the import names (a.b.C names module a.b).
        target = named
        while target and target not in known:
            target = target.rpartition(".")[0]
        if not target or target == name:
            continue
        if is_package and target.startswith(name + "."):
            continue  # a package's __init__ re-exporting its own submodules: see above
        edges.add(target)
    return edges


def graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports."""
    found = modules()
    known = set(found)
    return {name: imported(name, path, known) for name, path in found.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as a list of modules, or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_the_checker_finds_a_cycle() -> None:
    """The cycle finder reports a cycle it is shown, and none in a chain."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_type_checking_imports_count() -> None:
    """An import under `if TYPE_CHECKING:` is an edge like any other."""
    edges = graph()
    assert "hailuo_async._client" in edges["hailuo_async.webhooks"]


def test_no_import_cycle_among_the_package_modules() -> None:
    """No module of hailuo_async imports, directly or not, a module that imports it."""
    edges = graph()
    assert len(edges) > 30  # every module was read
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges) or [])
