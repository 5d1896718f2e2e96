"""parse_spec: strict JSON types, precise field paths for cross-field rules, and bounded errors."""

from __future__ import annotations

import pytest
from finetune_operator.spec import MAX_SPEC_VALUES, InvalidSpec, check_name, parse_spec


def _spec(**overrides) -> dict:
    spec = {
        "task": "text-classification",
        "model": {"source": "hf://org/model"},
        "dataset": {"train": "pvc://data/train.csv"},
        "output": {"uri": "pvc://models/out"},
    }
    spec.update(overrides)
    return spec


def _error(spec: dict, name: str = "") -> InvalidSpec:
    with pytest.raises(InvalidSpec) as caught:
        parse_spec(spec, name)
    return caught.value


def test_minimal_spec_gets_defaults():
    spec = parse_spec(_spec())
    assert spec.method.type == "full" and spec.hyperparameters.learning_rate == 2.0e-5
    assert spec.resources.gpus_per_node == 1 and spec.image == "" and spec.env == []


def test_integer_quantities_become_strings_and_total_gpus_multiplies():
    spec = parse_spec(_spec(resources={"cpu": 8, "memory": "32Gi", "nodes": 2, "gpusPerNode": 4}))
    assert (spec.resources.cpu, spec.resources.memory, spec.total_gpus) == ("8", "32Gi", 8)


def test_integers_are_accepted_where_numbers_are_expected():
    assert parse_spec(_spec(hyperparameters={"learningRate": 1, "epochs": 2})).hyperparameters.epochs == 2.0


@pytest.mark.parametrize(
    ("hyperparameters", "field"),
    [
        ({"batchSize": "16"}, "hyperparameters.batchSize"),
        ({"batchSize": 16.0}, "hyperparameters.batchSize"),
        ({"batchSize": True}, "hyperparameters.batchSize"),
        ({"learningRate": "1e-4"}, "hyperparameters.learningRate"),
    ],
)
def test_strings_floats_and_booleans_are_not_coerced_like_the_api_server(hyperparameters, field):
    assert _error(_spec(hyperparameters=hyperparameters)).field == field


def test_quantity_rejects_booleans_and_negative_integers():
    assert _error(_spec(resources={"cpu": True})).field == "resources.cpu"
    assert _error(_spec(resources={"memory": -1})).field == "resources.memory"


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"method": {"type": "full", "lora": {}}}, "method.lora", "type: lora"),
        ({"method": {"type": "lora", "freeze": {}}}, "method.freeze", "type: freeze"),
        (
            {"dataset": {"train": "pvc://d/t.csv", "validation": "pvc://d/v.csv", "validationSplit": 0.1}},
            "dataset.validationSplit",
            "not both",
        ),
        ({"hyperparameters": {"evalStrategy": "steps"}}, "hyperparameters.evalSteps", "evalSteps: 100"),
        ({"dataset": {"train": "pvc://d/imgs", "format": "imagefolder"}}, "dataset.format", "image-classification"),
        ({"regularization": {"earlyStopping": {}}}, "regularization.earlyStopping", "validationSplit: 0.1"),
    ],
)
def test_cross_field_rules_blame_the_field_to_change(overrides, field, words):
    error = _error(_spec(**overrides))
    assert error.field == field
    assert words in error.message and str(error).startswith(f"spec.{field}: ")


def test_unknown_column_role_lists_the_valid_roles():
    error = _error(_spec(dataset={"train": "pvc://d/t.csv", "columns": {"question": "q"}}))
    assert error.field == "dataset.columns" and "valid roles are text, textPair" in error.message


def test_reserved_env_name_says_to_remove_it():
    error = _error(_spec(env=[{"name": "MASTER_PORT", "value": "1"}]))
    assert (error.field, error.message) == (
        "env.0.name",
        "MASTER_PORT is set by the operator for distributed training; remove it from env",
    )


def test_pattern_errors_give_an_example_and_do_not_echo_huge_values():
    error = _error(_spec(model={"source": "http://x/" + "a" * 1000}))
    assert error.field == "model.source" and "hf://org/name" in error.message
    assert len(error.message) < 300


