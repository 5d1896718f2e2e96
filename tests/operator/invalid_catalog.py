"""Invalid FineTuneJobs, each with the one field it is about and which side (CRD schema, spec.py) catches it.

Each case edits a copy of a valid FineTuneJob (`base_job()`) in place. `field` is the dotted camelCase
path under `spec` ("" = the spec or the object as a whole) as `InvalidSpec.field` names it; the CRD's
cause path is the same field written the API server's way (`spec.env[0].name`). Both sides reject
unless a case says otherwise, and then the test asserts exactly what it says.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

REJECT = "reject"
# The API server drops unknown fields silently by default and rejects them with fieldValidation=Strict.
PRUNE = "prune"
# The API server accepts the object as written (after pruning and defaulting).
ACCEPT = "accept"


def base_job() -> dict[str, Any]:
    return {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "sentiment-minilm", "namespace": "default"},
        "spec": {
            "task": "text-classification",
            "model": {"source": "pvc://models/all-MiniLM-L6-v2"},
            "dataset": {
                "train": "pvc://datasets/sentiment/train.csv",
                "validation": "pvc://datasets/sentiment/validation.csv",
                "columns": {"text": "sentence", "label": "label"},
            },
            "hyperparameters": {"epochs": 2, "batchSize": 16},
            "output": {"uri": "pvc://models/sentiment-minilm"},
        },
    }


@dataclass(frozen=True)
class Case:
    id: str
    field: str
    edit: Callable[[dict[str, Any]], None]
    crd: str = REJECT
    pydantic: str = REJECT
    # Where a side reports the problem somewhere else than `field`, e.g. the object name: "" = the object.
    crd_field: str | None = None
    pydantic_field: str | None = None
    # A word the message must contain (used where the path alone cannot say what went wrong).
    says: str = ""

    def job(self) -> dict[str, Any]:
        job = base_job()
        self.edit(job)
        return job


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Edit: set spec.<path> (dotted; missing objects are created) to value."""

    def edit(job: dict[str, Any]) -> None:
        node = job["spec"]
        *parents, last = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = copy.deepcopy(value)

    return edit


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def edit(job: dict[str, Any]) -> None:
        node = job["spec"]
        *parents, last = path.split(".")
        for part in parents:
            node = node[part]
        del node[last]

    return edit


def _both(*edits: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def edit(job: dict[str, Any]) -> None:
        for one in edits:
            one(job)

    return edit


def _name(value: str) -> Callable[[dict[str, Any]], None]:
    def edit(job: dict[str, Any]) -> None:
        job["metadata"]["name"] = value

    return edit


def _whole_spec(value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(job: dict[str, Any]) -> None:
        job["spec"] = value

    return edit


# YAML anchors: each level references the previous one ten times. Eight levels are 10^8 strings once
# expanded, a few KB in memory: a "billion laughs" that both sides must refuse without expanding it.
_ALIAS_BOMB = yaml.safe_load("""
l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
l1: &l1 [*l0, *l0, *l0, *l0, *l0, *l0, *l0, *l0, *l0, *l0]
l2: &l2 [*l1, *l1, *l1, *l1, *l1, *l1, *l1, *l1, *l1, *l1]
l3: &l3 [*l2, *l2, *l2, *l2, *l2, *l2, *l2, *l2, *l2, *l2]
l4: &l4 [*l3, *l3, *l3, *l3, *l3, *l3, *l3, *l3, *l3, *l3]
l5: &l5 [*l4, *l4, *l4, *l4, *l4, *l4, *l4, *l4, *l4, *l4]
l6: &l6 [*l5, *l5, *l5, *l5, *l5, *l5, *l5, *l5, *l5, *l5]
l7: &l7 [*l6, *l6, *l6, *l6, *l6, *l6, *l6, *l6, *l6, *l6]
""")
# A small alias: a list of lists where a list of strings belongs.
_ALIAS_NESTED = yaml.safe_load("""
row: &row ["a", "b"]
labels: ["ok", *row]
""")["labels"]

_LORA = _set("method.type", "lora")
_SEARCH = "hyperparameterSearch"
_PARAMS = f"{_SEARCH}.parameters"


def _search(**fields: Any) -> Callable[[dict[str, Any]], None]:
    """Edit: a valid hyperparameter search (a log-scale learning rate) with `fields` replaced."""
    search = {
        "objective": {"metric": "eval_accuracy"},
        "parameters": {"learningRate": {"min": 1.0e-5, "max": 1.0e-3, "scale": "log"}},
    }
    return _set(_SEARCH, {**search, **fields})


def _searching(**parameters: Any) -> Callable[[dict[str, Any]], None]:
    """Edit: a search over exactly `parameters` (keys with dots written with "__", e.g. method__lora__r)."""
    return _search(parameters={key.replace("__", "."): value for key, value in parameters.items()})


# Pass-through core/v1 fields (issue 15): the pod template gets them as written, so both sides refuse what the
# Job API (k8s.io/kubernetes/pkg/apis/core/validation) would refuse, at the same field.
_TOLERATION = "scheduling.tolerations.0"
_REQUIRED_TERM = "scheduling.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms"
_PREFERRED_NODE = "scheduling.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution.0"
_POD_TERM = "scheduling.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution.0"
_ANTI_PREFERRED = "scheduling.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution.0"
_VALUE_FROM = "env.0.valueFrom"
_LONG_PREFIX = "a" * 254


def _tolerations(*tolerations: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    return _set("scheduling.tolerations", list(tolerations))


def _node_terms(*terms: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """Edit: required node affinity with these nodeSelectorTerms."""
    required = {"nodeSelectorTerms": list(terms)}
    return _set("scheduling.affinity", {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}})


def _node_expression(**expression: Any) -> Callable[[dict[str, Any]], None]:
    return _node_terms({"matchExpressions": [expression]})


def _pod_term(**fields: Any) -> Callable[[dict[str, Any]], None]:
    """Edit: one required podAffinity term (topologyKey kubernetes.io/hostname) with `fields` replaced (None drops)."""
    term = {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "trainer"}}, **fields}
    term = {key: value for key, value in term.items() if value is not None}
    return _set("scheduling.affinity", {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}})


