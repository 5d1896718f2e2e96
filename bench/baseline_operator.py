"""The floor for time to running: the smallest Kopf operator that turns each FineTuneJob into a ConfigMap
holding its spec and a Job whose pod mounts that ConfigMap, created in that order (the best a minimal
operator does: the pod can never meet a missing ConfigMap).

It has the real operator's Kopf settings, so a latency ratio between the two measures our handler's
own work (reading the spec, four children in dependency order, status) and nothing else.
With BASELINE_JOB_FIRST=1 it creates the Job first and the ConfigMap right after: the wrong order, whose
cost (the kubelet's mount back-off) bench/operator_reconcile.py --baseline-job-first shows.
Run: KUBECONFIG=... python -m kopf run bench/baseline_operator.py --all-namespaces --standalone
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import kopf
from kubernetes import client, config

JOB_FIRST = os.environ.get("BASELINE_JOB_FIRST") == "1"


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
    memo.core, memo.batch = client.CoreV1Api(), client.BatchV1Api()


@kopf.on.create("finetune.dev", "v1alpha1", "finetunejobs")
def create_children(name: str, namespace: str, spec: kopf.Spec, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-config"},
        "data": {"spec.json": json.dumps(dict(spec))},
    }
    container = {
        "name": "trainer",
        "image": "finetune-operator/trainer:sandbox",
        "command": ["true"],
        "volumeMounts": [{"name": "config", "mountPath": "/etc/finetune", "readOnly": True}],
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [container],
                    "volumes": [{"name": "config", "configMap": {"name": f"{name}-config"}}],
                }
            },
        },
    }
    kopf.adopt(config_map, owner=body)
    kopf.adopt(job, owner=body)
    if JOB_FIRST:
        memo.batch.create_namespaced_job(namespace, job)
        memo.core.create_namespaced_config_map(namespace, config_map)
    else:
        memo.core.create_namespaced_config_map(namespace, config_map)
        memo.batch.create_namespaced_job(namespace, job)