def test_alias_bomb_is_refused_before_validation():
    level = ["x"] * 10
    for _ in range(7):
        level = [level] * 10
    error = _error(_spec(scheduling={"affinity": {"a": level}}))
    assert error.field == "" and f"more than {MAX_SPEC_VALUES} values" in error.message


def test_name_rules():
    check_name("a" * 45)
    for bad in ("a" * 46, "9lives", "Upper", "has.dot", "trailing-"):
        with pytest.raises(InvalidSpec, match="metadata.name"):
            check_name(bad)
    assert _error(_spec(), name="9lives").field == ""


# --- Pass-through core/v1 fields (issue 15): refused as the Job API would, naming field, value and example ---


def test_toleration_operator_names_the_field_the_value_and_the_valid_values():
    error = _error(_spec(scheduling={"tolerations": [{"key": "gpu", "operator": "Sometimes"}]}))
    assert error.field == "scheduling.tolerations.0.operator"
    assert "'Sometimes'" in error.message and "'Equal', 'Exists'" in error.message


@pytest.mark.parametrize(
    ("scheduling", "field", "words"),
    [
        ({"nodeSelector": {"bad key!": "x"}}, "scheduling.nodeSelector", ["'bad key!'", "nvidia.com/gpu.product"]),
        ({"nodeSelector": {"pool": "a b"}}, "scheduling.nodeSelector.pool", ["'a b'", "NVIDIA-H100-80GB-HBM3"]),
        ({"priorityClassName": "High"}, "scheduling.priorityClassName", ["'High'", "training-high"]),
        ({"queueName": "team_a"}, "scheduling.queueName", ["'team_a'", "DNS subdomain"]),
        (
            {"tolerations": [{"key": "gpu", "effect": "NoSchedule", "tolerationSeconds": 5}]},
            "scheduling.tolerations.0.tolerationSeconds",
            ["'NoSchedule'", "effect: NoExecute, tolerationSeconds: 300"],
        ),
        (
            {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "x y"}]}}},
            "scheduling.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution.0.topologyKey",
            ["'x y'", "label key"],
        ),
    ],
    ids=["node-selector-key", "node-selector-value", "priority-class", "queue", "toleration-seconds", "topology-key"],
)
def test_scheduling_refusals_name_the_value_and_give_an_example(scheduling, field, words):
    error = _error(_spec(scheduling=scheduling))
    assert error.field == field
    assert all(word in error.message for word in words), error.message


def test_env_name_refusal_follows_is_env_var_name():
    # [-._a-zA-Z][-._a-zA-Z0-9]*, but not '.', '..' or '..'-prefixed (k8s.io/apimachinery IsEnvVarName).
    for good in ("A", "my.env-name", "_x", "-x", ".x", ".1", "a..b"):
        parse_spec(_spec(env=[{"name": good, "value": "1"}]))
    for bad in (".", "..", "..x", "1A", "A B", "A=B", ""):
        error = _error(_spec(env=[{"name": bad, "value": "1"}]))
        assert error.field == "env.0.name" and "NCCL_DEBUG" in error.message, bad


def test_queue_name_is_a_kueue_local_queue_name_and_a_label_value():
    # Kueue's webhook: IsDNS1123Subdomain; the queue-name label value: at most 63 characters.
    assert parse_spec(_spec(scheduling={"queueName": "team-a.gpu"})).scheduling.queue_name == "team-a.gpu"
    assert _error(_spec(scheduling={"queueName": "q" * 64})).field == "scheduling.queueName"


def test_passed_through_values_stay_the_json_that_was_written():
    affinity = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 5}]}}
    tolerations = [{"key": "gpu", "operator": "Exists", "tolerationSeconds": None}]
    value_from = {"secretKeyRef": {"name": "wandb", "key": "api-key"}}
    spec = parse_spec(
        _spec(
            scheduling={"affinity": affinity, "tolerations": tolerations},
            env=[{"name": "W", "valueFrom": value_from}],
        )
    )
    assert spec.scheduling.affinity == affinity and spec.scheduling.tolerations == tolerations
    assert spec.env[0].value_from == value_from
    dumped = spec.model_dump(mode="json", by_alias=True)
    assert dumped["scheduling"]["affinity"] == affinity and dumped["env"][0]["valueFrom"] == value_from
