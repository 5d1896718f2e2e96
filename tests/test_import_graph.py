"""The import-structure checks (tests/import_graph.py) see what they claim to see."""

from __future__ import annotations

import pytest
from import_graph import find_cycles, imports_of


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
