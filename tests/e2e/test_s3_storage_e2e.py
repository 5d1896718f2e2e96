"""Object storage end to end (issue 17): FineTuneJobs whose model, data and output live in a bucket, applied
with kubectl in the sandbox, run by the real operator process and real trainer (and promote) processes, against
a real S3 API on loopback (the moto server, tests/s3_server.py).

Credentials and the endpoint reach the pods as a user gives them: a Secret holding AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION and AWS_ENDPOINT_URL, named in spec.secrets.s3Credentials (envFrom).
Sandbox pods are processes of this machine, so the server's 127.0.0.1 endpoint is theirs too. Buckets are
arranged and read with boto3, never with the trainer's own storage code.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from finetune_sandbox.cluster import wait_for
from s3_server import Credentials, S3Server, s3_server
from sandbox_support import Cluster, finetunejob, write_sentiment_csv

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SECRET = "s3-credentials"
# Two trials of 4 steps each, evaluated at steps 2 and 4: the objective is the final eval_loss.
SEARCH_RATES = [1.0e-3, 3.0e-3]
# A job that must still be training when its pod is deleted, a checkpoint already in the bucket: as in
# test_reliability_restarts.py, ~10 s of tiny-BERT steps, so a loaded machine cannot finish it first.
LONG_RUN_STEPS = 1200
LONG_CHECKPOINT_STEPS = 50
# What the trainer logs when SIGTERM stopped it after saving (run.py), and when it resumed from the store
# (checkpoint_store.py).
STOPPED_AT = re.compile(r"stopped at step (\d+) after saving a checkpoint")
DOWNLOADED = re.compile(r"downloaded checkpoint-(\d+) from (\S+) .*\(newest on this disk: none\)")


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory):
    with s3_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture(scope="module")
def inputs(s3: S3Server, tiny_model_source: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The tiny BERT and a labelled CSV in buckets of their own, as a user would have uploaded them."""
    models, data = s3.make_bucket(unique("models")), s3.make_bucket(unique("data"))
    csv = tmp_path_factory.mktemp("s3-data") / "train.csv"
    write_sentiment_csv(csv)
    return {
        "model": s3.put_tree(tiny_model_source, models, "base/tiny-bert"),
        "train": s3.put_file(csv, data, "sentiment/train.csv"),
    }


