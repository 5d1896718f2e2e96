"""build_promote_job: the Job that moves a search's best model into the output, locked down like trainer pods."""

from __future__ import annotations

import copy
import json

import kubernetes_validate
import pytest
from finetune_operator.builders import build_job, build_promote_job
from finetune_operator.config import OperatorConfig
from finetune_operator.spec import parse_spec
from pss_restricted import violations

SEARCH = {
    "objective": {"metric": "eval_accuracy"},
    "parameters": {"learningRate": {"min": 1.0e-5, "max": 1.0e-3, "scale": "log"}},
}
BASE = {
    "task": "text-classification",
    "model": {"source": "pvc://base-models/minilm"},
    "dataset": {"train": "pvc://data/train.csv", "validation": "pvc://data/val.csv"},
    "output": {"uri": "pvc://models/sentiment"},
    "hyperparameterSearch": SEARCH,
}
CONFIG = OperatorConfig()
TRIALS = "pvc://models/sentiment/trials"


def _spec(**fields):
    return parse_spec({**copy.deepcopy(BASE), **fields}, "sentiment")


def _promote(
    config=CONFIG, best=f"{TRIALS}/sentiment-t1", remove=(f"{TRIALS}/sentiment-t0", f"{TRIALS}/sentiment-t1"), **fields
):
    return build_promote_job(
        _spec(**fields), "sentiment", "team-a", config=config, best_uri=best, remove_uris=list(remove)
    )


def _container(job):
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return container


def _env(job):
    return {entry["name"]: entry.get("value") for entry in _container(job)["env"]}


def test_named_and_labelled_as_the_searchs_promote_child():
    job = _promote()
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    assert job["metadata"]["name"] == "sentiment-promote" and job["metadata"]["namespace"] == "team-a"
    labels = {
        "app.kubernetes.io/managed-by": "finetune-operator",
        "finetune.dev/job-name": "sentiment-promote",
        "finetune.dev/search": "sentiment",
    }
    assert job["metadata"]["labels"] == labels
    assert job["spec"]["template"]["metadata"]["labels"] == labels


def test_runs_the_promote_module_of_the_trainer_image_with_best_output_and_removals():
    container = _container(_promote())
    assert container["image"] == CONFIG.default_image
    argv = container["command"] + container["args"]
    assert argv == [
        "python",
        "-m",
        "finetune_trainer.promote",
        "--best",
        f"{TRIALS}/sentiment-t1",
        "--output",
        "pvc://models/sentiment",
        "--remove",
        f"{TRIALS}/sentiment-t0",
        "--remove",
        f"{TRIALS}/sentiment-t1",
    ]
    assert _container(_promote(image="registry.local/trainer:2"))["image"] == "registry.local/trainer:2"
    assert "--remove" not in _container(_promote(remove=()))["args"]


