"""apply_structural_schema behaves like kube-apiserver on custom resources: prune, default, validate, CEL."""

from __future__ import annotations

import pytest
from finetune_sandbox.structural_schema import (
    MAX_REQUEST_BYTES,
    SchemaViolation,
    apply_structural_schema,
    version_schema,
)


def _root(spec_schema: dict, **extra) -> dict:
    return {"type": "object", "properties": {"spec": spec_schema}, **extra}


def _obj(spec) -> dict:
    return {"apiVersion": "x.dev/v1", "kind": "X", "metadata": {"name": "a", "labels": {"k": "v"}}, "spec": spec}


def _violations(obj: dict, schema: dict, old: dict | None = None, **kwargs) -> list[tuple[str, str]]:
    with pytest.raises(SchemaViolation) as caught:
        apply_structural_schema(obj, schema, old, **kwargs)
    return caught.value.causes


# --- pruning --------------------------------------------------------------------------------------


def test_unknown_fields_are_pruned_and_root_metadata_is_kept():
    schema = _root({"type": "object", "properties": {"a": {"type": "string"}}})
    out = apply_structural_schema({**_obj({"a": "x", "typo": 1}), "junk": True}, schema)
    assert out == _obj({"a": "x"})


def test_strict_field_validation_rejects_unknown_fields_with_their_path():
    schema = _root({"type": "object", "properties": {"a": {"type": "object", "properties": {}}}})
    causes = _violations(_obj({"a": {"typo": 1}}), schema, strict=True)
    assert causes == [("spec.a.typo", 'strict decoding error: unknown field "spec.a.typo"')]


def test_preserve_unknown_fields_keeps_a_subtree_but_still_walks_known_properties():
    schema = _root(
        {
            "type": "object",
            "properties": {
                "free": {
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": True,
                    "properties": {"n": {"type": "integer", "default": 7}},
                }
            },
        }
    )
    out = apply_structural_schema(_obj({"free": {"anything": {"deep": [1]}}}), schema)
    assert out["spec"]["free"] == {"anything": {"deep": [1]}, "n": 7}


def test_map_values_are_pruned_by_their_additional_properties_schema():
    schema = _root(
        {
            "type": "object",
            "properties": {
                "m": {
                    "type": "object",
                    "additionalProperties": {"type": "object", "properties": {"keep": {"type": "string"}}},
                }
            },
        }
    )
    out = apply_structural_schema(_obj({"m": {"x": {"keep": "1", "drop": "2"}}}), schema)
    assert out["spec"]["m"] == {"x": {"keep": "1"}}


def test_null_in_a_non_nullable_field_is_dropped_and_then_defaulted():
    schema = _root(
        {
            "type": "object",
            "properties": {
                "a": {"type": "string", "default": "d"},
                "b": {"type": "string"},
                "c": {"type": "string", "nullable": True},
            },
        }
    )
    out = apply_structural_schema(_obj({"a": None, "b": None, "c": None}), schema)
    assert out["spec"] == {"a": "d", "c": None}


def test_input_is_not_modified():
    schema = _root({"type": "object", "properties": {"a": {"type": "string", "default": "d"}}})
    obj = _obj({"typo": 1})
    apply_structural_schema(obj, schema)
    assert obj == _obj({"typo": 1})


# --- defaulting -----------------------------------------------------------------------------------


def test_defaults_apply_recursively_inside_a_defaulted_object():
    schema = _root(
        {
            "type": "object",
            "properties": {
                "outer": {
                    "type": "object",
                    "default": {},
                    "properties": {
                        "inner": {
                            "type": "object",
                            "default": {},
                            "properties": {"n": {"type": "integer", "default": 3}, "s": {"type": "string"}},
                        }
                    },
                }
            },
        }
    )
    out = apply_structural_schema(_obj({}), schema)
    assert out["spec"] == {"outer": {"inner": {"n": 3}}}


def test_defaults_apply_inside_list_items_and_do_not_override_given_values():
    schema = _root(
        {
            "type": "object",
            "properties": {
                "items": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"k": {"type": "string", "default": "dk"}, "v": {"type": "integer"}},
                    },
                }
            },
        }
    )
    out = apply_structural_schema(_obj({"items": [{"v": 1}, {"k": "given"}]}), schema)
    assert out["spec"]["items"] == [{"k": "dk", "v": 1}, {"k": "given"}]


