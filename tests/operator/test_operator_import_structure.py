"""The operator package's import structure (issue 13): no imports hidden inside functions, and no cycles.

Both checks read the source with `ast` and import nothing, so a cycle shows up here even where it would
not break at run time. A function-local import is either a cycle being hidden, a dependency being made
invisible, or a deliberate late import; only the last is allowed, and only on the allow-list below with
its reason (or inside `try: ... except ImportError`, the guard of an optional extra).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "finetune_operator"
PACKAGE_DIR = ROOT / "operator" / PACKAGE

# (module, the module it imports inside a function) -> why that import must stay late.
LATE_IMPORTS_ALLOWED = {
    (
        "finetune_operator.__main__",
        "finetune_operator.handlers",
    ): "importing handlers registers the Kopf handlers (a side effect on Kopf's global registry) and loads "
    "the whole operator (Optuna included); `python -m finetune_operator` does it once the arguments are "
    "parsed, so --help and importing __main__ stay cheap and side-effect free",
}

IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError"}


# --- reading the package ------------------------------------------------------------------------


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (a package is its __init__.py)."""
    modules = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = [PACKAGE, *path.relative_to(PACKAGE_DIR).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def is_package(module: str, modules: dict[str, Path]) -> bool:
    return modules[module].name == "__init__.py"


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(kind, ast.Name) and kind.id in IMPORT_ERRORS for kind in kinds)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _ImportFinder(ast.NodeVisitor):
    """Every import statement with where it sits: inside a function or not, guarded by an `except
    ImportError` or not, under `if TYPE_CHECKING:` or not."""

    def __init__(self) -> None:
        self.found: list[tuple[ast.Import | ast.ImportFrom, bool, bool, bool]] = []
        self._functions = 0
        self._guarded = 0
        self._type_checking = 0

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._functions += 1
        self.generic_visit(node)
        self._functions -= 1

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function

    def visit_Try(self, node: ast.Try) -> None:
        guarded = any(_catches_import_error(handler) for handler in node.handlers)
        self._guarded += guarded
        for child in node.body:
            self.visit(child)
        self._guarded -= guarded
        for child in [*node.handlers, *node.orelse, *node.finalbody]:
            self.visit(child)

    visit_TryStar = visit_Try

    def visit_If(self, node: ast.If) -> None:
        type_checking = _is_type_checking(node.test)
        self._type_checking += type_checking
        for child in node.body:
            self.visit(child)
        self._type_checking -= type_checking
        for child in node.orelse:
            self.visit(child)

    def _import(self, node: ast.Import | ast.ImportFrom) -> None:
        self.found.append((node, self._functions > 0, self._guarded > 0, self._type_checking > 0))

    visit_Import = _import
    visit_ImportFrom = _import


def imports_of(path: Path) -> list[tuple[ast.Import | ast.ImportFrom, bool, bool, bool]]:
    finder = _ImportFinder()
    finder.visit(ast.parse(path.read_text(), filename=str(path)))
    return finder.found


def imported_modules(node: ast.Import | ast.ImportFrom, module: str, modules: dict[str, Path]) -> list[str]:
    """The modules of the package that `node`, in `module`, imports (a name that is not a module stands
    for the module it is taken from)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.split(".")[0] == PACKAGE]
    if node.level:
        base_parts = module.split(".") if is_package(module, modules) else module.split(".")[:-1]
        base_parts = base_parts[: len(base_parts) - (node.level - 1)]
        base = ".".join([*base_parts, *([node.module] if node.module else [])])
    else:
        base = node.module or ""
    if base.split(".")[0] != PACKAGE:
        return []
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package's modules it imports when it is imported (imports at module level, outside
    `if TYPE_CHECKING:`). Importing a.b.c runs a.b first, so the importer depends on a.b as well, unless
    a.b is a package the importer itself lives in (that one is already being imported when it runs)."""
    graph: dict[str, set[str]] = {module: set() for module in modules}
    for module, path in modules.items():
        own = {*_ancestors(module), module}
        for node, in_function, _guarded, type_checking in imports_of(path):
            if in_function or type_checking:
                continue
            for target in imported_modules(node, module, modules):
                for dependency in (*_ancestors(target), target):
                    if dependency in modules and dependency not in own:
                        graph[module].add(dependency)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (first node repeated at the end) per strongly connected component that has one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(node: str) -> None:  # Tarjan; the package is small enough for recursion
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            components.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)

    cycles = []
    for component in components:
        start = min(component)
        if len(component) == 1 and start not in graph.get(start, ()):
            continue
        # Shortest way back to `start` inside the component.
        paths = {start: [start]}
        frontier = [start]
        cycle = None
        while frontier and cycle is None:
            following = []
            for node in frontier:
                for nxt in sorted(graph.get(node, ())):
                    if nxt == start:
                        cycle = [*paths[node], start]
                        break
                    if nxt in component and nxt not in paths:
                        paths[nxt] = [*paths[node], nxt]
                        following.append(nxt)
                if cycle is not None:
                    break
            frontier = following
        cycles.append(cycle)
    return cycles


