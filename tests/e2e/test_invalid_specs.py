"""Bad specs never get pods: kubectl apply is refused by the CRD, and where a (stale, looser) CRD lets a
spec through, the operator marks it Failed/InvalidSpec naming the field, and creates nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from finetune_sandbox.cluster import CRD_FILE, Sandbox, SandboxThread, wait_for
from sandbox_support import Cluster, finetunejob

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))
from invalid_catalog import CASES, REJECT  # noqa: E402

pytestmark = pytest.mark.e2e

# A handful of the catalogue, one per kind of mistake, through the real kubectl and API server path.
KUBECTL_CASES = [c for c in CASES if c.crd == REJECT][::12][:8]


@pytest.mark.parametrize("case", KUBECTL_CASES, ids=lambda c: c.id)
def test_kubectl_apply_refuses_an_invalid_spec_naming_the_field(cluster: Cluster, case) -> None:
    namespace = cluster.namespace()
    job = case.job()
    job["metadata"]["namespace"] = namespace
    result = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(job), check=False)
    assert result.returncode != 0
    field = case.crd_field if case.crd_field is not None else case.field
    leaf = field.replace("]", "").split(".")[-1].split("[")[0]
    assert leaf in result.stderr or "metadata.name" in result.stderr, result.stderr
    assert (
        cluster.custom.list_namespaced_custom_object("finetune.dev", "v1alpha1", namespace, "finetunejobs")["items"]
        == []
    )


def loose_crd() -> dict:
    """The CRD as an old release might have shipped it: spec unvalidated, so only the operator checks."""
    crd = yaml.safe_load(CRD_FILE.read_text())
    for version in crd["spec"]["versions"]:
        schema = version["schema"]["openAPIV3Schema"]
        schema.pop("x-kubernetes-validations", None)
        schema["properties"]["spec"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return crd


@pytest.fixture(scope="module")
def loose_cluster(tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    sandbox = Sandbox(tmp_path_factory.mktemp("loose-sandbox"), crd=loose_crd())
    runner = SandboxThread(sandbox)
    runner.start()
    try:
        yield Cluster(sandbox, runner)
    finally:
        runner.stop()


@pytest.mark.parametrize(
    ("edit", "field", "says"),
    [
        (lambda s: s.update(task="sentiment"), "spec.task", "must be one of"),
        (lambda s: s["method"].update(lora={"r": 8}), "spec.method.lora", "only allowed with type: lora"),
        (lambda s: s["dataset"].update(validation="pvc://datasets/val.csv"), "spec.dataset", "not both"),
        (
            lambda s: s["hyperparameters"].update(batchSize=0),
            "spec.hyperparameters.batchSize",
            "greater than or equal to 1",
        ),
    ],
    ids=["unknown-task", "lora-without-lora", "two-validation-sources", "zero-batch"],
)
def test_operator_marks_a_spec_the_crd_let_through_as_invalid(loose_cluster: Cluster, edit, field, says) -> None:
    namespace = loose_cluster.namespace()
    job = finetunejob("bad", namespace, method={"type": "full"})
    edit(job["spec"])
    loose_cluster.apply(job)

    status = loose_cluster.wait_phase(namespace, "bad", "Failed", timeout=60)
    assert status["reason"] == "InvalidSpec"
    assert status["message"].startswith(field), status["message"]
    assert says in status["message"]
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "InvalidSpec")
    wait_for(
        lambda: any(e.reason == "InvalidSpec" for e in loose_cluster.events(namespace, "bad")),
        30,
        message="an InvalidSpec warning event",
    )
    assert loose_cluster.batch.list_namespaced_job(namespace).items == []
    assert loose_cluster.core.list_namespaced_config_map(namespace).items == []
    assert loose_cluster.pods(namespace, "bad") == []


def test_a_name_too_long_for_child_hostnames_is_invalid(loose_cluster: Cluster) -> None:
    namespace = loose_cluster.namespace()
    name = "a-name-that-is-far-too-long-for-the-rank-pod-hostnames"
    loose_cluster.apply(finetunejob(name, namespace))
    status = loose_cluster.wait_phase(namespace, name, "Failed", timeout=60)
    assert status["reason"] == "InvalidSpec"
    assert "metadata.name" in status["message"]
    assert loose_cluster.batch.list_namespaced_job(namespace).items == []
