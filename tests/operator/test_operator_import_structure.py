"""The operator package's import structure (issue 13): no imports hidden inside functions, and no cycles.

Both checks read the source with `ast` and import nothing, so a cycle shows up here even where it would
not break at run time. A function-local import is either a cycle being hidden, a dependency being made
invisible, or a deliberate late import; only the last is allowed, and only on the allow-list below with
its reason (or inside `try: ... except ImportError`, the guard of an optional extra).
"""

from __future__ import annotations

import ast
from pathlib import Path

from import_graph import (
    find_cycles,
    import_graph,
    imported_modules,
    late_import_offences,
    module_files,
    prefix_families,
    stale_allowances,
)

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
    (
        "finetune_operator.search.sampling",
        "finetune_operator.search.optuna_study",
    ): "Optuna and numpy are about 25 MiB of the operator's resident memory; only a search that asks for a "
    "trial's parameters loads them, so an operator whose cluster runs no search never does (docs/scaling.md)",
}


# --- the rules ------------------------------------------------------------------------------------


def test_the_package_is_found_and_read():
    modules = module_files(PACKAGE, PACKAGE_DIR)
    assert {
        "finetune_operator.handlers",
        "finetune_operator.spec",
        "finetune_operator.search.plan",
        "finetune_operator.progress.hub",
        "finetune_operator.builders.trainer_config",
    } <= set(modules)
    graph = import_graph(modules)
    assert "finetune_operator.reconcile.loop" in graph["finetune_operator.handlers"]
    assert "finetune_operator.search.plan" in graph["finetune_operator.reconcile.observe"]
    assert "finetune_operator.reconcile" in graph["finetune_operator.handlers"], "importing a.b.c imports a.b"
    assert "finetune_operator.builders.meta" in graph["finetune_operator.builders.job"]


def test_no_imports_inside_functions():
    offending = late_import_offences(PACKAGE, PACKAGE_DIR, LATE_IMPORTS_ALLOWED)
    assert not offending, (
        "import at module level (a function-local import hides a dependency or a cycle); an optional extra "
        "goes in try/except ImportError, a deliberate late import on LATE_IMPORTS_ALLOWED with its reason:\n"
        + "\n".join(offending)
    )


def test_every_allowed_late_import_still_exists():
    stale = stale_allowances(PACKAGE, PACKAGE_DIR, LATE_IMPORTS_ALLOWED)
    assert not stale, f"drop the allow-list entries that no longer match an import: {sorted(stale)}"


def test_families_are_folders_not_name_prefixes():
    """`spec_schema.py`, `spec_sections.py` ... beside `spec.py` is a family spelt by prefix; a family is a
    folder (`spec/schema.py`)."""
    families = prefix_families(PACKAGE_DIR)
    assert not families, f"make each family a folder: {families}"


def test_no_import_cycles():
    cycles = find_cycles(import_graph(module_files(PACKAGE, PACKAGE_DIR)))
    assert not cycles, "import cycles in finetune_operator:\n" + "\n".join(" -> ".join(c) for c in cycles)


# --- the checks check what they claim -----------------------------------------------------------


def test_relative_imports_resolve_to_the_package_modules():
    modules = {
        name: Path(f"/x/{name}.py")
        for name in (
            "finetune_operator.spec",
            "finetune_operator.search.paths",
            "finetune_operator.reasons",
            "finetune_operator.search.plan",
        )
    }
    modules["finetune_operator"] = Path("/x/finetune_operator/__init__.py")
    modules["finetune_operator.search"] = Path("/x/finetune_operator/search/__init__.py")

    def resolve(statement: str, module: str) -> list[str]:
        return imported_modules(ast.parse(statement).body[0], module, modules)

    assert resolve("from .search import paths", "finetune_operator.spec") == ["finetune_operator.search.paths"]
    assert resolve("from .. import reasons as r", "finetune_operator.search.plan") == ["finetune_operator.reasons"]
    assert resolve("from ..spec import X", "finetune_operator.search.paths") == ["finetune_operator.spec"]
    assert resolve("from .paths import f", "finetune_operator.search.plan") == ["finetune_operator.search.paths"]
    assert resolve("from . import paths", "finetune_operator.search") == ["finetune_operator.search.paths"]
    assert resolve("from finetune_operator.spec import X", "finetune_operator.reasons") == ["finetune_operator.spec"]
    assert resolve("import finetune_operator.spec", "finetune_operator.reasons") == ["finetune_operator.spec"]
    assert resolve("import json", "finetune_operator.reasons") == []