def local_imports() -> Iterator[tuple[str, int, str, bool]]:
    """(module, line, imported module, guarded by except ImportError) for every import inside a function."""
    modules = module_files()
    for module, path in modules.items():
        for node, in_function, guarded, _type_checking in imports_of(path):
            if not in_function:
                continue
            targets = imported_modules(node, module, modules)
            if not targets:  # stdlib or a third-party package
                targets = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for target in dict.fromkeys(targets):
                yield module, node.lineno, target, guarded


# --- the rules ------------------------------------------------------------------------------------


def test_the_package_is_found_and_read():
    modules = module_files()
    assert {
        "finetune_operator.handlers",
        "finetune_operator.spec",
        "finetune_operator.search.controller",
        "finetune_operator.progress.hub",
        "finetune_operator.builders.trainer_config",
    } <= set(modules)
    graph = import_graph(modules)
    assert "finetune_operator.spec" in graph["finetune_operator.handlers"]
    assert "finetune_operator.search.controller" in graph["finetune_operator.handlers"]
    assert "finetune_operator.search" in graph["finetune_operator.handlers"], "importing a.b.c imports a.b"
    assert "finetune_operator.builders.meta" in graph["finetune_operator.builders.job"]


def test_no_imports_inside_functions():
    offending = [
        f"{module}:{line} imports {target} inside a function"
        for module, line, target, guarded in local_imports()
        if not guarded and (module, target) not in LATE_IMPORTS_ALLOWED
    ]
    assert not offending, (
        "import at module level (a function-local import hides a dependency or a cycle); an optional extra "
        "goes in try/except ImportError, a deliberate late import on LATE_IMPORTS_ALLOWED with its reason:\n"
        + "\n".join(offending)
    )


def test_every_allowed_late_import_still_exists():
    used = {(module, target) for module, _line, target, _guarded in local_imports()}
    assert not set(LATE_IMPORTS_ALLOWED) - used, "drop the allow-list entries that no longer match an import"


def test_no_import_cycles():
    cycles = find_cycles(import_graph(module_files()))
    assert not cycles, "import cycles in finetune_operator:\n" + "\n".join(" -> ".join(c) for c in cycles)


# --- the checks check what they claim -----------------------------------------------------------


def test_cycle_finder_reports_each_cycle_and_ignores_a_dag():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}, "e": {"a"}}) == [
        ["a", "b", "c", "a"],
        ["d", "d"],
    ]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import os\n", [(False, False, False)]),
        ("def f():\n    import os\n", [(True, False, False)]),
        ("class C:\n    async def f(self):\n        from . import x\n", [(True, False, False)]),
        ("def f():\n    try:\n        import yaml\n    except ImportError:\n        pass\n", [(True, True, False)]),
        (
            "def f():\n    try:\n        pass\n    except (ValueError, ModuleNotFoundError):\n        import yaml\n",
            [(True, False, False)],
        ),
        ("def f():\n    try:\n        import yaml\n    except ValueError:\n        pass\n", [(True, False, False)]),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import x\n",
            [(False, False, False), (False, False, True)],
        ),
    ],
)
def test_import_finder_sees_where_each_import_sits(tmp_path, source, expected):
    path = tmp_path / "m.py"
    path.write_text(source)
    assert [where for _node, *where in imports_of(path)] == [list(e) for e in expected]


def test_relative_imports_resolve_to_the_package_modules():
    modules = {
        name: Path(f"/x/{name}.py")
        for name in (
            "finetune_operator.spec",
            "finetune_operator.search.paths",
            "finetune_operator.reasons",
            "finetune_operator.search.controller",
        )
    }
    modules["finetune_operator"] = Path("/x/finetune_operator/__init__.py")
    modules["finetune_operator.search"] = Path("/x/finetune_operator/search/__init__.py")

    def resolve(statement: str, module: str) -> list[str]:
        return imported_modules(ast.parse(statement).body[0], module, modules)

    assert resolve("from .search import paths", "finetune_operator.spec") == ["finetune_operator.search.paths"]
    assert resolve("from .. import reasons as r", "finetune_operator.search.controller") == [
        "finetune_operator.reasons"
    ]
    assert resolve("from ..spec import X", "finetune_operator.search.paths") == ["finetune_operator.spec"]
    assert resolve("from .paths import f", "finetune_operator.search.controller") == ["finetune_operator.search.paths"]
    assert resolve("from . import paths", "finetune_operator.search") == ["finetune_operator.search.paths"]
    assert resolve("from finetune_operator.spec import X", "finetune_operator.reasons") == ["finetune_operator.spec"]
    assert resolve("import finetune_operator.spec", "finetune_operator.reasons") == ["finetune_operator.spec"]
    assert resolve("import json", "finetune_operator.reasons") == []