def test_defaults_are_deep_copies():
    schema = _root(
        {"type": "object", "properties": {"l": {"type": "array", "default": [], "items": {"type": "string"}}}}
    )
    first = apply_structural_schema(_obj({}), schema)
    first["spec"]["l"].append("x")
    assert apply_structural_schema(_obj({}), schema)["spec"]["l"] == []


# --- OpenAPI keywords -----------------------------------------------------------------------------


def test_type_errors_name_the_field_and_the_expected_type():
    schema = _root(
        {
            "type": "object",
            "properties": {
                "i": {"type": "integer"},
                "n": {"type": "number"},
                "b": {"type": "boolean"},
                "s": {"type": "string"},
                "l": {"type": "array", "items": {"type": "string"}},
            },
        }
    )
    causes = dict(_violations(_obj({"i": "3", "n": True, "b": "yes", "s": 5, "l": ["ok", 1]}), schema))
    assert causes == {
        "spec.i": 'Invalid value: "string": must be of type integer',
        "spec.n": 'Invalid value: "boolean": must be of type number',
        "spec.b": 'Invalid value: "string": must be of type boolean',
        "spec.s": 'Invalid value: "integer": must be of type string',
        "spec.l[1]": 'Invalid value: "integer": must be of type string',
    }


def test_integers_are_numbers_but_floats_are_not_integers():
    schema = _root({"type": "object", "properties": {"n": {"type": "number"}, "i": {"type": "integer"}}})
    assert apply_structural_schema(_obj({"n": 3}), schema)["spec"] == {"n": 3}
    assert [p for p, _ in _violations(_obj({"i": 3.5}), schema)] == ["spec.i"]


def test_numeric_bounds_inclusive_and_exclusive():
    schema = _root(
        {
            "type": "object",
            "properties": {
                "incl": {"type": "number", "minimum": 0, "maximum": 1},
                "excl": {
                    "type": "number",
                    "minimum": 0,
                    "exclusiveMinimum": True,
                    "maximum": 1,
                    "exclusiveMaximum": True,
                },
            },
        }
    )
    apply_structural_schema(_obj({"incl": 0, "excl": 0.5}), schema)
    apply_structural_schema(_obj({"incl": 1, "excl": 0.999}), schema)
    causes = _violations(_obj({"incl": 1.01, "excl": 0}), schema)
    assert causes == [
        ("spec.incl", "Invalid value: 1.01: must be less than or equal to 1"),
        ("spec.excl", "Invalid value: 0: must be greater than 0"),
    ]
    assert _violations(_obj({"excl": 1}), schema) == [("spec.excl", "Invalid value: 1: must be less than 1")]


def test_int32_and_int64_formats_bound_integers():
    schema = _root(
        {
            "type": "object",
            "properties": {"a": {"type": "integer", "format": "int32"}, "b": {"type": "integer", "format": "int64"}},
        }
    )
    apply_structural_schema(_obj({"a": 2**31 - 1, "b": 2**63 - 1}), schema)
    assert [p for p, _ in _violations(_obj({"a": 2**31, "b": 2**63}), schema)] == ["spec.a", "spec.b"]


def test_date_time_format():
    schema = _root({"type": "object", "properties": {"t": {"type": "string", "format": "date-time"}}})
    apply_structural_schema(_obj({"t": "2026-01-02T03:04:05Z"}), schema)
    apply_structural_schema(_obj({"t": "2026-01-02T03:04:05.123+02:00"}), schema)
    for bad in ("2026-01-02", "yesterday", "2026-13-02T03:04:05Z"):
        assert [p for p, _ in _violations(_obj({"t": bad}), schema)] == ["spec.t"], bad


def test_enum_lists_supported_values():
    schema = _root({"type": "object", "properties": {"e": {"type": "string", "enum": ["a", "no"]}}})
    assert _violations(_obj({"e": "b"}), schema) == [("spec.e", 'Unsupported value: "b": supported values: "a", "no"')]


def test_string_length_and_pattern_with_go_end_of_text():
    schema = _root(
        {
            "type": "object",
            "properties": {"s": {"type": "string", "minLength": 2, "maxLength": 4, "pattern": "^[a-z]+$"}},
        }
    )
    apply_structural_schema(_obj({"s": "abc"}), schema)
    assert _violations(_obj({"s": "abcde"}), schema) == [("spec.s", "Too long: may not be longer than 4")]
    assert [p for p, _ in _violations(_obj({"s": "a"}), schema)] == ["spec.s"]
    # Python's `$` would accept a trailing newline; Go's (the API server's) does not.
    assert [p for p, _ in _violations(_obj({"s": "abc\n"}), schema)] == ["spec.s"]


