"""Reading a package's import structure with `ast` (nothing is imported): its modules, where each import sits,
the module-level import graph and its cycles, the imports inside functions, and families of modules spelt
by a name prefix. Shared by the operator's, the trainer's and the sandbox's structure tests (issue 13).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError"}


# --- reading the package ------------------------------------------------------------------------


def module_files(package: str, package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (a package is its __init__.py)."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = [package, *path.relative_to(package_dir).with_suffix("").parts]
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
        return [alias.name for alias in node.names if alias.name.split(".")[0] == module.split(".")[0]]
    if node.level:
        base_parts = module.split(".") if is_package(module, modules) else module.split(".")[:-1]
        base_parts = base_parts[: len(base_parts) - (node.level - 1)]
        base = ".".join([*base_parts, *([node.module] if node.module else [])])
    else:
        base = node.module or ""
    if base.split(".")[0] != module.split(".")[0]:
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


# --- imports inside functions -------------------------------------------------------------------


class LocalImport(NamedTuple):
    module: str
    line: int
    target: str  # the package module imported, else the library's name
    ours: bool  # a module of the package itself
    guarded: bool  # inside `try: ... except ImportError` (an optional extra)


def local_imports(package: str, package_dir: Path) -> Iterator[LocalImport]:
    """Every import inside a function, one per imported module."""
    modules = module_files(package, package_dir)
    for module, path in modules.items():
        for node, in_function, guarded, _type_checking in imports_of(path):
            if not in_function:
                continue
            targets = imported_modules(node, module, modules)
            ours = bool(targets)
            if not ours:  # stdlib or a third-party package
                targets = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for target in dict.fromkeys(targets):
                yield LocalImport(module, node.lineno, target, ours, guarded)


def late_import_offences(package: str, package_dir: Path, allowed: dict[tuple[str, str], str]) -> list[str]:
    """Imports inside functions that are neither guarded by `except ImportError` nor on `allowed`."""
    return [
        f"{found.module}:{found.line} imports {found.target} inside a function"
        for found in local_imports(package, package_dir)
        if not found.guarded and (found.module, found.target) not in allowed
    ]


def stale_allowances(package: str, package_dir: Path, allowed: dict[tuple[str, str], str]) -> set[tuple[str, str]]:
    """Allow-list entries that no longer match an import inside a function."""
    return set(allowed) - {(found.module, found.target) for found in local_imports(package, package_dir)}


# --- families -----------------------------------------------------------------------------------


def prefix_families(package_dir: Path, *, allowed: frozenset[str] = frozenset()) -> dict[str, list[str]]:
    """Modules or packages in one folder that share the word before their first `_` (`kubelet_env.py` beside
    `kubelet.py`): a family spelt by prefix, which belongs in a folder. `allowed`: names exempt, with a reason
    where they are listed."""
    by_prefix: dict[tuple[Path, str], list[str]] = defaultdict(list)
    for path in package_dir.rglob("*"):
        if "__pycache__" in path.parts or path.name == "__init__.py":
            continue
        if path.suffix == ".py" or (path.is_dir() and (path / "__init__.py").exists()):
            name = path.stem if path.suffix == ".py" else path.name
            if name not in allowed:
                by_prefix[(path.parent, name.split("_")[0])].append(name)
    return {
        f"{folder.relative_to(package_dir.parent)}/{prefix}_*": sorted(names)
        for (folder, prefix), names in by_prefix.items()
        if len(names) > 1
    }
