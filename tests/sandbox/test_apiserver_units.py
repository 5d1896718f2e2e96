"""Pure pieces of the API server: patches, selectors, JSONPath, durations."""

from __future__ import annotations

import pytest
from finetune_sandbox.apiserver.errors import ApiError
from finetune_sandbox.apiserver.patching import json_patch, merge_patch, strategic_merge_patch
from finetune_sandbox.apiserver.selectors import parse_field_selector, parse_label_selector
from finetune_sandbox.apiserver.tables import human_duration, jsonpath


def test_merge_patch_follows_rfc_7386():
    target = {"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]}
    assert merge_patch(target, {"a": "z", "c": {"f": None}, "l": [3]}) == {"a": "z", "c": {"d": "e"}, "l": [3]}
    assert target["c"] == {"d": "e", "f": "g"}  # the input is untouched


def test_json_patch_follows_rfc_6902():
    doc = {"a": {"b": [1, 2]}}
    result = json_patch(
        doc,
        [
            {"op": "add", "path": "/a/b/-", "value": 3},
            {"op": "replace", "path": "/a/b/0", "value": 0},
            {"op": "copy", "from": "/a/b", "path": "/c"},
            {"op": "move", "from": "/c", "path": "/d"},
            {"op": "test", "path": "/d/2", "value": 3},
        ],
    )
    assert result == {"a": {"b": [0, 2, 3]}, "d": [0, 2, 3]} and doc == {"a": {"b": [1, 2]}}
    with pytest.raises(ApiError) as err:
        json_patch(doc, [{"op": "remove", "path": "/missing"}])
    assert err.value.code == 422


def test_strategic_merge_patch_merges_lists_by_key():
    target = {
        "metadata": {"finalizers": ["a"]},
        "spec": {
            "containers": [{"name": "x", "image": "1", "ports": [{"containerPort": 80}]}, {"name": "y", "image": "2"}]
        },
        "status": {"conditions": [{"type": "Ready", "status": "False"}]},
    }
    patch = {
        "metadata": {"finalizers": ["b"]},
        "spec": {
            "containers": [
                {"name": "x", "image": "3", "ports": [{"containerPort": 81}]},
                {"name": "y", "$patch": "delete"},
            ]
        },
        "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Done", "status": "False"}]},
    }
    result = strategic_merge_patch(target, patch)
    assert result["metadata"]["finalizers"] == ["a", "b"]
    assert result["spec"]["containers"] == [
        {"name": "x", "image": "3", "ports": [{"containerPort": 80}, {"containerPort": 81}]}
    ]
    assert result["status"]["conditions"] == [{"type": "Ready", "status": "True"}, {"type": "Done", "status": "False"}]
    assert strategic_merge_patch({"a": {"b": 1}}, {"a": {"$patch": "replace", "c": 2}}) == {"a": {"c": 2}}
    assert strategic_merge_patch(
        {"metadata": {"finalizers": ["a", "b"]}}, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}
    ) == {"metadata": {"finalizers": ["b"]}}


def test_label_selector_grammar():
    obj = {"metadata": {"labels": {"app": "x", "tier": "web"}}}
    for selector, expected in [
        ("app=x", True),
        ("app in (y, x)", True),
        ("app notin (x)", False),
        ("tier,!missing", True),
        ("app!=x", False),
        ("app=x,tier in (db)", False),
    ]:
        assert parse_label_selector(selector)(obj) is expected, selector
    with pytest.raises(ApiError):
        parse_label_selector("app===x")


def test_field_selector_on_nested_fields():
    pod = {"metadata": {"name": "p"}, "spec": {"nodeName": "n"}, "status": {"phase": "Running"}}
    assert parse_field_selector("metadata.name=p,spec.nodeName==n")(pod)
    assert not parse_field_selector("status.phase!=Running")(pod)


def test_jsonpath_subset_used_by_printer_columns():
    obj = {
        "status": {"conditions": [{"type": "A", "status": "False"}, {"type": "Succeeded", "status": "True"}]},
        "spec": {"items": [{"n": 1}, {"n": 2}]},
    }
    assert jsonpath(obj, '.status.conditions[?(@.type=="Succeeded")].status') == ["True"]
    assert jsonpath(obj, ".spec.items[1].n") == [2]
    assert jsonpath(obj, ".spec.items[*].n") == [1, 2]
    assert jsonpath(obj, ".spec.missing") == []


def test_human_durations_match_kubectl():
    assert [human_duration(s) for s in (5, 119, 150, 3600, 90000, 864000)] == [
        "5s",
        "119s",
        "2m30s",
        "60m",
        "25h",
        "10d",
    ]
