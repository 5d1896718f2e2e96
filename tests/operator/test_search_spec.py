"""The hyperparameterSearch spec: parameter paths, applying parameters, defaults, the objective's goal, and the
CRD's view of searches and their status (the invalid cases live in invalid_catalog.py)."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from finetune_operator import names
from finetune_operator.search.paths import NOT_SEARCHABLE
from finetune_operator.spec import SEARCH_PATHS, InvalidSpec, check_name, parse_spec
from finetune_operator.spec.hyperparameter_search import SearchObjective
from finetune_operator.spec.schema import MAX_SEARCH_NAME_LENGTH, MAX_SEARCH_PARAMETERS, MAX_SEARCH_VALUES
from finetune_sandbox.structural_schema import SchemaViolation, apply_structural_schema
from invalid_catalog import base_job

ROOT = Path(__file__).resolve().parents[2]
SCHEMA: dict[str, Any] = yaml.safe_load((ROOT / "manifests/crd/finetunejobs.yaml").read_text())["spec"]["versions"][0][
    "schema"
]["openAPIV3Schema"]
SAMPLE = ROOT / "manifests/samples/sentiment-minilm-search.yaml"


def _spec_with(search: dict[str, Any]) -> dict[str, Any]:
    spec = base_job()["spec"]
    spec["hyperparameterSearch"] = search
    return spec


def _search(**parameters: Any) -> dict[str, Any]:
    return {"objective": {"metric": "eval_accuracy"}, "parameters": parameters}


# --- paths ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "full", "kind"),
    [
        ("learningRate", "hyperparameters.learningRate", "float"),
        ("hyperparameters.learningRate", "hyperparameters.learningRate", "float"),
        ("batchSize", "hyperparameters.batchSize", "int"),
        ("maxSteps", "hyperparameters.maxSteps", "int"),  # Optional[int]
        ("precision", "hyperparameters.precision", "categorical"),  # Literal
        ("method.lora.r", "method.lora.r", "int"),  # inside an Optional model
        ("method.lora.mergeAdapter", "method.lora.mergeAdapter", "categorical"),  # bool
        ("regularization.dropout", "regularization.dropout", "float"),  # Optional[float]
        ("regularization.earlyStopping.patience", "regularization.earlyStopping.patience", "int"),
        ("model.revision", "model.revision", "categorical"),  # str
    ],
)
def test_paths_resolve_to_the_full_spec_path_and_its_kind(path, full, kind):
    assert SEARCH_PATHS.resolve_path(path) == full
    assert SEARCH_PATHS.parameter_kind(path) == kind


@pytest.mark.parametrize(
    "path",
    [
        "dataset.train",
        "output.uri",
        "runPolicy.backoffLimit",
        "scheduling.queueName",
        "secrets.hfToken.name",
        "hyperparameterSearch.maxTrials",
    ],
)
def test_paths_into_fixed_sections_are_refused_naming_the_section(path):
    with pytest.raises(ValueError, match=f"cannot be searched: fields under {path.split('.')[0]}"):
        SEARCH_PATHS.resolve_path(path)


@pytest.mark.parametrize(
    ("path", "suggestion"),
    [
        ("learning_rate", "learningRate"),
        ("batchsize", "batchSize"),
        ("method.lora.rank", "method.lora.r"),
    ],
)
def test_unknown_paths_are_refused_with_close_matches(path, suggestion):
    with pytest.raises(ValueError, match="is not a searchable field") as refused:
        SEARCH_PATHS.resolve_path(path)
    assert f"did you mean {suggestion}" in str(refused.value)


@pytest.mark.parametrize(
    "path",
    [
        "task",
        "image",
        "env",
        "method.lora.targetModules",
        "dataset.labels",
        "method.lora",
        "hyperparameters",
        "regularization.earlyStopping",
        "",
    ],
)
def test_objects_lists_and_top_level_fields_are_not_searchable(path):
    with pytest.raises(ValueError):
        SEARCH_PATHS.resolve_path(path)


def test_no_searchable_path_lies_in_a_fixed_section():
    assert SEARCH_PATHS.searchable_paths()
    assert not [path for path in SEARCH_PATHS.searchable_paths() if path.split(".")[0] in NOT_SEARCHABLE]
    assert {"learningRate", "hyperparameters.learningRate"} <= set(SEARCH_PATHS.accepted_keys())


def test_apply_parameters_is_pure_and_creates_missing_and_null_objects():
    spec = {
        "method": {"type": "lora", "lora": None},
        "hyperparameters": {"epochs": 2},
        "hyperparameterSearch": {"maxTrials": 3},
    }
    before = copy.deepcopy(spec)
    applied = SEARCH_PATHS.apply_parameters(
        spec, {"learningRate": 1e-4, "method.lora.r": 16.0, "regularization.dropout": 0.1}
    )
    assert spec == before
    assert applied == {
        "method": {"type": "lora", "lora": {"r": 16}},
        "hyperparameters": {"epochs": 2, "learningRate": 1e-4},
        "regularization": {"dropout": 0.1},
        "hyperparameterSearch": {"maxTrials": 3},
    }
    assert type(applied["method"]["lora"]["r"]) is int, "a whole float for an int field becomes an int"


def test_apply_parameters_keeps_json_types_it_cannot_convert_safely():
    applied = SEARCH_PATHS.apply_parameters(
        {}, {"batchSize": 16.5, "epochs": 3, "precision": "bf16", "method.lora.mergeAdapter": True}
    )
    assert applied["hyperparameters"] == {"batchSize": 16.5, "epochs": 3, "precision": "bf16"}
    assert applied["method"]["lora"]["mergeAdapter"] is True


def test_apply_parameters_refuses_unknown_paths():
    with pytest.raises(ValueError, match="output.uri"):
        SEARCH_PATHS.apply_parameters({}, {"output.uri": "pvc://x/y"})


def test_an_applied_trial_spec_parses_with_the_values_set():
    spec = parse_spec(SEARCH_PATHS.apply_parameters(base_job()["spec"], {"learningRate": 3e-4, "batchSize": 32.0}))
    assert (spec.hyperparameters.learning_rate, spec.hyperparameters.batch_size) == (3e-4, 32)


# --- the model --------------------------------------------------------------------------------------


def test_search_defaults():
    search = parse_spec(_spec_with(_search(learningRate={"min": 1e-5, "max": 1e-3})), "job").hyperparameter_search
    assert search is not None
    assert (search.algorithm, search.max_trials, search.parallel_trials, search.max_failed_trials) == (
        "bayesian",
        10,
        1,
        3,
    )
    assert (search.seed, search.keep_trial_outputs, search.early_stopping) == (None, False, None)
    parameter = search.parameters["learningRate"]
    assert (parameter.scale, parameter.step, parameter.values, parameter.is_range, parameter.is_finite) == (
        "linear",
        None,
        None,
        True,
        False,
    )
    stopping = parse_spec(
        _spec_with({**_search(batchSize={"values": [8]}), "earlyStopping": {}})
    ).hyperparameter_search.early_stopping
    assert (stopping.algorithm, stopping.min_steps, stopping.min_trials) == ("median", 0, 2)


def test_a_spec_without_a_search_has_none():
    assert parse_spec(base_job()["spec"]).hyperparameter_search is None


def test_values_keep_their_json_types():
    search = parse_spec(
        _spec_with(
            _search(
                **{
                    "regularization.augmentation.enabled": {"values": [True, False]},
                    "precision": {"values": ["fp32", "auto"]},
                    "epochs": {"values": [1, 2.5]},
                }
            )
        )
    ).hyperparameter_search
    assert [type(v) for v in search.parameters["regularization.augmentation.enabled"].values] == [bool, bool]
    assert [type(v) for v in search.parameters["precision"].values] == [str, str]
    assert [type(v) for v in search.parameters["epochs"].values] == [int, float]


def test_bool_and_number_values_are_distinct_but_equal_numbers_are_duplicates():
    with pytest.raises(InvalidSpec, match="unique"):
        parse_spec(_spec_with(_search(batchSize={"values": [8, 8.0]})))
    # true and 1 are different JSON values (the semantic check then refuses true for an int field).
    with pytest.raises(InvalidSpec, match="value True gives an invalid job"):
        parse_spec(_spec_with(_search(batchSize={"values": [1, True]})))


@pytest.mark.parametrize(
    ("metric", "goal"),
    [
        ("eval_loss", "minimize"),
        ("eval_perplexity", "minimize"),
        ("eval_wer", "minimize"),
        ("eval_cer", "minimize"),
        ("eval_Loss_smoothed", "minimize"),
        ("eval_accuracy", "maximize"),
        ("eval_f1", "maximize"),
        ("eval_rougeL", "maximize"),
        ("eval_answer_f1", "maximize"),
        ("eval_lossless_ratio", "maximize"),
    ],
)
def test_goal_is_inferred_from_the_metric_name(metric, goal):
    assert SearchObjective(metric=metric).resolved_goal == goal


def test_an_explicit_goal_wins_over_the_name():
    assert SearchObjective(metric="eval_loss", goal="maximize").resolved_goal == "maximize"
    assert SearchObjective(metric="eval_accuracy", goal="minimize").resolved_goal == "minimize"


def test_grid_accepts_values_and_stepped_ranges():
    search = parse_spec(
        _spec_with(
            {**_search(batchSize={"values": [8, 16]}, seed={"min": 1, "max": 5, "step": 2}), "algorithm": "grid"}
        )
    ).hyperparameter_search
    assert all(parameter.is_finite for parameter in search.parameters.values())


def test_semantic_error_names_the_parameter_and_quotes_the_jobs_own_error():
    with pytest.raises(InvalidSpec) as refused:
        parse_spec(_spec_with(_search(**{"method.lora.r": {"values": [4, 8, 16]}})))
    assert refused.value.field == "hyperparameterSearch.parameters.method.lora.r"
    assert str(refused.value) == (
        "spec.hyperparameterSearch.parameters.method.lora.r: value 4 gives an invalid job: spec.method.lora: "
        "lora settings are only allowed with type: lora (type is 'full')"
    )


def test_lora_parameters_are_fine_on_a_lora_job():
    spec = _spec_with(_search(**{"method.lora.r": {"values": [4, 8, 16]}, "method.lora.alpha": {"min": 8, "max": 32}}))
    spec["method"] = {"type": "lora"}
    assert parse_spec(spec).hyperparameter_search.parameters["method.lora.r"].values == [4, 8, 16]


def test_range_ends_are_checked_against_the_field_bounds():
    with pytest.raises(InvalidSpec, match=r"value 1\.0 gives an invalid job: spec\.regularization\.dropout"):
        parse_spec(_spec_with(_search(**{"regularization.dropout": {"min": 0.0, "max": 1.0}})))


def test_a_maximal_search_parses_quickly():
    # 13 parameters x 64 values: every value is applied to the spec and checked (measured: about 0.1 s).
    numeric = [
        key for key in SEARCH_PATHS.accepted_keys() if "." not in key and SEARCH_PATHS.parameter_kind(key) == "int"
    ]
    parameters = {key: {"values": list(range(129, 129 + MAX_SEARCH_VALUES))} for key in numeric}
    parameters.update(
        {
            key: {"values": [i / 1000 for i in range(1, MAX_SEARCH_VALUES + 1)]}
            for key in (
                "learningRate",
                "warmupRatio",
                "weightDecay",
                "regularization.labelSmoothing",
                "regularization.dropout",
                "regularization.augmentation.tokenDropout",
                "epochs",
                "resources.nodes",
            )[: MAX_SEARCH_PARAMETERS - len(numeric)]
        }
    )
    parameters.pop("resources.nodes", None)
    spec = _spec_with(_search(**parameters))
    spec["hyperparameters"].update(evalStrategy="steps", evalSteps=10)
    started = time.perf_counter()
    assert len(parse_spec(spec).hyperparameter_search.parameters) == len(parameters)
    assert time.perf_counter() - started < 5


# --- the name -----------------------------------------------------------------------------------------


def test_a_search_limits_the_name_so_every_trial_name_fits():
    assert MAX_SEARCH_NAME_LENGTH == 41
    spec = _spec_with(_search(batchSize={"values": [8, 16]}))
    parse_spec(spec, "a" * 41)
    with pytest.raises(InvalidSpec, match="at most 41.*<name>-t<index>"):
        parse_spec(spec, "a" * 42)
    parse_spec(base_job()["spec"], "a" * 45)  # without a search the usual limit holds
    check_name("a" * 45)
    with pytest.raises(InvalidSpec, match="hyperparameterSearch"):
        check_name("a" * 42, search=True)
    assert len(names.trial_name("a" * 41, 99)) == 45


# --- the CRD ------------------------------------------------------------------------------------------


def _object(spec: dict[str, Any], name: str = "job", status: dict[str, Any] | None = None) -> dict[str, Any]:
    body = {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": name, "namespace": "ns"},
        "spec": spec,
    }
    if status is not None:
        body["status"] = status
    return body


def test_crd_and_pydantic_defaults_agree_for_a_minimal_search():
    spec = _spec_with(
        {**_search(learningRate={"min": 1e-5, "max": 1e-3}, batchSize={"values": [8, 16]}), "earlyStopping": {}}
    )
    stored = apply_structural_schema(_object(spec), SCHEMA, strict=True)
    search = stored["spec"]["hyperparameterSearch"]
    assert search["parameters"]["learningRate"] == {"min": 1e-5, "max": 1e-3, "scale": "linear"}
    assert search["earlyStopping"] == {"algorithm": "median", "minSteps": 0, "minTrials": 2}
    assert parse_spec(stored["spec"]).model_dump() == parse_spec(spec).model_dump()


def test_crd_keeps_mixed_value_types_as_given():
    spec = _spec_with(
        _search(
            **{
                "method.lora.mergeAdapter": {"values": [True, False]},
                "epochs": {"values": [1, 2.5]},
                "precision": {"values": ["fp32"]},
            }
        )
    )
    stored = apply_structural_schema(_object(spec), SCHEMA, strict=True)
    assert stored["spec"]["hyperparameterSearch"]["parameters"]["method.lora.mergeAdapter"]["values"] == [True, False]
    assert stored["spec"]["hyperparameterSearch"]["parameters"]["epochs"]["values"] == [1, 2.5]


def test_crd_reports_a_parameter_with_both_forms_as_one_oneof_cause():
    spec = _spec_with(_search(learningRate={"values": [1e-4], "min": 1e-5, "max": 1e-3}))
    with pytest.raises(SchemaViolation) as refused:
        apply_structural_schema(_object(spec), SCHEMA)
    assert refused.value.causes == [
        (
            "spec.hyperparameterSearch.parameters[learningRate]",
            'Invalid value: "object": must validate one and only one schema (oneOf). Found 2 valid alternatives',
        )
    ]


@pytest.mark.parametrize(
    ("schema", "value", "valid"),
    [
        ({"oneOf": [{"required": ["a"]}, {"required": ["b"]}]}, {"a": 1}, True),
        ({"oneOf": [{"required": ["a"]}, {"required": ["b"]}]}, {}, False),
        ({"anyOf": [{"required": ["a"]}, {"required": ["b"]}]}, {"a": 1, "b": 2}, True),
        ({"anyOf": [{"required": ["a"]}, {"required": ["b"]}]}, {"c": 1}, False),
        ({"allOf": [{"required": ["a"]}, {"required": ["b"]}]}, {"a": 1}, False),
        ({"not": {"required": ["a"]}}, {"a": 1}, False),
        ({"not": {"required": ["a"]}}, {"b": 1}, True),
    ],
)
def test_sandbox_schema_checks_value_combinators(schema, value, valid):
    root = {
        "type": "object",
        "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, **schema}},
    }
    body = {"apiVersion": "v1", "kind": "X", "metadata": {}, "spec": value}
    if valid:
        apply_structural_schema(body, root)
    else:
        with pytest.raises(SchemaViolation) as refused:
            apply_structural_schema(body, root)
        assert [field for field, _ in refused.value.causes] == ["spec"]


def _status() -> dict[str, Any]:
    return {
        "phase": "Running",
        "search": {
            "algorithm": "bayesian",
            "metric": "eval_accuracy",
            "goal": "maximize",
            "trials": {"total": 4, "pending": 0, "running": 2, "succeeded": 1, "failed": 0, "earlyStopped": 1},
        },
        "trials": [
            {
                "name": "job-t0",
                "index": 0,
                "parameters": {
                    "learningRate": 3.1e-4,
                    "batchSize": 16,
                    "precision": "fp32",
                    "method.lora.mergeAdapter": True,
                },
                "state": "Running",
                "objectiveValue": 0.83,
                "step": 40,
                "totalSteps": 100,
                "history": [{"step": 20, "value": 0.7}, {"step": 40, "value": 0.83}],
                "reason": "EarlyStopped",
                "message": "below the median",
                "startTime": "2026-01-01T00:00:00Z",
                "completionTime": "2026-01-01T00:10:00Z",
                "outputUri": "pvc://models/x/trials/job-t0",
                "gpuSeconds": 12.5,
            }
        ],
        "bestTrial": {
            "name": "job-t0",
            "index": 0,
            "parameters": {"learningRate": 3.1e-4},
            "objectiveValue": 0.83,
            "outputUri": "pvc://models/x/trials/job-t0",
            "metrics": {"eval_accuracy": 0.83, "eval_loss": 0.3},
        },
    }


def test_crd_status_keeps_the_search_status_of_the_design():
    spec = _spec_with(_search(batchSize={"values": [8, 16]}))
    status = _status()
    stored = apply_structural_schema(_object(spec, status=status), SCHEMA, strict=True)
    assert stored["status"] == status


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda s: s["trials"][0].update(state="Paused"), "status.trials[0].state"),
        (lambda s: s["trials"][0].update(index=-1), "status.trials[0].index"),
        (
            lambda s: s["trials"][0].update(history=[{"step": i, "value": 0.1} for i in range(33)]),
            "status.trials[0].history",
        ),
        (lambda s: s.update(trials=[s["trials"][0]] * 101), "status.trials"),
        (lambda s: s["search"]["trials"].update(running=-1), "status.search.trials.running"),
        (lambda s: s["bestTrial"].update(metrics={"eval_accuracy": "high"}), "status.bestTrial.metrics[eval_accuracy]"),
    ],
)
def test_crd_status_refuses_malformed_search_status(edit, field):
    status = _status()
    edit(status)
    with pytest.raises(SchemaViolation) as refused:
        apply_structural_schema(_object(_spec_with(_search(batchSize={"values": [8]})), status=status), SCHEMA)
    assert field in [path for path, _ in refused.value.causes], refused.value.causes


# --- the sample ---------------------------------------------------------------------------------------


def test_search_sample_is_the_demo_as_a_small_bayesian_search():
    job = yaml.safe_load(SAMPLE.read_text())
    spec = parse_spec(job["spec"], job["metadata"]["name"])
    demo = parse_spec(yaml.safe_load((ROOT / "manifests/samples/sentiment-minilm.yaml").read_text())["spec"])
    search = spec.hyperparameter_search
    assert search is not None
    assert (search.algorithm, search.objective.metric, search.objective.resolved_goal) == (
        "bayesian",
        "eval_loss",
        "minimize",
    )
    assert (search.max_trials, search.parallel_trials) == (8, 2)
    assert search.early_stopping is not None
    assert (search.early_stopping.algorithm, search.early_stopping.min_steps, search.early_stopping.min_trials) == (
        "median",
        10,
        2,
    )
    parameters = search.parameters
    assert list(parameters) == ["learningRate", "batchSize", "regularization.dropout"]
    assert (parameters["learningRate"].min, parameters["learningRate"].max, parameters["learningRate"].scale) == (
        1e-5,
        3e-4,
        "log",
    )
    assert parameters["batchSize"].values == [8, 16, 32]
    assert (parameters["regularization.dropout"].min, parameters["regularization.dropout"].max) == (0.0, 0.3)
    assert (spec.hyperparameters.eval_strategy, spec.hyperparameters.eval_steps, spec.hyperparameters.epochs) == (
        "steps",
        10,
        2,
    )
    assert spec.output.uri == "pvc://models/sentiment-minilm-search"
    assert (spec.task, spec.model, spec.dataset, spec.resources) == (
        demo.task,
        demo.model,
        demo.dataset,
        demo.resources,
    )
