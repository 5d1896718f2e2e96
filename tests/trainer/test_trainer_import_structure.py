"""The trainer package's import structure (issue 13): no cycles, no imports hidden inside functions, and
the wings (tasks/, reporting/) used only from above.

Every check reads the source with `ast` and imports nothing, so a cycle shows up here even where it
would not break at run time. A function-local import is a cycle being hidden, a dependency being made
invisible, or a deliberate late import; only the last is allowed, and only on an allow-list below with
its reason (or inside `try: ... except ImportError`, the guard of an optional package).
"""

from __future__ import annotations

import ast
from pathlib import Path

from import_graph import find_cycles, import_graph, imported_modules, local_imports, module_files, prefix_families

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "finetune_trainer"
PACKAGE_DIR = ROOT / "trainer_image" / PACKAGE

# (module, the package module it imports inside a function) -> why that import must stay late.
LATE_IMPORTS_ALLOWED = {
    (
        "finetune_trainer",
        "finetune_trainer.run",
    ): "run.py loads torch and transformers; `import finetune_trainer, finetune_trainer.arguments` (the config "
    "contract the operator's tests import) must not (tests/trainer/test_trainer_cli.py)",
}

# (module, the third-party module it imports inside a function) -> why that import must stay late.
LATE_LIBRARY_IMPORTS_ALLOWED = {
    (
        "finetune_trainer.arguments",
        "transformers",
    ): "the config contract is imported without the trainer's dependencies (torch, transformers)",
    (
        "finetune_trainer.media",
        "scipy.signal",
    ): "scipy.signal takes over a second to import and only audio at another sampling rate needs it",
}

# A wing is a subpackage with one job; only the modules listed may use it from outside.
WINGS = {
    "finetune_trainer.tasks": {"finetune_trainer.run"},
    "finetune_trainer.reporting": {"finetune_trainer.run"},
}


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def wing_violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports of a wing's modules from outside it by a module not listed as its user."""
    return [
        f"{module} imports {target}"
        for module, targets in sorted(graph.items())
        for target in sorted(targets)
        for wing, users in WINGS.items()
        if _in(target, wing) and not _in(module, wing) and module not in users
    ]


# --- the rules ------------------------------------------------------------------------------------


def test_the_package_is_found_and_read():
    modules = module_files(PACKAGE, PACKAGE_DIR)
    assert {
        "finetune_trainer",
        "finetune_trainer.run",
        "finetune_trainer.media",
        "finetune_trainer.tasks.common",
        "finetune_trainer.reporting.callbacks",
        "finetune_trainer.eval_metrics",
    } <= set(modules)
    graph = import_graph(modules)
    assert "finetune_trainer.reporting.environment" in graph["finetune_trainer.run"]
    assert "finetune_trainer.reporting" in graph["finetune_trainer.run"], "importing a.b.c imports a.b"
    assert "finetune_trainer.media" in graph["finetune_trainer.tasks.image_classification"]
    assert "finetune_trainer.tasks" not in graph["finetune_trainer.tasks.common"], "its own package is no dependency"


def test_families_are_folders_not_name_prefixes():
    families = prefix_families(PACKAGE_DIR)
    assert not families, f"make each family a folder: {families}"


def test_no_import_cycles():
    cycles = find_cycles(import_graph(module_files(PACKAGE, PACKAGE_DIR)))
    assert not cycles, "import cycles in finetune_trainer:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_package_imports_inside_functions():
    offending = [
        f"{module}:{line} imports {target} inside a function"
        for module, line, target, ours, _guarded in local_imports(PACKAGE, PACKAGE_DIR)
        if ours and (module, target) not in LATE_IMPORTS_ALLOWED
    ]
    assert not offending, (
        "import finetune_trainer modules at module level (a function-local import hides a dependency or a "
        "cycle); a deliberate late import goes on LATE_IMPORTS_ALLOWED with its reason:\n" + "\n".join(offending)
    )


