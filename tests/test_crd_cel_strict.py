"""The CRD's CEL rules, read the way a real kube-apiserver reads them (issue 14).

The sandbox's CEL interpreter (celpy) is lenient: it let through two rules that a real API server refused.
Here every x-kubernetes-validations rule is type-checked with Google's C++ CEL (cel-expr-python), with
`self` typed from its schema node, in the environment a Kubernetes 1.28 API server compiles new rules in;
and every rule is evaluated on every schema default as written (no nested defaults: the check the API
server makes when the CRD is created) and on every sample after defaulting. tests/crd_cel_checker.py
says how, and where it differs from cel-go.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

if sys.version_info < (3, 11):  # cel-expr-python has no wheel for 3.10 (pyproject.toml installs it from 3.11)
    pytest.skip("cel-expr-python needs Python 3.11+", allow_module_level=True)

from crd_cel_checker import CompileError, Rule, StrictCel, apply_defaults, escape, walk  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CRD = yaml.safe_load((ROOT / "manifests/crd/finetunejobs.yaml").read_text())
SCHEMA: dict[str, Any] = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
SAMPLES = sorted((ROOT / "manifests/samples").glob("*.yaml"))
CHECKER = StrictCel(SCHEMA)
NODES = dict(walk(SCHEMA))
SEARCH_PARAMETER = "spec.hyperparameterSearch.parameters[*]"
# The two rules a real API server (v1.24) refused, as they were before issue 14.
OLD_SEARCH_RULE = "self.scale != 'log' || !has(self.min) || self.min > 0"
OLD_HYPERPARAMETERS_RULE = "self.evalStrategy != 'steps' || has(self.evalSteps)"


def _rule(path: str, says: str) -> Rule:
    return next(rule for rule in CHECKER.rules if rule.path == path and says in rule.message)


def test_the_crd_has_rules_and_defaults_to_check():
    assert len(CRD["spec"]["versions"]) == 1, "check every version's schema"
    assert len(CHECKER.rules) >= 24
    assert len(CHECKER.defaults()) >= 50
    assert {"spec.hyperparameters", "spec.method", "spec.dataset.columns"} <= {path for path, _ in CHECKER.defaults()}


# --- Every rule compiles as the API server compiles it ---------------------------------------------------


@pytest.mark.parametrize("rule", CHECKER.rules, ids=lambda rule: rule.id)
def test_rule_type_checks_as_the_api_server_does(rule: Rule):
    errors = CHECKER.check(rule)
    assert not errors, f"{rule.id}: a Kubernetes API server would refuse the CRD:\n" + "\n".join(errors)


# --- Every rule holds on every default, as written, and on every sample -----------------------------------


@pytest.mark.parametrize(("path", "node"), CHECKER.defaults(), ids=[path for path, _ in CHECKER.defaults()])
def test_default_passes_every_rule_without_nested_defaults(path: str, node: dict[str, Any]):
    failures = CHECKER.validate_default(path, node)
    assert not failures, "a Kubernetes API server would refuse the CRD:\n" + "\n".join(map(str, failures))


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_sample_passes_every_rule_after_defaulting(path: Path):
    job = apply_defaults(yaml.safe_load(path.read_text()), SCHEMA)
    failures = CHECKER.validate(SCHEMA, job, root=True)
    assert not failures, "\n".join(map(str, failures))


# --- Proof: the checker refuses the two rules a real API server refused ----------------------------------


def test_an_int_literal_compared_with_a_number_field_does_not_compile():
    node = NODES[SEARCH_PARAMETER]
    assert node["properties"]["min"]["type"] == "number"
    with pytest.raises(CompileError, match=r"no matching overload for '_>_' applied to '\(double, int\)'"):
        CHECKER.compile("self.min > 0", node)
    CHECKER.compile("self.min > 0.0", node)
    CHECKER.compile("self.min > double(0)", node)


def test_the_old_search_rule_is_refused_though_the_lenient_interpreter_accepts_it():
    rule = dataclasses.replace(_rule(SEARCH_PARAMETER, "scale: log needs min > 0"), rule=OLD_SEARCH_RULE)
    (error,) = CHECKER.check(rule)
    assert "found no matching overload for '_>_' applied to '(double, int)'" in error
    # celpy, the sandbox's interpreter, compiles and evaluates it without a word.
    celpy = pytest.importorskip("celpy")
    env = celpy.Environment()
    program = env.program(env.compile(OLD_SEARCH_RULE))
    assert program.evaluate({"self": celpy.json_to_cel({"scale": "log", "min": 1e-5, "max": 1e-3})})


def test_the_old_hyperparameters_rule_fails_on_its_own_default():
    schema = copy.deepcopy(SCHEMA)
    node = schema["properties"]["spec"]["properties"]["hyperparameters"]
    assert node["default"] == {}
    (rule,) = node["x-kubernetes-validations"]
    rule["rule"] = OLD_HYPERPARAMETERS_RULE
    checker = StrictCel(schema)
    (failure,) = checker.validate_default("spec.hyperparameters", node)
    assert failure.path == "spec.hyperparameters (default)"
    assert "evaluation error" in failure.detail and '"evalStrategy"' in failure.detail, failure
    # With its nested defaults applied (what admission does) the same default passes: the API server's
    # check of the CRD does not apply them, and that is the case a rule must survive.
    assert not checker.validate(node, apply_defaults(copy.deepcopy(node["default"]), node), "spec.hyperparameters")


# --- The fixed rules still refuse what they are for --------------------------------------------------------


def _search_job(**edits: Any) -> dict[str, Any]:
    job = yaml.safe_load((ROOT / "manifests/samples/sentiment-minilm-search.yaml").read_text())
    for dotted, value in edits.items():
        node = job["spec"]
        *parents, last = dotted.split("__")
        for part in parents:
            node = node[part]
        if value is None:
            node.pop(last)
        else:
            node[last] = value
    return apply_defaults(job, SCHEMA)


@pytest.mark.parametrize(
    ("edits", "message"),
    [
        ({}, None),
        ({"hyperparameters__evalSteps": None}, "evalStrategy: steps needs evalSteps (e.g. evalSteps: 100)"),
        ({"hyperparameters__evalStrategy": "epoch", "hyperparameters__evalSteps": None}, None),
        ({"hyperparameters__evalStrategy": None, "hyperparameters__evalSteps": None}, None),
        ({"hyperparameterSearch__parameters__learningRate": {"min": 0, "max": 1, "scale": "log"}}, "min > 0"),
        ({"hyperparameterSearch__parameters__learningRate": {"min": 0.0, "max": 1, "scale": "log"}}, "min > 0"),
        ({"hyperparameterSearch__parameters__learningRate": {"min": 1, "max": 2, "scale": "log"}}, None),
        ({"hyperparameterSearch__parameters__learningRate": {"min": 1, "max": 2}}, None),
        ({"hyperparameterSearch__parameters__learningRate": {"min": 2, "max": 1}}, "min must be less than max"),
    ],
    ids=["sample", "steps-without-evalSteps", "epoch", "evalStrategy-defaulted", "log-min-int-0",
         "log-min-0.0", "log-min-int-1", "linear-int-range", "min-above-max"],
)  # fmt: skip
def test_fixed_rules_under_strict_evaluation(edits: dict[str, Any], message: str | None):
    failures = CHECKER.validate(SCHEMA, _search_job(**edits), root=True)
    if message is None:
        assert not failures, "\n".join(map(str, failures))
    else:
        assert [message in failure.detail for failure in failures] == [True], "\n".join(map(str, failures))


# --- The checker types fields from the schema (it is not `dyn` all the way down) ---------------------------


@pytest.mark.parametrize(
    ("path", "expression", "refused"),
    [
        ("", "self.spec.hyperparameters.batchSize > 0", ""),
        ("", "self.spec.hyperparameters.epochs > 0", "'_>_' applied to '(double, int)'"),
        ("", "self.spec.hyperparameters.nope == 1", "undefined field 'nope'"),
        ("", "self.metadata.generateName.startsWith('ft-') && self.kind == 'FineTuneJob'", ""),
        ("", "has(self.metadata.labels)", "undefined field 'labels'"),
        ("", "self.status.startTime < timestamp('2030-01-01T00:00:00Z')", ""),
        ("", "self.status.startTime < '2030-01-01'", "'_<_' applied to '(google.protobuf.Timestamp, string)'"),
        ("", "self.spec.hyperparameters.learningRate", "must evaluate to bool"),
        (SEARCH_PARAMETER, "has(self.values)", "undefined field 'values'"),
        (SEARCH_PARAMETER, "self.scale == 1", "'_==_' applied to '(string, int)'"),
        ("spec.resources.cpu", "type(self) == string || self > 1", ""),
        ("spec.dataset.columns", "self.all(role, self[role].size() > 0)", ""),
        ("spec.dataset.columns", "self.all(role, self[role] > 0)", "'_>_' applied to '(string, int)'"),
        ("spec.dataset.labels", "self.isSorted() && self.max() > 'a' && self.indexOf('x') < 2", ""),
        ("spec.dataset.labels", "self.max() > 1", "'_>_' applied to '(string, int)'"),
        ("spec.env[*].name", "self.lowerAscii().split('_').join('-').find('[a-z]+') != ''", ""),
        ("spec.model.source", "!isURL(self) || url(self).getScheme() in ['hf', 's3']", ""),
        ("spec.model.source", "url(self).getPort() > 0", "'_>_' applied to '(string, int)'"),
        # affinity is typed like core/v1's Affinity (issue 15), so rules can read it, and a misspelt field is refused.
        ("spec.scheduling.affinity.podAffinity", "self.requiredDuringSchedulingIgnoredDuringExecution.size() < 2", ""),
        ("spec.scheduling.affinity", "has(self.nodeAfinity)", "undefined field 'nodeAfinity'"),
        ("spec.scheduling.tolerations[*]", "self.tolerationSeconds > 0.0", "'_>_' applied to '(int, double)'"),
        # Libraries that came after Kubernetes 1.28's environment for new rules are not declared.
        ("spec.resources.memory", "quantity(self).isGreaterThan(quantity('1Gi'))", "undeclared reference"),
        ("spec.env[*].name", "self.format([1]) != ''", "undeclared reference"),
        ("spec.hyperparameters", "optional.of(1).hasValue()", "undeclared reference"),
    ],
)
def test_checker_types_each_field_from_the_schema(path: str, expression: str, refused: str):
    node = NODES[path]
    if not refused:
        CHECKER.compile(expression, node)
        return
    with pytest.raises(CompileError) as caught:
        CHECKER.compile(expression, node)
    assert refused in str(caught.value)


@pytest.mark.parametrize(
    ("schema", "value", "rule"),
    [
        ({"type": "array", "items": {"type": "string"}}, ["a", "b"], "self.isSorted() && self.indexOf('b') == 1"),
        ({"type": "array", "items": {"type": "number"}}, [3, 1.5], "self.sum() == 4.5 && self.min() == 1.5"),
        ({"type": "string"}, "a_b_c", "self.split('_', 2) == ['a', 'b_c'] && self.upperAscii() == 'A_B_C'"),
        ({"type": "string"}, "x-12-y", "self.find('[0-9]+') == '12' && self.findAll('[a-z]') == ['x', 'y']"),
        ({"type": "string"}, "https://h.example:8443/p?q=1", "url(self).getHost() == 'h.example:8443'"),
        ({"type": "string"}, "https://h.example:8443/p?q=1", "url(self).getQuery() == {'q': ['1']}"),
        ({"type": "string"}, "not a url", "!isURL(self)"),
        ({"type": "object", "properties": {"in": {"type": "string"}, "a-b": {"type": "integer"}}},
         {"in": "x", "a-b": 1}, "self.__in__ == 'x' && self.a__dash__b == 1"),
    ],
)  # fmt: skip
def test_kubernetes_library_and_escaping_evaluate(schema: dict[str, Any], value: Any, rule: str):
    node = {**schema, "x-kubernetes-validations": [{"rule": rule}]}
    checker = StrictCel(node)
    (checked,) = checker.rules
    assert not checker.check(checked)
    assert not checker.validate(node, value), checker.validate(node, value)


def test_escaping_follows_the_api_server():
    assert [escape(name) for name in ("namespace", "a.b", "x-y/z", "a__b", "1abc", "a b")] == [
        "__namespace__",
        "a__dot__b",
        "x__dash__y__slash__z",
        "a__underscores__b",
        None,
        None,
    ]
