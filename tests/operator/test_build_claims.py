from finetune_operator.builders import pvc_claims
from finetune_operator.builders.claims import claim_of
from finetune_operator.builders.volumes import pvc_volume_name
from finetune_operator.spec import parse_spec


def _spec(model="hf://org/model", train="s3://bucket/train.csv", output="s3://bucket/out", **dataset):
    return parse_spec(
        {
            "task": "text-classification",
            "model": {"source": model},
            "dataset": {"train": train, **dataset},
            "output": {"uri": output},
        }
    )


def test_claim_of_takes_the_first_path_segment_of_pvc_uris_only():
    assert claim_of("pvc://models/bert/base") == "models"
    assert claim_of("pvc://models") == "models"
    assert claim_of("s3://models/bert") is None
    assert claim_of("hf://org/model") is None
    assert claim_of(None) is None


def test_no_pvc_uris_means_no_claims():
    assert pvc_claims(_spec()) == {}


def test_input_claims_are_read_only_and_the_output_claim_is_writable():
    spec = _spec(
        model="pvc://models/bert",
        train="pvc://data/train.csv",
        output="pvc://results/run-1",
        validation="pvc://eval/val.csv",
        retention="pvc://data/retention.csv",
    )
    assert pvc_claims(spec) == {"models": False, "data": False, "eval": False, "results": True}


def test_every_test_set_claim_is_mounted_read_only():
    spec = _spec(
        train="pvc://data/train.csv",
        output="pvc://results/run-1",
        test={"in_domain": "pvc://data/test.csv", "out_of_domain": "pvc://held-out/ood.csv"},
    )
    assert pvc_claims(spec) == {"data": False, "held-out": False, "results": True}


def test_a_claim_shared_by_an_input_and_the_output_is_writable_once():
    spec = _spec(model="pvc://shared/base", train="pvc://shared/train.csv", output="pvc://shared/out")
    assert pvc_claims(spec) == {"shared": True}


def test_long_claim_names_still_give_a_valid_unique_volume_name():
    long_a = "a" * 62 + "b"
    long_b = "a" * 62 + "c"
    assert pvc_volume_name("models") == "pvc-models"
    names = {pvc_volume_name(long_a), pvc_volume_name(long_b)}
    assert len(names) == 2
    assert all(len(name) <= 63 and name[-1].isalnum() for name in names)