def _value_from(value_from: Any, **var: Any) -> Callable[[dict[str, Any]], None]:
    return _set("env", [{"name": "FROM_SOURCE", "valueFrom": value_from, **var}])


CASES: list[Case] = [
    # task
    Case("unknown-task", "task", _set("task", "text-generation")),
    Case("task-missing", "task", _drop("task")),
    Case("task-not-a-string", "task", _set("task", 5)),
    # model
    Case("model-missing", "model", _drop("model")),
    Case("model-source-missing", "model.source", _set("model", {"revision": "main"})),
    Case("model-source-http", "model.source", _set("model.source", "http://evil.example/model.bin")),
    Case("model-source-shell-injection", "model.source", _set("model.source", "pvc://models/x; rm -rf /")),
    Case("model-source-command-substitution", "model.source", _set("model.source", "$(curl x)")),
    Case("model-source-trailing-newline", "model.source", _set("model.source", "hf://org/name\n")),
    Case("model-source-too-long", "model.source", _set("model.source", "pvc://models/" + "a" * 2000)),
    Case("model-revision-injection", "model.revision", _set("model.revision", "main; rm -rf /")),
    Case("model-revision-too-long", "model.revision", _set("model.revision", "r" * 129)),
    # dataset
    Case("dataset-missing", "dataset", _drop("dataset")),
    Case("dataset-train-ftp", "dataset.train", _set("dataset.train", "ftp://host/train.csv")),
    Case("dataset-retention-javascript", "dataset.retention", _set("dataset.retention", "javascript:alert(1)")),
    Case("dataset-validation-and-split", "dataset.validationSplit", _set("dataset.validationSplit", 0.1)),
    Case(
        "dataset-split-one",
        "dataset.validationSplit",
        _both(_drop("dataset.validation"), _set("dataset.validationSplit", 1.0)),
    ),
    Case(
        "dataset-split-zero",
        "dataset.validationSplit",
        _both(_drop("dataset.validation"), _set("dataset.validationSplit", 0)),
    ),
    Case("dataset-format-unknown", "dataset.format", _set("dataset.format", "xlsx")),
    Case("test-set-name-dashed", "dataset.test", _set("dataset.test", {"out-of-domain": "pvc://data/ood.csv"})),
    Case("test-set-name-upper", "dataset.test", _set("dataset.test", {"InDomain": "pvc://data/test.csv"})),
    Case("test-set-uri-http", "dataset.test.ood", _set("dataset.test", {"ood": "http://host/ood.csv"})),
    Case(
        "test-sets-too-many",
        "dataset.test",
        _set("dataset.test", {f"set{i}": f"pvc://data/{i}.csv" for i in range(9)}),
    ),
    Case("imagefolder-for-text", "dataset.format", _set("dataset.format", "imagefolder")),
    Case(
        "audiofolder-for-causal-lm",
        "dataset.format",
        _both(_set("task", "causal-lm"), _set("dataset.format", "audiofolder")),
    ),
    Case("column-role-unknown", "dataset.columns", _set("dataset.columns", {"text": "s", "question": "q"})),
    Case("column-name-empty", "dataset.columns.text", _set("dataset.columns", {"text": ""})),
    Case("column-name-not-a-string", "dataset.columns.label", _set("dataset.columns", {"label": 3})),
    Case("labels-too-many", "dataset.labels", _set("dataset.labels", [f"l{i}" for i in range(10001)])),
    Case("labels-nested-by-yaml-alias", "dataset.labels.1", _set("dataset.labels", _ALIAS_NESTED)),
    Case("max-train-samples-zero", "dataset.maxTrainSamples", _set("dataset.maxTrainSamples", 0)),
    Case("max-train-samples-string", "dataset.maxTrainSamples", _set("dataset.maxTrainSamples", "100")),
    Case("max-train-samples-huge", "dataset.maxTrainSamples", _set("dataset.maxTrainSamples", 10**12)),
    # method
    Case("method-type-unknown", "method.type", _set("method.type", "qlora")),
    Case("lora-settings-with-full", "method.lora", _set("method.lora", {"r": 8})),
    Case("freeze-settings-with-lora", "method.freeze", _both(_LORA, _set("method.freeze", {}))),
    Case("lora-rank-zero", "method.lora.r", _both(_LORA, _set("method.lora.r", 0))),
    Case("lora-rank-fractional", "method.lora.r", _both(_LORA, _set("method.lora.r", 1.5))),
    Case("lora-dropout-one", "method.lora.dropout", _both(_LORA, _set("method.lora.dropout", 1.0))),
    Case(
        "lora-too-many-targets",
        "method.lora.targetModules",
        _both(_LORA, _set("method.lora.targetModules", [f"m{i}" for i in range(65)])),
    ),
    Case(
        "lora-target-injection",
        "method.lora.targetModules.0",
        _both(_LORA, _set("method.lora.targetModules", ["q_proj; rm -rf /"])),
    ),
    Case(
        "freeze-layers-negative",
        "method.freeze.trainableLayers",
        _both(_set("method.type", "freeze"), _set("method.freeze.trainableLayers", -1)),
    ),
    # hyperparameters
    Case("learning-rate-zero", "hyperparameters.learningRate", _set("hyperparameters.learningRate", 0)),
    Case("learning-rate-string", "hyperparameters.learningRate", _set("hyperparameters.learningRate", "fast")),
    Case("learning-rate-huge", "hyperparameters.learningRate", _set("hyperparameters.learningRate", 1e10)),
    Case("epochs-negative", "hyperparameters.epochs", _set("hyperparameters.epochs", -1)),
    Case("batch-size-huge", "hyperparameters.batchSize", _set("hyperparameters.batchSize", 10**12)),
    Case("batch-size-boolean", "hyperparameters.batchSize", _set("hyperparameters.batchSize", True)),
    Case("batch-size-numeric-string", "hyperparameters.batchSize", _set("hyperparameters.batchSize", "16")),
    Case("max-seq-length-tiny", "hyperparameters.maxSeqLength", _set("hyperparameters.maxSeqLength", 4)),
    Case("warmup-ratio-above-one", "hyperparameters.warmupRatio", _set("hyperparameters.warmupRatio", 1.5)),
    Case("precision-unknown", "hyperparameters.precision", _set("hyperparameters.precision", "fp8")),
    Case("seed-negative", "hyperparameters.seed", _set("hyperparameters.seed", -1)),
    Case("eval-steps-missing", "hyperparameters.evalSteps", _set("hyperparameters.evalStrategy", "steps")),
    Case(
        "eval-steps-zero",
        "hyperparameters.evalSteps",
        _both(_set("hyperparameters.evalStrategy", "steps"), _set("hyperparameters.evalSteps", 0)),
    ),
    # regularization
    Case(
        "early-stopping-without-eval-set",
        "regularization.earlyStopping",
        _both(_drop("dataset.validation"), _set("regularization.earlyStopping", {})),
    ),
    Case(
        "early-stopping-without-evaluation",
        "regularization.earlyStopping",
        _both(_set("hyperparameters.evalStrategy", "no"), _set("regularization.earlyStopping", {})),
    ),
    Case(
        "early-stopping-metric-injection",
        "regularization.earlyStopping.metric",
        _set("regularization.earlyStopping", {"metric": "eval_loss; DROP TABLE runs"}),
    ),
    Case("label-smoothing-one", "regularization.labelSmoothing", _set("regularization.labelSmoothing", 1)),
    Case(
        "token-dropout-negative",
        "regularization.augmentation.tokenDropout",
        _set("regularization.augmentation", {"tokenDropout": -0.1}),
    ),
    # resources
    Case("nodes-zero", "resources.nodes", _set("resources.nodes", 0)),
    Case("nodes-huge", "resources.nodes", _set("resources.nodes", 5000)),
    Case("gpus-negative", "resources.gpusPerNode", _set("resources.gpusPerNode", -1)),
    Case("cpu-words", "resources.cpu", _set("resources.cpu", "lots")),
    Case("cpu-negative-integer", "resources.cpu", _set("resources.cpu", -2)),
    Case("cpu-float", "resources.cpu", _set("resources.cpu", 0.5)),
    Case("memory-command-substitution", "resources.memory", _set("resources.memory", "$(curl x)")),
    Case(
        "gpu-resource-name-injection",
        "resources.gpuResourceName",
        _set("resources.gpuResourceName", "nvidia.com/gpu; rm -rf /"),
    ),
    Case("gpu-resource-name-without-domain", "resources.gpuResourceName", _set("resources.gpuResourceName", "gpu")),
    Case(
        "gpu-resource-name-requests-prefix",
        "resources.gpuResourceName",
        _set("resources.gpuResourceName", "requests.nvidia.com/gpu"),
        says="may not start with 'requests.'",
    ),
    # scheduling
    Case("queue-name-uppercase", "scheduling.queueName", _set("scheduling.queueName", "Team_A")),
    Case("queue-name-newline-injection", "scheduling.queueName", _set("scheduling.queueName", "team-a\nkind: Secret")),
    Case(
        "priority-class-injection",
        "scheduling.priorityClassName",
        _set("scheduling.priorityClassName", "high; rm -rf /"),
    ),
    Case("scheduler-name-too-long", "scheduling.schedulerName", _set("scheduling.schedulerName", "s" * 300)),
    Case(
        "node-selector-value-not-a-string", "scheduling.nodeSelector.gpu", _set("scheduling.nodeSelector", {"gpu": 1})
    ),
    Case(
        "node-selector-value-injection",
        "scheduling.nodeSelector.pool",
        _set("scheduling.nodeSelector", {"pool": "$(curl x)"}),
    ),
    Case("tolerations-not-a-list", "scheduling.tolerations", _set("scheduling.tolerations", {"key": "gpu"})),
    Case("toleration-not-an-object", "scheduling.tolerations.0", _set("scheduling.tolerations", ["gpu"])),
    Case("queue-name-too-long", "scheduling.queueName", _set("scheduling.queueName", "q" * 64)),
    Case("queue-name-dot-dash", "scheduling.queueName", _set("scheduling.queueName", "team.-a")),
    Case("priority-class-double-dot", "scheduling.priorityClassName", _set("scheduling.priorityClassName", "high..a")),
    Case("priority-class-too-long", "scheduling.priorityClassName", _set("scheduling.priorityClassName", "p" * 254)),
    Case("scheduler-name-uppercase", "scheduling.schedulerName", _set("scheduling.schedulerName", "Volcano")),
    # tolerations (ValidateTolerations)
    Case(
        "toleration-operator-unknown",
        f"{_TOLERATION}.operator",
        _tolerations({"key": "gpu", "operator": "Sometimes"}),
        says="Sometimes",
    ),
    Case(
        "toleration-effect-unknown",
        f"{_TOLERATION}.effect",
        _tolerations({"key": "gpu", "operator": "Exists", "effect": "NoScheduling"}),
        says="NoScheduling",
    ),
    Case(
        "toleration-without-key-not-exists",
        f"{_TOLERATION}.operator",
        _tolerations({"effect": "NoSchedule"}),
        says="operator must be Exists when key is empty",
    ),
    Case(
        "toleration-value-with-exists",
        f"{_TOLERATION}.value",
        _tolerations({"key": "gpu", "operator": "Exists", "value": "h100"}),
        says="value must be empty when operator is Exists",
    ),
    Case(
        "toleration-seconds-without-no-execute",
        f"{_TOLERATION}.tolerationSeconds",
        _tolerations({"key": "gpu", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 60}),
        says="tolerationSeconds applies only to effect: NoExecute",
    ),
    Case(
        "toleration-key-not-a-label-key",
        f"{_TOLERATION}.key",
        _tolerations({"key": "gpu type", "operator": "Exists"}),
    ),
    Case(
        "toleration-key-prefix-too-long",
        f"{_TOLERATION}.key",
        _tolerations({"key": f"{_LONG_PREFIX}/gpu", "operator": "Exists"}),
        says="the prefix before the slash must be a DNS subdomain of at most 253 characters",
    ),
    Case(
        "toleration-value-not-a-label-value",
        f"{_TOLERATION}.value",
        _tolerations({"key": "gpu", "operator": "Equal", "value": "H100 80GB"}),
    ),
    Case(
        "toleration-field-misspelt",
        f"{_TOLERATION}.efect",
        _tolerations({"key": "gpu", "operator": "Exists", "efect": "NoSchedule"}),
        crd=PRUNE,
    ),
    # nodeSelector (ValidateLabels: keys are qualified names, values label values)
    Case(
        "node-selector-key-not-a-label-key",
        "scheduling.nodeSelector",
        _set("scheduling.nodeSelector", {"bad key!": "x"}),
        says="label key",
    ),
    Case("node-selector-key-empty-prefix", "scheduling.nodeSelector", _set("scheduling.nodeSelector", {"/gpu": "x"})),
    Case(
        "node-selector-key-prefix-too-long",
        "scheduling.nodeSelector",
        _set("scheduling.nodeSelector", {f"{_LONG_PREFIX}/gpu": "x"}),
        says="253",
    ),
    Case(
        "node-selector-value-too-long",
        "scheduling.nodeSelector.pool",
        _set("scheduling.nodeSelector", {"pool": "v" * 64}),
    ),
    # affinity (validateAffinity)
    Case("affinity-not-an-object", "scheduling.affinity", _set("scheduling.affinity", "zone-a")),
    Case(
        "affinity-kind-misspelt",
        "scheduling.affinity.nodeAfinity",
        _set("scheduling.affinity", {"nodeAfinity": {}}),
        crd=PRUNE,
    ),
    Case("node-affinity-without-terms", _REQUIRED_TERM, _node_terms()),
    Case(
        "node-affinity-operator-unknown",
        f"{_REQUIRED_TERM}.0.matchExpressions.0.operator",
        _node_expression(key="gpu", operator="Equals", values=["h100"]),
    ),
    Case(
        "node-affinity-in-without-values",
        f"{_REQUIRED_TERM}.0.matchExpressions.0.values",
        _node_expression(key="gpu", operator="In"),
        says="values must not be empty when operator is In",
    ),
    Case(
        "node-affinity-exists-with-values",
        f"{_REQUIRED_TERM}.0.matchExpressions.0.values",
        _node_expression(key="gpu", operator="Exists", values=["h100"]),
        says="values must be empty when operator is Exists",
    ),
    Case(
        "node-affinity-gt-two-values",
        f"{_REQUIRED_TERM}.0.matchExpressions.0.values",
        _node_expression(key="example.com/cores", operator="Gt", values=["4", "8"]),
        says="takes exactly one value",
    ),
    Case(
        "node-affinity-key-not-a-label-key",
        f"{_REQUIRED_TERM}.0.matchExpressions.0.key",
        _node_expression(key="gpu/", operator="Exists"),
    ),
    Case(
        "node-affinity-required-value-not-a-label-value",
        f"{_REQUIRED_TERM}.0.matchExpressions.0.values.0",
        _node_expression(key="gpu", operator="In", values=["H100 80GB"]),
    ),
    Case(
        "node-affinity-match-fields-key",
        f"{_REQUIRED_TERM}.0.matchFields.0.key",
        _node_terms({"matchFields": [{"key": "metadata.namespace", "operator": "In", "values": ["n1"]}]}),
    ),
    Case(
        "node-affinity-match-fields-two-nodes",
        f"{_REQUIRED_TERM}.0.matchFields.0.values",
        _node_terms({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1", "n2"]}]}),
    ),
    Case(
        "node-affinity-preferred-weight-zero",
        f"{_PREFERRED_NODE}.weight",
        _set(
            "scheduling.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution",
            [{"weight": 0, "preference": {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}}],
        ),
    ),
    Case(
        "node-affinity-preferred-weight-missing",
        f"{_PREFERRED_NODE}.weight",
        _set(
            "scheduling.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution",
            [{"preference": {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}}],
        ),
    ),
    Case("pod-affinity-topology-key-missing", f"{_POD_TERM}.topologyKey", _pod_term(topologyKey=None)),
    Case("pod-affinity-topology-key-empty", f"{_POD_TERM}.topologyKey", _pod_term(topologyKey="")),
    Case(
        "pod-affinity-selector-operator-unknown",
        f"{_POD_TERM}.labelSelector.matchExpressions.0.operator",
        _pod_term(labelSelector={"matchExpressions": [{"key": "app", "operator": "Gt", "values": ["1"]}]}),
    ),
    Case(
        "pod-affinity-selector-not-in-without-values",
        f"{_POD_TERM}.labelSelector.matchExpressions.0.values",
        _pod_term(labelSelector={"matchExpressions": [{"key": "app", "operator": "NotIn"}]}),
        says="values must not be empty when operator is NotIn",
    ),
    Case(
        "pod-affinity-match-labels-key",
        f"{_POD_TERM}.labelSelector.matchLabels",
        _pod_term(labelSelector={"matchLabels": {"app name": "trainer"}}),
        says="label key",
    ),
    Case(
        "pod-affinity-namespace-not-a-dns-label",
        f"{_POD_TERM}.namespaces.0",
        _pod_term(namespaces=["Team_A"]),
    ),
    Case(
        "pod-affinity-match-label-keys-without-selector",
        f"{_POD_TERM}.matchLabelKeys",
        _pod_term(labelSelector=None, matchLabelKeys=["app"]),
        says="matchLabelKeys needs a labelSelector",
    ),
    Case(
        "pod-affinity-match-label-key-in-selector",
        f"{_POD_TERM}.matchLabelKeys",
        _pod_term(matchLabelKeys=["app"]),
        says="in both matchLabelKeys and labelSelector",
    ),
    Case(
        "pod-affinity-key-in-match-and-mismatch",
        f"{_POD_TERM}.matchLabelKeys",
        _pod_term(matchLabelKeys=["team"], mismatchLabelKeys=["team"]),
        says="in both matchLabelKeys and mismatchLabelKeys",
    ),
    Case(
        "pod-anti-affinity-preferred-without-term",
        f"{_ANTI_PREFERRED}.podAffinityTerm",
        _set(
            "scheduling.affinity",
            {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 50}]}},
        ),
    ),
    Case(
        "pod-anti-affinity-preferred-weight-above-100",
        f"{_ANTI_PREFERRED}.weight",
        _set(
            "scheduling.affinity",
            {
                "podAntiAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 101, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname"}}
                    ]
                }
            },
        ),
    ),
    # output
    Case("output-missing", "output", _drop("output")),
    Case("output-to-the-hub", "output.uri", _set("output.uri", "hf://me/model")),
    Case("output-uppercase-claim", "output.uri", _set("output.uri", "pvc://Models/x")),
    Case("checkpoints-to-keep-zero", "output.checkpointsToKeep", _set("output.checkpointsToKeep", 0)),
    # runPolicy
    Case("backoff-limit-huge", "runPolicy.backoffLimit", _set("runPolicy.backoffLimit", 101)),
    Case("suspend-yes-string", "runPolicy.suspend", _set("runPolicy.suspend", "yes")),
    Case(
        "grace-period-too-long",
        "runPolicy.terminationGracePeriodSeconds",
        _set("runPolicy.terminationGracePeriodSeconds", 7200),
    ),
    Case("deadline-beyond-int32", "runPolicy.activeDeadlineSeconds", _set("runPolicy.activeDeadlineSeconds", 2**31)),
    # secrets
    Case("hf-token-without-name", "secrets.hfToken.name", _set("secrets.hfToken", {"key": "token"})),
    Case("hf-token-path-traversal", "secrets.hfToken.name", _set("secrets.hfToken", {"name": "../etc/passwd"})),
    Case("hf-token-key-double-dot", "secrets.hfToken.key", _set("secrets.hfToken", {"name": "hub", "key": ".."})),
    # env
    Case("env-reserved-master-addr", "env.0.name", _set("env", [{"name": "MASTER_ADDR", "value": "evil"}])),
    Case(
        "env-reserved-second-item",
        "env.1.name",
        _set("env", [{"name": "HOME", "value": "/h"}, {"name": "WORLD_SIZE", "value": "1"}]),
    ),
    Case("env-name-with-space", "env.0.name", _set("env", [{"name": "A B", "value": "x"}])),
    Case("env-name-command-substitution", "env.0.name", _set("env", [{"name": "$(curl x)"}])),
    Case("env-name-missing", "env.0.name", _set("env", [{"value": "x"}])),
    Case("env-value-too-long", "env.0.value", _set("env", [{"name": "BIG", "value": "x" * 40000}])),
    Case("env-value-from-string", "env.0.valueFrom", _set("env", [{"name": "T", "valueFrom": "secret"}])),
    Case("env-name-dot", "env.0.name", _set("env", [{"name": ".", "value": "x"}])),
    Case("env-name-double-dot-prefix", "env.0.name", _set("env", [{"name": "..HIDDEN", "value": "x"}])),
    Case("env-name-leading-digit", "env.0.name", _set("env", [{"name": "1ST", "value": "x"}])),
    Case(
        "env-value-and-value-from",
        _VALUE_FROM,
        _value_from({"secretKeyRef": {"name": "wandb", "key": "api-key"}}, value="inline"),
        says="not both",
    ),
    Case("env-value-from-empty", _VALUE_FROM, _value_from({}), says="exactly one of fieldRef"),
    Case(
        "env-value-from-two-sources",
        _VALUE_FROM,
        _value_from({"secretKeyRef": {"name": "s", "key": "k"}, "configMapKeyRef": {"name": "c", "key": "k"}}),
        says="exactly one of fieldRef",
    ),
    Case(
        "env-value-from-source-misspelt",
        f"{_VALUE_FROM}.secretRef",
        _value_from({"secretKeyRef": {"name": "s", "key": "k"}, "secretRef": {"name": "s"}}),
        crd=PRUNE,
    ),
    Case(
        "env-secret-key-ref-name-invalid",
        f"{_VALUE_FROM}.secretKeyRef.name",
        _value_from({"secretKeyRef": {"name": "My_Secret", "key": "token"}}),
    ),
    Case(
        "env-secret-key-ref-key-double-dot",
        f"{_VALUE_FROM}.secretKeyRef.key",
        _value_from({"secretKeyRef": {"name": "hub", "key": ".."}}),
    ),
    Case(
        "env-config-map-key-ref-without-key",
        f"{_VALUE_FROM}.configMapKeyRef.key",
        _value_from({"configMapKeyRef": {"name": "settings"}}),
    ),
    Case(
        "env-field-ref-path-unsupported",
        f"{_VALUE_FROM}.fieldRef.fieldPath",
        _value_from({"fieldRef": {"fieldPath": "spec.containers"}}),
    ),
    Case(
        "env-field-ref-label-key-invalid",
        f"{_VALUE_FROM}.fieldRef.fieldPath",
        _value_from({"fieldRef": {"fieldPath": "metadata.labels['bad key']"}}),
    ),
    Case(
        "env-field-ref-api-version",
        f"{_VALUE_FROM}.fieldRef.apiVersion",
        _value_from({"fieldRef": {"apiVersion": "v2", "fieldPath": "metadata.name"}}),
    ),
    Case(
        "env-resource-field-ref-unknown-resource",
        f"{_VALUE_FROM}.resourceFieldRef.resource",
        _value_from({"resourceFieldRef": {"resource": "limits.nvidia.com/gpu"}}),
    ),
    Case(
        "env-resource-field-ref-cpu-divisor",
        f"{_VALUE_FROM}.resourceFieldRef.divisor",
        _value_from({"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1Mi"}}),
        says="only divisors 1m or 1",
    ),
    Case(
        "env-resource-field-ref-memory-divisor",
        f"{_VALUE_FROM}.resourceFieldRef.divisor",
        _value_from({"resourceFieldRef": {"resource": "requests.memory", "divisor": 3}}),
        says="only divisors 1, 1k",
    ),
    Case("env-too-many", "env", _set("env", [{"name": f"V{i}", "value": "1"} for i in range(129)])),
    # image
    Case("image-shell-injection", "image", _set("image", "trainer:1; rm -rf /")),
    Case("image-too-long", "image", _set("image", "a" * 2000)),
    Case("image-not-a-string", "image", _set("image", 42)),
    # the object as a whole
    Case("spec-not-an-object", "", _whole_spec("hello")),
    Case("alias-bomb-in-labels", "", _set("dataset.labels", _ALIAS_BOMB["l7"]), says="too large"),
    Case(
        "alias-bomb-in-affinity", "", _set("scheduling.affinity", {"nodeAffinity": _ALIAS_BOMB["l7"]}), says="too large"
    ),
    Case(
        "name-starts-with-digit",
        "metadata.name",
        _name("9lives"),
        crd_field="",
        pydantic_field="",
        says="metadata.name",
    ),
    Case("name-too-long", "metadata.name", _name("a" * 46), crd_field="", pydantic_field="", says="metadata.name"),
    Case(
        "name-shell-injection",
        "metadata.name",
        _name("job; rm -rf /"),
        crd_field="",
        pydantic_field="",
        says="metadata.name",
    ),
    # hyperparameterSearch
    Case("search-not-an-object", _SEARCH, _set(_SEARCH, "fast")),
    Case(
        "search-objective-missing",
        f"{_SEARCH}.objective",
        _set(_SEARCH, {"parameters": {"learningRate": {"min": 1.0e-5, "max": 1.0e-3}}}),
    ),
    Case(
        "search-metric-injection", f"{_SEARCH}.objective.metric", _search(objective={"metric": "eval_loss; rm -rf /"})
    ),
    Case("search-goal-unknown", f"{_SEARCH}.objective.goal", _search(objective={"metric": "eval_f1", "goal": "up"})),
    Case("search-algorithm-unknown", f"{_SEARCH}.algorithm", _search(algorithm="hyperband")),
    Case("search-max-trials-over-100", f"{_SEARCH}.maxTrials", _search(maxTrials=101, parallelTrials=1)),
    Case("search-parallel-over-max", f"{_SEARCH}.parallelTrials", _search(maxTrials=2, parallelTrials=3)),
    Case("search-max-failed-negative", f"{_SEARCH}.maxFailedTrials", _search(maxFailedTrials=-1)),
    Case("search-seed-beyond-int32", f"{_SEARCH}.seed", _search(seed=2**31)),
    Case("search-keep-outputs-string", f"{_SEARCH}.keepTrialOutputs", _search(keepTrialOutputs="yes")),
    Case(
        "search-early-stopping-unknown",
        f"{_SEARCH}.earlyStopping.algorithm",
        _search(earlyStopping={"algorithm": "hyperband"}),
    ),
    Case(
        "search-early-stopping-min-trials-zero",
        f"{_SEARCH}.earlyStopping.minTrials",
        _search(earlyStopping={"minTrials": 0}),
    ),
    Case("search-parameters-missing", _PARAMS, _set(_SEARCH, {"objective": {"metric": "eval_accuracy"}})),
    Case("search-parameters-empty", _PARAMS, _search(parameters={})),
    Case(
        "search-parameters-too-many",
        _PARAMS,
        _search(
            parameters={
                key: {"values": [1]}
                for key in (
                    "seed",
                    "batchSize",
                    "maxSeqLength",
                    "gradientAccumulationSteps",
                    "evalSteps",
                    "maxSteps",
                    "epochs",
                    "learningRate",
                    "warmupRatio",
                    "weightDecay",
                    "regularization.dropout",
                    "resources.nodes",
                    "regularization.labelSmoothing",
                    "resources.gpusPerNode",
                    "regularization.augmentation.tokenDropout",
                    "method.lora.dropout",
                    "method.lora.alpha",
                )
            }
        ),
    ),
    Case("search-path-misspelt", _PARAMS, _searching(learning_rate={"min": 1.0e-5, "max": 1.0e-3})),
    Case("search-path-into-dataset", _PARAMS, _searching(dataset__train={"values": ["pvc://d/a.csv"]})),
    Case("search-path-into-output", _PARAMS, _searching(output__uri={"values": ["pvc://m/a"]})),
    Case("search-path-to-a-list", _PARAMS, _searching(method__lora__targetModules={"values": ["q_proj"]})),
    Case("search-path-into-itself", _PARAMS, _searching(hyperparameterSearch__maxTrials={"values": [2]})),
    Case(
        "search-values-and-range",
        f"{_PARAMS}.learningRate",
        _searching(learningRate={"values": [1.0e-4], "min": 1.0e-5, "max": 1.0e-3}),
    ),
    Case("search-range-without-max", f"{_PARAMS}.learningRate", _searching(learningRate={"min": 1.0e-5})),
    Case("search-parameter-empty", f"{_PARAMS}.learningRate", _searching(learningRate={})),
    Case("search-min-above-max", f"{_PARAMS}.learningRate", _searching(learningRate={"min": 1.0e-3, "max": 1.0e-5})),
    Case("search-min-equals-max", f"{_PARAMS}.learningRate", _searching(learningRate={"min": 1.0e-3, "max": 1.0e-3})),
    Case(
        "search-log-scale-from-zero",
        f"{_PARAMS}.regularization.dropout",
        _searching(regularization__dropout={"min": 0.0, "max": 0.3, "scale": "log"}),
    ),
    Case(
        "search-step-with-log",
        f"{_PARAMS}.learningRate",
        _searching(learningRate={"min": 1.0e-5, "max": 1.0e-3, "scale": "log", "step": 1.0e-5}),
    ),
    Case("search-step-with-values", f"{_PARAMS}.batchSize", _searching(batchSize={"values": [8, 16], "step": 8})),
    Case("search-log-with-values", f"{_PARAMS}.batchSize", _searching(batchSize={"values": [8, 16], "scale": "log"})),
    Case("search-step-zero", f"{_PARAMS}.batchSize.step", _searching(batchSize={"min": 8, "max": 64, "step": 0})),
    Case(
        "search-scale-unknown",
        f"{_PARAMS}.batchSize.scale",
        _searching(batchSize={"min": 8, "max": 64, "scale": "exp"}),
    ),
    Case("search-values-empty", f"{_PARAMS}.batchSize.values", _searching(batchSize={"values": []})),
    Case("search-values-too-many", f"{_PARAMS}.batchSize.values", _searching(batchSize={"values": list(range(1, 66))})),
    Case(
        "search-range-on-an-enum", f"{_PARAMS}.precision", _searching(precision={"min": 0, "max": 1}), crd_field=_PARAMS
    ),
    Case(
        "search-grid-over-a-continuous-range",
        f"{_SEARCH}.algorithm",
        _search(algorithm="grid", parameters={"learningRate": {"min": 1.0e-5, "max": 1.0e-3}}),
    ),
    Case("search-without-an-evaluation-set", f"{_SEARCH}.objective", _both(_drop("dataset.validation"), _search())),
    Case(
        "search-with-evaluation-off",
        f"{_SEARCH}.objective",
        _both(_set("hyperparameters.evalStrategy", "no"), _search()),
    ),
    Case(
        "search-name-too-long-for-trials",
        "metadata.name",
        _both(_name("a" * 42), _search()),
        crd_field="",
        pydantic_field="",
        says="41",
    ),
    # Only spec.py knows each path's field (its type, bounds, and the job's cross-field rules):
    Case(
        "search-values-not-scalars",
        f"{_PARAMS}.batchSize.values",
        _searching(batchSize={"values": [8, {"size": 8}]}),
        crd=ACCEPT,
        says="numbers, strings or booleans",
    ),
    Case(
        "search-values-duplicate",
        f"{_PARAMS}.batchSize",
        _searching(batchSize={"values": [8, 16, 8.0]}),
        crd=ACCEPT,
        says="unique",
    ),
    Case(
        "search-two-names-for-one-field",
        _PARAMS,
        _searching(learningRate={"values": [1.0e-4]}, hyperparameters__learningRate={"values": [2.0e-4]}),
        crd=ACCEPT,
    ),
    Case(
        "search-int-range-fractional",
        f"{_PARAMS}.batchSize",
        _searching(batchSize={"min": 8, "max": 64.5}),
        crd=ACCEPT,
        says="whole number",
    ),
    Case(
        "search-value-out-of-the-field-bounds",
        f"{_PARAMS}.batchSize",
        _searching(batchSize={"values": [16, 0]}),
        crd=ACCEPT,
        says="invalid job",
    ),
    Case(
        "search-range-out-of-the-field-bounds",
        f"{_PARAMS}.learningRate",
        _searching(learningRate={"min": 1.0e-5, "max": 2.0}),
        crd=ACCEPT,
        says="invalid job",
    ),
    Case(
        "search-value-of-the-wrong-type",
        f"{_PARAMS}.batchSize",
        _searching(batchSize={"values": ["16"]}),
        crd=ACCEPT,
        says="invalid job",
    ),
    Case(
        "search-lora-rank-without-lora",
        f"{_PARAMS}.method.lora.r",
        _searching(method__lora__r={"values": [4, 8]}),
        crd=ACCEPT,
        says="lora settings",
    ),
    Case(
        "search-value-turns-evaluation-off",
        f"{_PARAMS}.evalStrategy",
        _searching(evalStrategy={"values": ["epoch", "no"]}),
        crd=ACCEPT,
        says="evaluation off",
    ),
    # Where the two sides differ, by design of the API server:
    Case("unknown-field-typo", "hyperparameters.learningrate", _set("hyperparameters.learningrate", 1e-4), crd=PRUNE),
    Case("null-image", "image", _set("image", None), crd=ACCEPT),
]
