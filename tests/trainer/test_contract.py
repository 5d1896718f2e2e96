"""The operator renders the trainer's config; every rendering must parse on the trainer side."""

from __future__ import annotations

import json

import pytest
from finetune_operator.builders.trainer_config import render_trainer_config
from finetune_operator.spec import FineTuneJobSpec
from finetune_trainer.arguments import parse_config_file

BASE = {
    "task": "text-classification",
    "model": {"source": "hf://sentence-transformers/all-MiniLM-L6-v2"},
    "dataset": {
        "train": "pvc://data/train.csv",
        "validation": "pvc://data/validation.csv",
        "columns": {"text": "sentence"},
    },
    "output": {"uri": "pvc://models/out"},
}

VARIANTS = {
    "full": {},
    "lora": {"method": {"type": "lora", "lora": {"r": 4, "targetModules": ["query"], "mergeAdapter": True}}},
    "freeze": {"method": {"type": "freeze", "freeze": {"trainableLayers": 1}}},
    "early-stopping": {
        "regularization": {
            "dropout": 0.2,
            "labelSmoothing": 0.1,
            "earlyStopping": {"metric": "eval_accuracy", "patience": 2},
        }
    },
    "split-and-retention": {
        "dataset": {
            "train": "s3://bucket/train.parquet",
            "validationSplit": 0.1,
            "retention": "pvc://data/general.parquet",
            "test": {"in_domain": "pvc://data/test.parquet", "out_of_domain": "s3://bucket/ood.parquet"},
            "format": "parquet",
        },
        "hyperparameters": {"maxSteps": 100, "evalStrategy": "steps", "evalSteps": 10, "precision": "bf16"},
    },
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_rendered_config_parses_in_the_trainer(variant, tmp_path):
    spec = FineTuneJobSpec.model_validate({**BASE, **VARIANTS[variant]})
    path = tmp_path / "config.json"
    path.write_text(json.dumps(render_trainer_config(spec, "job", "ns")))
    model_args, data_args, run_args = parse_config_file(str(path))
    assert model_args.task == "text-classification" and run_args.job_name == "job" and run_args.job_namespace == "ns"
    assert model_args.method == (VARIANTS[variant].get("method") or {}).get("type", "full")
    if variant == "lora":
        assert model_args.lora_target_modules == ["query"] and model_args.merge_adapter is True
    if variant == "early-stopping":
        assert run_args.early_stopping_metric == "eval_accuracy" and model_args.dropout == 0.2
    if variant == "split-and-retention":
        assert data_args.validation_split == 0.1 and data_args.retention_uri == "pvc://data/general.parquet"
        assert data_args.test_uris == {
            "in_domain": "pvc://data/test.parquet",
            "out_of_domain": "s3://bucket/ood.parquet",
        }