@pytest.mark.parametrize(
    ("pattern", "good", "bad"),
    [
        # A `$` in a class is a literal dollar, while the pattern's closing `$` still means end of text: the
        # trailing newline is refused (Python's `$` would accept it) and the class still admits nothing else.
        ("^[$a]+$", "$a$", ["$a$\n", "$b"]),
        ("^[^$]+$", "abc", ["a$c", "$"]),
        # An escaped `]` does not end the class: the `$` after it is still inside.
        ("^[\\]$]+$", "]$]", ["]$\n", "a"]),
        # A `]` first in a class (after an optional `^`) is a literal, in Go as in Python: the class goes on.
        ("^[]$]+$", "]$]", ["]$\n", "a"]),
        ("^[^]$]+$", "abc", ["a]c", "a$c"]),
    ],
)
def test_pattern_dollar_inside_a_character_class_stays_literal(pattern, good, bad):
    schema = _root({"type": "object", "properties": {"s": {"type": "string", "pattern": pattern}}})
    apply_structural_schema(_obj({"s": good}), schema)
    for value in bad:
        assert [p for p, _ in _violations(_obj({"s": value}), schema)] == ["spec.s"], value


def test_required_and_item_and_property_counts():
    schema = _root(
        {
            "type": "object",
            "required": ["r"],
            "properties": {
                "r": {"type": "string"},
                "l": {"type": "array", "minItems": 1, "maxItems": 2, "items": {"type": "integer"}},
                "m": {"type": "object", "maxProperties": 1, "additionalProperties": {"type": "string"}},
            },
        }
    )
    causes = _violations(_obj({"l": [1, 2, 3], "m": {"a": "1", "b": "2"}}), schema)
    assert causes == [
        ("spec.r", "Required value"),
        ("spec.l", "Too many: 3: must have at most 2 items"),
        ("spec.m", "Too many: 2: must have at most 1 items"),
    ]
    assert [p for p, _ in _violations(_obj({"r": "x", "l": []}), schema)] == ["spec.l"]


def test_map_values_are_validated_with_their_key_in_the_path():
    schema = _root(
        {"type": "object", "properties": {"m": {"type": "object", "additionalProperties": {"type": "string"}}}}
    )
    assert [p for p, _ in _violations(_obj({"m": {"k": 1}}), schema)] == ["spec.m[k]"]


def test_nullable_allows_null_and_non_nullable_items_do_not():
    schema = _root(
        {
            "type": "object",
            "properties": {
                "l": {"type": "array", "items": {"type": "string"}},
                "n": {"type": "array", "items": {"type": "string", "nullable": True}},
            },
        }
    )
    apply_structural_schema(_obj({"n": [None, "x"]}), schema)
    assert [p for p, _ in _violations(_obj({"l": [None]}), schema)] == ["spec.l[0]"]


def test_int_or_string_accepts_both_and_applies_string_keywords_to_strings_only():
    schema = _root(
        {
            "type": "object",
            "properties": {"q": {"x-kubernetes-int-or-string": True, "pattern": "^[0-9]+(m|Gi)?$", "maxLength": 8}},
        }
    )
    assert apply_structural_schema(_obj({"q": 8}), schema)["spec"] == {"q": 8}
    assert apply_structural_schema(_obj({"q": "500m"}), schema)["spec"] == {"q": "500m"}
    for bad in (0.5, True, [1], "lots", "123456789"):
        assert [p for p, _ in _violations(_obj({"q": bad}), schema)] == ["spec.q"], bad


def test_list_type_map_and_set_reject_duplicates():
    schema = _root(
        {
            "type": "object",
            "properties": {
                "conds": {
                    "type": "array",
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["type"],
                    "items": {"type": "object", "properties": {"type": {"type": "string"}, "v": {"type": "integer"}}},
                },
                "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            },
        }
    )
    apply_structural_schema(_obj({"conds": [{"type": "A", "v": 1}, {"type": "B", "v": 1}], "tags": ["x", "y"]}), schema)
    causes = _violations(_obj({"conds": [{"type": "A", "v": 1}, {"type": "A", "v": 2}], "tags": ["x", "x"]}), schema)
    assert [p for p, _ in causes] == ["spec.conds[1]", "spec.tags[1]"]


def test_every_violation_is_reported_not_just_the_first():
    schema = _root({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}})
    assert len(_violations(_obj({"a": "x", "b": "y"}), schema)) == 2


