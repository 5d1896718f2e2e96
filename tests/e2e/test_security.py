"""Secrets stay references: after real runs with a known token, it appears nowhere the operator writes or
exposes; a failed run that prints it gets it redacted; a Secret of another namespace is never reached."""

from __future__ import annotations

import json
import urllib.request

import pytest
from finetune_operator import reasons as r
from finetune_sandbox.cluster import wait_for
from kubernetes.client import ApiClient
from sandbox_support import finetunejob, write_sentiment_csv

pytestmark = pytest.mark.e2e

SENTINEL = "hf_SENTINELsentinel0123456789"
SERIALIZE = ApiClient().sanitize_for_serialization


def create_token_secret(cluster, namespace: str, name: str = "hf-token") -> None:
    cluster.core.create_namespaced_secret(namespace, {"metadata": {"name": name}, "stringData": {"token": SENTINEL}})


def everything_the_operator_wrote_or_exposed(cluster) -> dict[str, str]:
    core, batch = cluster.core, cluster.batch
    ftjs = cluster.custom.list_cluster_custom_object("finetune.dev", "v1alpha1", "finetunejobs")
    with urllib.request.urlopen(cluster.sandbox.metrics_url, timeout=10) as response:
        metrics = response.read().decode()
    return {
        "configmaps": json.dumps(SERIALIZE(core.list_config_map_for_all_namespaces())),
        "finetunejobs (spec and status)": json.dumps(ftjs),
        "events": json.dumps(SERIALIZE(core.list_event_for_all_namespaces())),
        "jobs": json.dumps(SERIALIZE(batch.list_job_for_all_namespaces())),
        # Specs only: a pod's status holds what its trainer printed (here, on purpose, the token), reported by the kubelet.
        "pod specs": json.dumps([SERIALIZE(p.spec) for p in core.list_pod_for_all_namespaces().items]),
        "services": json.dumps(SERIALIZE(core.list_service_for_all_namespaces())),
        "operator log": cluster.sandbox.operator_log.read_text(errors="replace"),
        "operator /metrics": metrics,
    }


@pytest.mark.slow  # two real training runs (about 30 s)
def test_a_secret_value_appears_nowhere_the_operator_writes(cluster, team):
    create_token_secret(cluster, team)
    cluster.apply(finetunejob("secret-ok", team, secrets={"hfToken": {"name": "hf-token", "key": "token"}}))
    # A failing run whose error message and log carry the token: the dataset has a column named after it,
    # and the trainer's InvalidData message lists the columns present.
    bad = cluster.pvc_dir(team, "datasets") / "leaky" / "train.csv"
    write_sentiment_csv(bad, label_column=SENTINEL)
    cluster.apply(
        finetunejob(
            "secret-leaky",
            team,
            secrets={"hfToken": {"name": "hf-token", "key": "token"}},
            dataset={"train": "pvc://datasets/leaky/train.csv"},
        )
    )
    cluster.wait_phase(team, "secret-ok", "Succeeded", timeout=240)
    failed = cluster.wait_phase(team, "secret-leaky", "Failed", timeout=240)

    # The failure carries the failing rank's evidence, with the token redacted.
    assert failed["reason"] == r.INVALID_DATA
    assert failed["failure"]["pod"] and "missing column" in failed["failure"]["message"]
    assert "[REDACTED]" in failed["failure"]["message"]
    assert "missing column" in failed["failure"]["logTail"] and "[REDACTED]" in failed["failure"]["logTail"]
    # Passed by reference: the pod's env names the Secret, never its value.
    (pod,) = cluster.pods(team, "secret-ok")
    env = {e.name: e for e in pod.spec.containers[0].env}
    assert env["HF_TOKEN"].value is None
    assert (env["HF_TOKEN"].value_from.secret_key_ref.name, env["HF_TOKEN"].value_from.secret_key_ref.key) == (
        "hf-token",
        "token",
    )

    leaks = [where for where, text in everything_the_operator_wrote_or_exposed(cluster).items() if SENTINEL in text]
    assert leaks == []


def test_a_secret_in_another_namespace_is_never_reached(cluster, team):
    elsewhere = cluster.namespace()
    create_token_secret(cluster, elsewhere, "team-b-token")
    cluster.apply(finetunejob("borrow", team, secrets={"hfToken": {"name": "team-b-token", "key": "token"}}))

    def waiting_on_config():
        status = cluster.status(team, "borrow")
        return status if status.get("reason") == r.CONFIG_ERROR else None

    status = wait_for(waiting_on_config, 60, message="the ConfigError status")
    assert status["phase"] == r.STARTING
    assert "team-b-token" in status["message"] and "own namespace" in status["message"]
    (pod,) = cluster.pods(team, "borrow")
    waiting = pod.status.container_statuses[0].state.waiting
    assert waiting.reason == "CreateContainerConfigError"
    assert pod.status.phase == "Pending"
