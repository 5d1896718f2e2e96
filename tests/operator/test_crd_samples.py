"""Every sample FineTuneJob is valid for the CRD and spec.py, and the CRD's defaults mean what pydantic's mean."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from finetune_operator import names
from finetune_operator.spec import parse_spec
from finetune_operator.spec.schema import TASKS
from finetune_sandbox.structural_schema import apply_structural_schema

ROOT = Path(__file__).resolve().parents[2]
SCHEMA: dict[str, Any] = yaml.safe_load((ROOT / "manifests/crd/finetunejobs.yaml").read_text())["spec"]["versions"][0][
    "schema"
]["openAPIV3Schema"]
SAMPLES = sorted((ROOT / "manifests/samples").glob("*.yaml"))


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_sample_passes_the_crd_schema_strictly_and_spec_py(path: Path):
    job = _load(path)
    assert (job["apiVersion"], job["kind"]) == (names.API_VERSION, names.KIND)
    assert job["metadata"]["name"] == path.stem, "a sample file is named after its job"
    stored = apply_structural_schema(job, SCHEMA, strict=True)
    parse_spec(stored["spec"], stored["metadata"]["name"])


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_crd_defaults_parse_to_the_same_spec_as_pydantic_defaults(path: Path):
    job = _load(path)
    stored = apply_structural_schema(job, SCHEMA)
    assert stored["spec"] != job["spec"], "the CRD applies defaults"
    assert parse_spec(stored["spec"]).model_dump() == parse_spec(job["spec"]).model_dump()


def test_minimal_job_defaults_agree_including_nested_defaults():
    # Samples set many fields; the smallest job leaves every default to the two sides.
    spec = {
        "task": "causal-lm",
        "model": {"source": "hf://org/m"},
        "dataset": {"train": "pvc://d/t.jsonl"},
        "output": {"uri": "pvc://m/out"},
        "method": {"type": "lora", "lora": {}},
        "regularization": {"earlyStopping": {}},
        "secrets": {"hfToken": {"name": "hf"}},
    }
    spec["dataset"]["validationSplit"] = 0.1
    stored = apply_structural_schema(
        {"apiVersion": names.API_VERSION, "kind": names.KIND, "metadata": {"name": "minimal"}, "spec": spec}, SCHEMA
    )
    assert stored["spec"]["method"]["lora"] == {
        "r": 8,
        "alpha": 16.0,
        "dropout": 0.05,
        "targetModules": [],
        "mergeAdapter": False,
    }
    assert stored["spec"]["regularization"]["augmentation"] == {"enabled": False, "tokenDropout": 0.0}
    assert stored["spec"]["secrets"]["hfToken"] == {"name": "hf", "key": "token"}
    assert parse_spec(stored["spec"]).model_dump() == parse_spec(spec).model_dump()


def test_there_is_a_sample_for_every_task_and_a_multi_node_queued_job():
    specs = [_load(path)["spec"] for path in SAMPLES]
    assert {s["task"] for s in specs} == set(TASKS)
    multi = [s for s in specs if s.get("resources", {}).get("nodes", 1) > 1]
    assert any(
        s["method"]["type"] == "lora" and s["scheduling"]["queueName"] and s["resources"]["gpusPerNode"] > 0
        for s in multi
    )


def test_sandbox_demo_sample_is_cpu_friendly_minilm():
    spec = parse_spec(_load(ROOT / "manifests/samples/sentiment-minilm.yaml")["spec"])
    assert spec.task == "text-classification"
    assert spec.model.source == "pvc://models/all-MiniLM-L6-v2"
    assert (spec.dataset.train, spec.dataset.validation) == (
        "pvc://datasets/sentiment/train.csv",
        "pvc://datasets/sentiment/validation.csv",
    )
    assert spec.dataset.columns == {"text": "sentence", "label": "label"}
    assert spec.output.uri == "pvc://models/sentiment-minilm"
    assert spec.resources.gpus_per_node == 0 and spec.total_gpus == 0
    hp = spec.hyperparameters
    assert (hp.epochs, hp.batch_size, hp.max_seq_length, hp.learning_rate, hp.precision) == (3, 16, 64, 1.0e-4, "auto")
    assert (hp.warmup_ratio, hp.weight_decay) == (0.1, 0.01)
    # Both held-out test sets of the shipped data, under the names the demo's report and its e2e test read.
    assert spec.dataset.test == {
        "in_domain": "pvc://datasets/sentiment/test.csv",
        "out_of_domain": "pvc://datasets/sentiment/test_out_of_domain.csv",
    }