def test_no_library_imports_inside_functions():
    offending = [
        f"{module}:{line} imports {target} inside a function"
        for module, line, target, ours, guarded in local_imports(PACKAGE, PACKAGE_DIR)
        if not ours and not guarded and (module, target) not in LATE_LIBRARY_IMPORTS_ALLOWED
    ]
    assert not offending, (
        "import at module level; an optional package goes in try/except ImportError, a deliberate late import "
        "of a heavy one on LATE_LIBRARY_IMPORTS_ALLOWED with its reason:\n" + "\n".join(offending)
    )


def test_every_allowed_late_import_still_exists():
    used = {(module, target) for module, _line, target, _ours, _guarded in local_imports(PACKAGE, PACKAGE_DIR)}
    stale = (set(LATE_IMPORTS_ALLOWED) | set(LATE_LIBRARY_IMPORTS_ALLOWED)) - used
    assert not stale, f"drop the allow-list entries that no longer match an import: {sorted(stale)}"


def test_wings_are_used_only_from_above():
    """tasks/ and reporting/ depend on the shared modules (errors, tables, media, ...), never the reverse."""
    offending = wing_violations(import_graph(module_files(PACKAGE, PACKAGE_DIR)))
    assert not offending, "a module below a wing imports from it (move the shared piece down):\n" + "\n".join(offending)


def test_nothing_imports_the_entry_points():
    graph = import_graph(module_files(PACKAGE, PACKAGE_DIR))
    tops = {"finetune_trainer.run", "finetune_trainer.__main__", "finetune_trainer.promote"}
    offending = [f"{module} imports {target}" for module, targets in graph.items() for target in targets & tops]
    assert not offending, "\n".join(offending)


# --- the checks check what they claim -----------------------------------------------------------


def test_imports_resolve_to_the_package_modules():
    modules = {
        name: Path(f"/x/{name}.py")
        for name in (
            "finetune_trainer.errors",
            "finetune_trainer.media",
            "finetune_trainer.tasks.common",
            "finetune_trainer.tasks.seq2seq",
        )
    }
    modules["finetune_trainer"] = Path("/x/finetune_trainer/__init__.py")
    modules["finetune_trainer.tasks"] = Path("/x/finetune_trainer/tasks/__init__.py")

    def resolve(statement: str, module: str) -> list[str]:
        return imported_modules(ast.parse(statement).body[0], module, modules)

    assert resolve("from finetune_trainer.tasks.common import column", "finetune_trainer.media") == [
        "finetune_trainer.tasks.common"
    ]
    assert resolve("from finetune_trainer.tasks import common", "finetune_trainer.run") == [
        "finetune_trainer.tasks.common"
    ]
    assert resolve("from finetune_trainer import main", "finetune_trainer.__main__") == ["finetune_trainer"]
    assert resolve("import finetune_trainer.errors", "finetune_trainer.media") == ["finetune_trainer.errors"]
    assert resolve("from .common import column", "finetune_trainer.tasks.seq2seq") == ["finetune_trainer.tasks.common"]
    assert resolve("from .. import errors", "finetune_trainer.tasks.seq2seq") == ["finetune_trainer.errors"]
    assert resolve("import numpy as np", "finetune_trainer.media") == []


def test_the_wing_rule_catches_a_shared_module_importing_a_wing():
    graph = {
        "finetune_trainer.media": {"finetune_trainer.tasks", "finetune_trainer.tasks.common"},  # the old mistake
        "finetune_trainer.tasks.seq2seq": {"finetune_trainer.tasks.common", "finetune_trainer.media"},
        "finetune_trainer.run": {"finetune_trainer.tasks", "finetune_trainer.reporting.environment"},
    }
    assert wing_violations(graph) == [
        "finetune_trainer.media imports finetune_trainer.tasks",
        "finetune_trainer.media imports finetune_trainer.tasks.common",
    ]
