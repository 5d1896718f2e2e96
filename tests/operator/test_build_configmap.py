import json

from finetune_operator.builders import build_config_map, config_hash
from finetune_operator.builders.trainer_config import render_trainer_config
from finetune_operator.spec import parse_spec

SPEC = {
    "task": "text-classification",
    "model": {"source": "hf://org/model"},
    "dataset": {"train": "s3://bucket/train.csv"},
    "output": {"uri": "s3://bucket/out"},
    "secrets": {
        "hfToken": {"name": "hub-token-secret", "key": "hub-token-key"},
        "s3Credentials": {"name": "aws-credentials-secret"},
    },
}


def test_config_map_holds_the_rendered_trainer_config_under_config_json():
    spec = parse_spec(SPEC)
    config_map = build_config_map(spec, "sentiment", "team-a")
    assert config_map["apiVersion"] == "v1" and config_map["kind"] == "ConfigMap"
    assert config_map["metadata"] == {
        "name": "sentiment-config",
        "namespace": "team-a",
        "labels": {"app.kubernetes.io/managed-by": "finetune-operator", "finetune.dev/job-name": "sentiment"},
    }
    assert list(config_map["data"]) == ["config.json"]
    assert json.loads(config_map["data"]["config.json"]) == render_trainer_config(spec, "sentiment", "team-a")


def test_config_map_never_names_secrets():
    text = json.dumps(build_config_map(parse_spec(SPEC), "sentiment", "team-a"))
    for secret_part in ("hub-token-secret", "hub-token-key", "aws-credentials-secret", "hfToken", "HF_TOKEN"):
        assert secret_part not in text


def test_config_hash_is_stable_and_short():
    config_map = build_config_map(parse_spec(SPEC), "sentiment", "team-a")
    again = build_config_map(parse_spec(SPEC), "sentiment", "team-a")
    digest = config_hash(config_map)
    assert digest == config_hash(again)
    assert len(digest) == 16 and int(digest, 16) >= 0


def test_config_hash_changes_when_the_config_changes():
    base = build_config_map(parse_spec(SPEC), "sentiment", "team-a")
    changed = build_config_map(parse_spec({**SPEC, "hyperparameters": {"learningRate": 1e-4}}), "sentiment", "team-a")
    assert config_hash(base) != config_hash(changed)


def test_config_hash_ignores_metadata_and_key_order():
    config_map = {"metadata": {"name": "a"}, "data": {"x": "1", "y": "2"}}
    reordered = {"metadata": {"name": "b", "labels": {"l": "v"}}, "data": {"y": "2", "x": "1"}}
    assert config_hash(config_map) == config_hash(reordered)


def test_named_test_sets_reach_the_trainer_config_by_name():
    spec = parse_spec({**SPEC, "dataset": {**SPEC["dataset"], "test": {"in_domain": "s3://bucket/test.csv"}}})
    assert render_trainer_config(spec, "sentiment", "team-a")["test_uris"] == {"in_domain": "s3://bucket/test.csv"}
    assert render_trainer_config(parse_spec(SPEC), "sentiment", "team-a")["test_uris"] == {}