def test_request_larger_than_the_api_server_limit_is_refused_even_when_aliased():
    shared = ["x" * 1000] * 100
    bomb = [shared] * 100  # 10 MB once expanded, a few KB in memory: what a YAML alias bomb produces
    schema = _root({"type": "object", "x-kubernetes-preserve-unknown-fields": True})
    causes = _violations(_obj({"bomb": bomb}), schema)
    assert causes == [("", f"Request entity too large: limit is {MAX_REQUEST_BYTES} bytes")]


def test_status_causes_are_shaped_for_a_422():
    schema = _root({"type": "object", "required": ["r"]})
    with pytest.raises(SchemaViolation) as caught:
        apply_structural_schema(_obj({}), schema)
    assert caught.value.status_causes() == [
        {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.r"}
    ]
    assert str(caught.value) == "spec.r: Required value"


# --- CEL ------------------------------------------------------------------------------------------


def _rule_schema(node_schema: dict, *rules: dict) -> dict:
    return _root({**node_schema, "x-kubernetes-validations": list(rules)})


@pytest.mark.parametrize(
    ("rule", "good", "bad"),
    [
        ("!has(self.lora) || self.type == 'lora'", {"type": "lora", "lora": {}}, {"type": "full", "lora": {}}),
        ("self.items.all(i, i > 0)", {"items": [1, 2]}, {"items": [1, 0]}),
        ("self.items.exists(i, i == 2)", {"items": [2]}, {"items": [1]}),
        ("!(self.name in ['RANK', 'WORLD_SIZE'])", {"name": "HOME"}, {"name": "RANK"}),
        (
            "size(self.items) <= 2 && self.name.size() <= 4",
            {"items": [1], "name": "abcd"},
            {"items": [1, 2, 3], "name": "a"},
        ),
        ("self.name.startsWith('ab') && self.name.endsWith('d')", {"name": "abcd"}, {"name": "xbcd"}),
        ("self.name.matches('^[a-z]+$')", {"name": "abc"}, {"name": "Abc"}),
        ("self.name.contains('-') || self.name.lowerAscii() == self.name", {"name": "abc"}, {"name": "ABC"}),
        ("self.m.all(k, k in ['a', 'b'])", {"m": {"a": 1}}, {"m": {"c": 1}}),
        ("self.ratio > 0.5", {"ratio": 1}, {"ratio": 0.25}),
    ],
)
def test_cel_rules_on_objects(rule, good, bad):
    node = {
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "lora": {"type": "object"},
            "name": {"type": "string"},
            "items": {"type": "array", "items": {"type": "integer"}},
            "ratio": {"type": "number"},
            "m": {"type": "object", "additionalProperties": {"type": "integer"}},
        },
    }
    schema = _rule_schema(node, {"rule": rule, "message": "broken"})
    apply_structural_schema(_obj(good), schema)
    assert _violations(_obj(bad), schema) == [("spec", "broken")]


def test_number_fields_reach_cel_as_doubles_even_when_written_as_integers():
    # The API server converts by the schema's type, not by how the JSON number is written: `ratio: 1` is the
    # double 1.0 for a `number`, `count: 2` stays an int for an `integer`. The type checks hold whether or
    # not the CEL engine compares ints with doubles (`self.ratio > 0.5` alone would pass in one that does).
    schema = _rule_schema(
        {"type": "object", "properties": {"ratio": {"type": "number"}, "count": {"type": "integer"}}},
        {"rule": "type(self.ratio) == double", "message": "ratio is not a double"},
        {"rule": "type(self.count) == int", "message": "count is not an int"},
        {"rule": "self.ratio > 0.5", "message": "ratio too small"},
    )
    apply_structural_schema(_obj({"ratio": 1, "count": 2}), schema)
    assert _violations(_obj({"ratio": 0, "count": 2}), schema) == [("spec", "ratio too small")]


