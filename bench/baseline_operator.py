"""The floor for reconcile latency: the smallest Kopf operator that turns each FineTuneJob into one Job.

It has the real operator's Kopf settings, so a latency ratio between the two measures our handler's
own work (reading the spec, four children, status) and nothing else.
Run: KUBECONFIG=... python -m kopf run bench/baseline_operator.py --all-namespaces --standalone
"""

from __future__ import annotations

import logging
from typing import Any

import kopf
from kubernetes import client, config


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="finetune.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="finetune.dev", key="last-handled-configuration"
    )
    settings.watching.server_timeout, settings.watching.client_timeout = 60, 75
    settings.posting.level = logging.ERROR
    settings.execution.max_workers = 16
    config.load_kube_config()
    memo.batch = client.BatchV1Api()


@kopf.on.create("finetune.dev", "v1alpha1", "finetunejobs")
def create_job(name: str, namespace: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    container = {"name": "trainer", "image": "finetune-operator/trainer:sandbox", "command": ["true"]}
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [container]}}},
    }
    kopf.adopt(job, owner=body)
    memo.batch.create_namespaced_job(namespace, job)