def test_mounts_the_training_pods_claims_with_only_the_output_writable():
    job = _promote()
    mounts = {m["mountPath"]: m for m in _container(job)["volumeMounts"]}
    assert mounts["/mnt/pvc/models"]["readOnly"] is False
    assert mounts["/mnt/pvc/data"]["readOnly"] is True and mounts["/mnt/pvc/base-models"]["readOnly"] is True
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    training = {
        v["name"]: v
        for v in build_job(_spec(), "sentiment-t0", "team-a", config=CONFIG, config_hash="x")["spec"]["template"][
            "spec"
        ]["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert {k: v for k, v in volumes.items() if "persistentVolumeClaim" in v} == training
    # The table the trainer image resolves pvc:// with matches the mounts.
    assert json.loads(_env(job)["FINETUNE_VOLUME_MOUNTS"]) == {
        "base-models": "/mnt/pvc/base-models",
        "data": "/mnt/pvc/data",
        "models": "/mnt/pvc/models",
    }


def test_s3_outputs_get_the_credentials_secret_and_user_env():
    job = _promote(
        output={"uri": "s3://bucket/sentiment"},
        secrets={"s3Credentials": {"name": "aws"}},
        env=[{"name": "AWS_ENDPOINT_URL", "value": "http://minio.storage.svc:9000"}],
        config=OperatorConfig(trainer_env={"HF_HUB_OFFLINE": "1"}),
        best="s3://bucket/sentiment/trials/sentiment-t1",
        remove=("s3://bucket/sentiment/trials/sentiment-t0",),
    )
    container = _container(job)
    assert container["envFrom"] == [{"secretRef": {"name": "aws"}}]
    env = _env(job)
    assert env["AWS_ENDPOINT_URL"] == "http://minio.storage.svc:9000" and env["HF_HUB_OFFLINE"] == "1"
    assert env["FINETUNE_TERMINATION_LOG"] == container["terminationMessagePath"] == "/dev/termination-log"
    assert env["HOME"] == "/tmp"
    assert "envFrom" not in _container(_promote())


def test_a_uri_on_a_claim_the_job_does_not_mount_is_refused():
    with pytest.raises(ValueError, match="claim 'elsewhere' is not one the job mounts"):
        build_promote_job(_spec(), "sentiment", "team-a", config=CONFIG, best_uri="pvc://elsewhere/t1", remove_uris=[])


def test_retries_a_few_times_one_pod_at_a_time_and_fails_at_once_on_invalid_input():
    job = _promote()
    spec = job["spec"]
    assert spec["backoffLimit"] == 3 and spec["podReplacementPolicy"] == "Failed"
    fail_job = [r for r in spec["podFailurePolicy"]["rules"] if r["action"] == "FailJob"]
    # The trainer's policy: InvalidData (3) and the final storage failures, which promote's s3:// moves can meet.
    assert fail_job[0]["onExitCodes"]["values"] == [3, 6, 7, 9, 10]
    assert fail_job[0]["onExitCodes"]["containerName"] == _container(job)["name"]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False


def test_needs_no_gpu_and_asks_for_little():
    job = _promote(resources={"gpusPerNode": 4, "cpu": "16", "memory": "64Gi"})
    resources = _container(job)["resources"]
    assert not any("gpu" in key for amounts in resources.values() for key in amounts)
    assert resources["requests"] == {"cpu": "100m", "memory": "256Mi"}
    assert _container(job)["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_pod_meets_the_restricted_profile_with_a_read_only_root():
    pod = _promote()["spec"]["template"]["spec"]
    assert violations(pod) == []
    container = _container(_promote())
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    writable = [m for m in container["volumeMounts"] if not m.get("readOnly")]
    assert {m["mountPath"] for m in writable} == {"/mnt/pvc/models", "/tmp"}
    assert all("emptyDir" in volumes[m["name"]] or "persistentVolumeClaim" in volumes[m["name"]] for m in writable)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {
            "output": {"uri": "s3://bucket/out"},
            "secrets": {"s3Credentials": {"name": "aws"}},
            "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        },
    ],
    ids=["pvc", "s3"],
)
def test_built_job_is_a_valid_kubernetes_object(fields):
    output = fields.get("output", BASE["output"])["uri"]
    job = build_promote_job(
        _spec(**fields),
        "sentiment",
        "team-a",
        config=CONFIG,
        best_uri=f"{output}/trials/sentiment-t0",
        remove_uris=[f"{output}/trials/sentiment-t1"],
    )
    try:
        kubernetes_validate.validate(job, "1.31", strict=True)
    except kubernetes_validate.ValidationError as error:
        pytest.fail(f"{error.message} at {'.'.join(map(str, error.absolute_path))}")


async def test_promote_job_runs_in_the_sandbox_and_moves_the_best_model(tmp_path):
    """The built Job, run by the sandbox's Job controller and process kubelet, promotes files on a claim."""
    import asyncio
    import time

    from finetune_sandbox.cluster import SANDBOX_TRAINER_IMAGE, Sandbox

    sandbox = Sandbox(tmp_path, run_operator=False)
    await sandbox.start()
    try:
        output = tmp_path / "pvcs" / "team-a" / "models" / "sentiment"
        for index in range(2):
            trial = output / "trials" / f"sentiment-t{index}"
            (trial / "checkpoints" / "checkpoint-4").mkdir(parents=True)
            (trial / "metrics.json").write_text(f"t{index}")
        job = _promote(config=OperatorConfig(default_image=SANDBOX_TRAINER_IMAGE))
        await sandbox.client.create(
            "v1", "namespaces", None, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}
        )
        await sandbox.client.create("batch/v1", "jobs", "team-a", job)
        deadline = time.monotonic() + 60
        while True:
            status = (await sandbox.client.get("batch/v1", "jobs", "team-a", "sentiment-promote")).get("status") or {}
            finished = {c["type"] for c in status.get("conditions") or [] if c["status"] == "True"} & {
                "Complete",
                "Failed",
            }
            if finished or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        (pod,) = (await sandbox.client.list("v1", "pods", "team-a"))["items"]
        terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        assert finished == {"Complete"}, terminated
        assert json.loads(terminated["message"])["reason"] == "Completed"
        assert (output / "metrics.json").read_text() == "t1"
        assert sorted(p.name for p in output.iterdir()) == ["metrics.json", "trials"]
        assert list((output / "trials").iterdir()) == []
    finally:
        await sandbox.stop()
