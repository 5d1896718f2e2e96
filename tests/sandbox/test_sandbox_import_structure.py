"""The sandbox package's structure (issue 13): no import cycles, no imports hidden inside functions, and
folders instead of prefix families.

The checks read the source with `ast` and import nothing (tests/import_graph.py), so a cycle shows up here
even where it would not break at run time. A function-local import is allowed only on the allow-list below,
with its reason, or inside `try: ... except ImportError` (the guard of an optional package).
"""

from __future__ import annotations

from pathlib import Path

from import_graph import (
    find_cycles,
    import_graph,
    late_import_offences,
    module_files,
    prefix_families,
    stale_allowances,
)

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "finetune_sandbox"
PACKAGE_DIR = ROOT / "sandbox" / PACKAGE

# (module, the module it imports inside a function) -> why that import must stay late.
LATE_IMPORTS_ALLOWED = {
    (
        "finetune_sandbox.apiserver.validation",
        "finetune_sandbox.structural_schema",
    ): "the structural-schema validator loads the CEL interpreter (celpy), which an API server that is never "
    "sent a custom resource does not need",
}


def test_the_package_is_found_and_read():
    modules = module_files(PACKAGE, PACKAGE_DIR)
    assert {
        "finetune_sandbox.cluster",
        "finetune_sandbox.kubelet",
        "finetune_sandbox.kubelet.pod_worker",
        "finetune_sandbox.kubelet.image_runtime.plan",
        "finetune_sandbox.jobs.plan",
        "finetune_sandbox.apiserver.objects",
        "finetune_sandbox.structural_schema.validation",
    } <= set(modules)
    graph = import_graph(modules)
    assert "finetune_sandbox.kubelet" in graph["finetune_sandbox.cluster"]
    assert "finetune_sandbox.kubelet.volumes" in graph["finetune_sandbox.cluster"]
    assert "finetune_sandbox.jobs.plan" in graph["finetune_sandbox.jobs.controller"]
    # pod_worker needs the kubelet's type only (under TYPE_CHECKING): no edge, so no cycle with node.py.
    assert "finetune_sandbox.kubelet.node" not in graph["finetune_sandbox.kubelet.pod_worker"]


def test_no_import_cycles():
    cycles = find_cycles(import_graph(module_files(PACKAGE, PACKAGE_DIR)))
    assert not cycles, "import cycles in finetune_sandbox:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_imports_inside_functions():
    offending = late_import_offences(PACKAGE, PACKAGE_DIR, LATE_IMPORTS_ALLOWED)
    assert not offending, (
        "import at module level (a function-local import hides a dependency or a cycle); an optional package "
        "goes in try/except ImportError, a deliberate late import on LATE_IMPORTS_ALLOWED with its reason:\n"
        + "\n".join(offending)
    )


def test_every_allowed_late_import_still_exists():
    stale = stale_allowances(PACKAGE, PACKAGE_DIR, LATE_IMPORTS_ALLOWED)
    assert not stale, f"drop the allow-list entries that no longer match an import: {sorted(stale)}"


def test_families_are_folders_not_name_prefixes():
    """`kubelet_env.py`, `kubelet_image.py`, ... beside `kubelet.py` was a family spelt by prefix; a family is a
    folder (`kubelet/env.py`). No two modules or packages in one folder share the word before their first `_`."""
    families = prefix_families(PACKAGE_DIR)
    assert not families, f"make each family a folder: {families}"