def test_cel_field_path_reason_and_message_expression():
    schema = _rule_schema(
        {
            "type": "object",
            "properties": {
                "env": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "name": {
                                "type": "string",
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "self != 'RANK'",
                                        "message": "reserved",
                                        "reason": "FieldValueForbidden",
                                        "messageExpression": "self + ' is reserved'",
                                    }
                                ],
                            }
                        },
                    },
                }
            },
        },
        {"rule": "size(self.env) < 3", "fieldPath": ".env", "message": "too many env vars"},
    )
    with pytest.raises(SchemaViolation) as caught:
        apply_structural_schema(_obj({"env": [{"name": "A"}, {"name": "RANK"}, {"name": "B"}]}), schema)
    assert caught.value.status_causes() == [
        {"reason": "FieldValueForbidden", "message": "RANK is reserved", "field": "spec.env[1].name"},
        {"reason": "FieldValueInvalid", "message": "too many env vars", "field": "spec.env"},
    ]


def test_rule_without_message_reports_the_rule():
    schema = _rule_schema({"type": "object"}, {"rule": "has(self.a)"})
    assert _violations(_obj({}), schema) == [("spec", "failed rule: has(self.a)")]


def test_root_rule_sees_metadata_name():
    schema = {
        "type": "object",
        "properties": {"spec": {"type": "object"}},
        "x-kubernetes-validations": [
            {"rule": "self.metadata.name.size() <= 5 && self.metadata.name.matches('^[a-z]')", "message": "bad name"}
        ],
    }
    apply_structural_schema(_obj({}), schema)
    too_long = {**_obj({}), "metadata": {"name": "abcdefg"}}
    assert _violations(too_long, schema) == [("", "bad name")]


def test_int_or_string_rule_branches_on_type():
    schema = _root(
        {
            "type": "object",
            "properties": {
                "q": {
                    "x-kubernetes-int-or-string": True,
                    "x-kubernetes-validations": [{"rule": "type(self) == string || self >= 0", "message": "negative"}],
                }
            },
        }
    )
    apply_structural_schema(_obj({"q": "1Gi"}), schema)
    assert _violations(_obj({"q": -1}), schema) == [("spec.q", "negative")]


def test_rule_evaluation_error_is_reported_on_a_valid_subtree_only():
    schema = _rule_schema(
        {"type": "object", "properties": {"a": {"type": "integer"}}}, {"rule": "self.a > 0", "message": "m"}
    )
    # `a` missing: evaluating the rule fails, and nothing else explains why.
    [(path, message)] = _violations(_obj({}), schema)
    assert path == "spec" and "failed to evaluate" in message
    # `a` has the wrong type: the type error says it all.
    assert _violations(_obj({"a": "x"}), schema) == [("spec.a", 'Invalid value: "string": must be of type integer')]


def test_transition_rules_run_only_on_update_with_old_self():
    schema = _root(
        {
            "type": "object",
            "properties": {
                "task": {
                    "type": "string",
                    "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "task is immutable"}],
                }
            },
        }
    )
    apply_structural_schema(_obj({"task": "a"}), schema)  # create: no oldSelf, rule skipped
    apply_structural_schema(_obj({"task": "a"}), schema, old=_obj({"task": "a"}))
    assert _violations(_obj({"task": "b"}), schema, old=_obj({"task": "a"})) == [("spec.task", "task is immutable")]
    # A field the old object did not have is not a transition.
    apply_structural_schema(_obj({"task": "b"}), schema, old=_obj({}))


def test_transition_rules_correlate_map_list_items_by_key():
    schema = _root(
        {
            "type": "object",
            "properties": {
                "conds": {
                    "type": "array",
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["type"],
                    "items": {
                        "type": "object",
                        "properties": {"type": {"type": "string"}, "v": {"type": "integer"}},
                        "x-kubernetes-validations": [{"rule": "self.v >= oldSelf.v", "message": "v only grows"}],
                    },
                }
            },
        }
    )
    old = _obj({"conds": [{"type": "A", "v": 5}, {"type": "B", "v": 1}]})
    apply_structural_schema(
        _obj({"conds": [{"type": "B", "v": 2}, {"type": "A", "v": 5}, {"type": "C", "v": 0}]}), schema, old
    )
    assert _violations(_obj({"conds": [{"type": "B", "v": 1}, {"type": "A", "v": 4}]}), schema, old) == [
        ("spec.conds[1]", "v only grows")
    ]


def test_version_schema_picks_the_named_version():
    crd = {
        "metadata": {"name": "xs.x.dev"},
        "spec": {"versions": [{"name": "v1", "schema": {"openAPIV3Schema": {"type": "object"}}}]},
    }
    assert version_schema(crd, "v1") == {"type": "object"}
    with pytest.raises(KeyError, match="no version 'v2'"):
        version_schema(crd, "v2")