def unique(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


def credentials_secret(cluster: Cluster, namespace: str, env: dict[str, str]) -> None:
    cluster.core.create_namespaced_secret(namespace, {"metadata": {"name": SECRET}, "stringData": env})


def s3_job(name: str, namespace: str, inputs: dict[str, str], output: str, **overrides: Any) -> dict[str, Any]:
    return finetunejob(
        name,
        namespace,
        model={"source": inputs["model"]},
        dataset={"train": inputs["train"], "validationSplit": 0.25, "columns": {"text": "sentence", "label": "label"}},
        output={"uri": output, "checkpointSteps": 3},
        secrets={"s3Credentials": {"name": SECRET}},
        **overrides,
    )


def test_a_job_with_model_data_and_output_on_s3_succeeds_and_its_output_is_in_the_bucket(
    cluster: Cluster, s3: S3Server, inputs: dict[str, str]
) -> None:
    namespace = cluster.namespace()
    credentials_secret(cluster, namespace, s3.env())
    bucket = s3.make_bucket(unique("out"))
    output = f"s3://{bucket}/runs/sentiment"
    cluster.apply(s3_job("s3-job", namespace, inputs, output))

    status = cluster.wait_phase(namespace, "s3-job", "Succeeded", "Failed", timeout=240)
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    keys = {key.removeprefix("runs/sentiment/") for key in s3.keys(bucket, "runs/sentiment/")}
    expected = {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "metrics.json",
        "README.md",
    }
    assert expected <= keys, sorted(keys)
    assert {"checkpoints/checkpoint-3/COMPLETE", "checkpoints/checkpoint-6/COMPLETE"} <= keys, sorted(keys)
    metrics = json.loads(s3.read(bucket, "runs/sentiment/metrics.json"))
    assert metrics["global_step"] == 6, metrics
    assert f"base_model: {inputs['model']}" in s3.read(bucket, "runs/sentiment/README.md").decode()
    # What the trainer reported to the operator is the run whose metrics the bucket holds.
    assert status["progress"]["step"] == metrics["global_step"], status["progress"]


def test_bad_credentials_fail_at_once_as_storage_access_denied_naming_uri_and_code_not_the_key(
    cluster: Cluster, tiny_model_source: Path, tmp_path: Path
) -> None:
    # A server of its own: authentication switched on here must not refuse the other tests' jobs.
    with s3_server(tmp_path) as s3:
        bucket = s3.make_bucket(unique("models"))
        model = s3.put_tree(tiny_model_source, bucket, "tiny-bert")
        s3.require_auth()
        wrong = Credentials("AKIAWRONGKEY00000000", "not-the-secret-of-any-key-at-all")
        namespace = cluster.namespace()
        credentials_secret(cluster, namespace, s3.env(wrong))
        cluster.apply(
            s3_job(
                "s3-denied",
                namespace,
                {"model": model, "train": f"s3://{bucket}/train.csv"},
                f"s3://{bucket}/out",
                runPolicy={"backoffLimit": 3, "startupDeadlineSeconds": 600},
            )
        )
        status = cluster.wait_phase(namespace, "s3-denied", "Succeeded", "Failed", timeout=180)

    assert (status["phase"], status["reason"]) == ("Failed", "StorageAccessDenied"), json.dumps(status, indent=1)
    message = status["message"]
    # The first request the trainer makes names its URI (which one depends on the order of its reads).
    assert f"s3://{bucket}/" in message and "InvalidAccessKeyId" in message, message
    assert status["failure"]["exitCode"] == 6, status["failure"]
    # Final: the podFailurePolicy failed the Job on exit code 6 at its first pod, with backoffLimit 3 unused
    # (status.retries counts failed trainer pods: that one).
    assert status["retries"] == 1, status
    assert len(cluster.pods(namespace, "s3-denied")) == 1
    job = cluster.batch.read_namespaced_job("s3-denied", namespace)
    failed = [c for c in job.status.conditions if c.type == "Failed" and c.status == "True"]
    assert [c.reason for c in failed] == ["PodFailurePolicy"] and "exit code 6" in failed[0].message, failed
    shown = json.dumps(status) + "".join(f"{e.message}" for e in cluster.events(namespace, "s3-denied"))
    assert wrong.access_key not in shown and wrong.secret_key not in shown


def test_a_search_with_an_s3_output_promotes_the_best_trial_into_the_bucket(
    cluster: Cluster, s3: S3Server, inputs: dict[str, str]
) -> None:
    namespace = cluster.namespace()
    credentials_secret(cluster, namespace, s3.env())
    bucket = s3.make_bucket(unique("search"))
    output = f"s3://{bucket}/sentiment"
    cluster.apply(
        s3_job(
            "s3-search",
            namespace,
            inputs,
            output,
            hyperparameters={"maxSteps": 4, "batchSize": 8, "evalStrategy": "steps", "evalSteps": 2},
            hyperparameterSearch={
                "algorithm": "grid",
                "objective": {"metric": "eval_loss", "goal": "minimize"},
                "maxTrials": 2,
                "parallelTrials": 2,
                "earlyStopping": {"algorithm": "none"},
                "parameters": {"learningRate": {"values": SEARCH_RATES}},
            },
        )
    )

    status = cluster.wait_phase(namespace, "s3-search", "Succeeded", "Failed", timeout=360)
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    trials = status["trials"]
    assert [t["state"] for t in trials] == ["Succeeded", "Succeeded"], trials
    best = min(trials, key=lambda t: (t["objectiveValue"], t["index"]))
    assert status["bestTrial"]["name"] == best["name"]

    # The promote Job ran (with the Secret: it read and wrote the bucket) and succeeded.
    promote = cluster.batch.read_namespaced_job("s3-search-promote", namespace)
    assert promote.status.succeeded == 1, promote.status
    (container,) = promote.spec.template.spec.containers
    assert [source.secret_ref.name for source in container.env_from] == [SECRET]

    # The best trial's model is the output; the trial folders are gone, as on a claim.
    keys = {key.removeprefix("sentiment/") for key in s3.keys(bucket, "sentiment/")}
    assert {"config.json", "model.safetensors", "tokenizer.json", "metrics.json", "README.md"} <= keys, sorted(keys)
    assert not any(key.startswith(("trials/", "checkpoints/")) for key in keys), sorted(keys)
    metrics = json.loads(s3.read(bucket, "sentiment/metrics.json"))
    assert metrics["eval_loss"] == pytest.approx(best["objectiveValue"], rel=1e-5)
    assert metrics["eval_loss"] == pytest.approx(status["metrics"]["eval_loss"], rel=1e-5)


def test_a_deleted_trainer_pod_resumes_from_the_checkpoint_in_the_bucket(
    cluster: Cluster, s3: S3Server, inputs: dict[str, str]
) -> None:
    """The new pod has a new, empty disk (its emptyDir): only the bucket can give it the checkpoint."""
    namespace = cluster.namespace()
    credentials_secret(cluster, namespace, s3.env())
    bucket = s3.make_bucket(unique("out"))
    output = f"s3://{bucket}/runs/long"
    manifest = s3_job("s3-long", namespace, inputs, output)
    manifest["spec"]["hyperparameters"].update(maxSteps=LONG_RUN_STEPS, batchSize=4)
    manifest["spec"]["output"]["checkpointSteps"] = LONG_CHECKPOINT_STEPS
    # On a cluster /tmp is the pod's own emptyDir. A sandbox pod is a process of this machine: Python's tempfile
    # would use this machine's /tmp, shared by the old and the new pod, where the old pod's staged checkpoints
    # would make the resume local. TMPDIR=/tmp is rewritten by the kubelet to the pod's emptyDir folder.
    manifest["spec"]["env"] = [{"name": "TMPDIR", "value": "/tmp"}]
    cluster.apply(manifest)

    def checkpoint_in_bucket() -> int | None:
        if cluster.status(namespace, "s3-long").get("phase") in ("Succeeded", "Failed"):
            raise AssertionError("s3-long finished before its pod could be deleted; raise LONG_RUN_STEPS")
        markers = [key for key in s3.keys(bucket, "runs/long/checkpoints/") if key.endswith("/COMPLETE")]
        return max((int(key.split("/")[-2].removeprefix("checkpoint-")) for key in markers), default=None)

    first_in_bucket = wait_for(checkpoint_in_bucket, 180, interval=0.2, message="a checkpoint in the bucket")
    (pod,) = [p.metadata.name for p in cluster.pods(namespace, "s3-long") if p.status.phase == "Running"]
    cluster.kubectl("delete", "pod", pod, "-n", namespace, "--wait=false")
    stopped = int(wait_for(lambda: STOPPED_AT.search(trainer_log(cluster, namespace, pod)), 60).group(1))

    status = cluster.wait_phase(namespace, "s3-long", "Succeeded", "Failed", timeout=300)
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    (new_pod,) = [p.metadata.name for p in cluster.pods(namespace, "s3-long")]
    assert new_pod != pod
    downloaded = DOWNLOADED.search(trainer_log(cluster, namespace, new_pod))
    assert downloaded and downloaded.group(2) == output, trainer_log(cluster, namespace, new_pod)

    metrics = json.loads(s3.read(bucket, "runs/long/metrics.json"))
    resumed = metrics["resumed_from_step"]
    assert resumed == int(downloaded.group(1)), (resumed, downloaded.group(0))
    # Never behind what was in the bucket before the delete, and at most one interval behind the step the
    # first pod reached (its SIGTERM save, uploaded within the grace period, makes it zero).
    assert resumed >= first_in_bucket, (resumed, first_in_bucket)
    assert 0 <= stopped - resumed <= LONG_CHECKPOINT_STEPS, (stopped, resumed)
    assert metrics["global_step"] == LONG_RUN_STEPS, metrics


def trainer_log(cluster: Cluster, namespace: str, pod: str) -> str:
    """The pod's trainer log as the sandbox's kubelet keeps it ("" before the container started)."""
    path = cluster.sandbox.data_dir / "pods" / namespace / pod / "trainer.log"
    return path.read_text(errors="replace") if path.exists() else ""
