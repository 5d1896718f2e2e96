"""The trainer pod template: one pod per node, locked down to the "restricted" Pod Security Standard."""

from __future__ import annotations

from typing import Any

from ..config import OperatorConfig
from ..names import (
    ANNOTATION_CONFIG_HASH,
    CONFIG_FILE_KEY,
    CONFIG_MOUNT_DIR,
    RENDEZVOUS_PORT,
    TERMINATION_LOG,
    TRAINER_CONTAINER,
    TRAINER_METRICS_PORT_NAME,
    child_labels,
    service_name,
)
from ..spec import FineTuneJobSpec
from .env import build_env, build_env_from
from .security import restricted_container_security_context, restricted_pod_security_context
from .service import RENDEZVOUS_PORT_NAME
from .volumes import build_volume_mounts, build_volumes

TRAINER_COMMAND = ["python", "-m", "finetune_trainer"]


def build_resources(spec: FineTuneJobSpec, config: OperatorConfig) -> dict[str, Any]:
    # Limits equal requests: with GPUs too this gives Guaranteed QoS, so a training pod is the last
    # to be evicted under node memory pressure, and a memory leak fails this pod, not its neighbours.
    amounts = {
        "cpu": spec.resources.cpu or config.default_cpu,
        "memory": spec.resources.memory or config.default_memory,
    }
    if spec.resources.gpus_per_node > 0:
        amounts[spec.resources.gpu_resource_name] = str(spec.resources.gpus_per_node)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def build_ports(config: OperatorConfig) -> list[dict[str, Any]]:
    ports = [{"name": RENDEZVOUS_PORT_NAME, "containerPort": RENDEZVOUS_PORT, "protocol": "TCP"}]
    if config.trainer_metrics_port > 0:
        # The PodMonitor scrapes the trainer's own /metrics by this port's name.
        ports.append(
            {"name": TRAINER_METRICS_PORT_NAME, "containerPort": config.trainer_metrics_port, "protocol": "TCP"}
        )
    return ports


def trainer_image_container(
    spec: FineTuneJobSpec,
    config: OperatorConfig,
    *,
    command: list[str],
    args: list[str],
    env: list[dict[str, Any]],
    resources: dict[str, Any],
    volume_mounts: list[dict[str, Any]],
) -> dict[str, Any]:
    """A container of the trainer image, named `trainer` (the Job's podFailurePolicy names it), locked
    down to the restricted profile, with the storage credentials and the termination-message contract."""
    container: dict[str, Any] = {
        "name": TRAINER_CONTAINER,
        "image": spec.image or config.default_image,
        "imagePullPolicy": config.image_pull_policy,
        "command": list(command),
        "args": list(args),
        "env": env,
        "resources": resources,
        "volumeMounts": volume_mounts,
        "securityContext": restricted_container_security_context(),
        "terminationMessagePath": TERMINATION_LOG,
        # The trainer writes a JSON reason there; a crash before it could leaves the log tail instead.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    env_from = build_env_from(spec)
    if env_from:
        container["envFrom"] = env_from
    return container


def build_trainer_container(spec: FineTuneJobSpec, name: str, namespace: str, config: OperatorConfig) -> dict[str, Any]:
    container = trainer_image_container(
        spec,
        config,
        command=TRAINER_COMMAND,
        args=[f"{CONFIG_MOUNT_DIR}/{CONFIG_FILE_KEY}"],
        env=build_env(spec, name, namespace, config),
        resources=build_resources(spec, config),
        volume_mounts=build_volume_mounts(spec),
    )
    container["ports"] = build_ports(config)
    return container


def build_scheduling(spec: FineTuneJobSpec) -> dict[str, Any]:
    """Pass-through of spec.scheduling; empty fields are left out so cluster defaults apply."""
    scheduling = spec.scheduling
    fields: dict[str, Any] = {
        "priorityClassName": scheduling.priority_class_name,
        "nodeSelector": dict(scheduling.node_selector),
        "tolerations": list(scheduling.tolerations),
        "affinity": dict(scheduling.affinity),
        "schedulerName": scheduling.scheduler_name,
    }
    return {key: value for key, value in fields.items() if value}


def build_pod_template(
    spec: FineTuneJobSpec, name: str, namespace: str, *, config: OperatorConfig, config_hash: str
) -> dict[str, Any]:
    pod_spec: dict[str, Any] = {
        # With the headless Service of the same name, pod JOB-i resolves as JOB-i.NAME.NS.svc.
        "subdomain": service_name(name),
        # podFailurePolicy requires Never; the Job controller, not the kubelet, retries.
        "restartPolicy": "Never",
        # The trainer never talks to the Kubernetes API.
        "automountServiceAccountToken": False,
        # Service links would inject e.g. MASTER_PORT=tcp://... for a Service named "master",
        # which torch.distributed would misread.
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": spec.run_policy.termination_grace_period_seconds,
        **build_scheduling(spec),
        "securityContext": restricted_pod_security_context(),
        "containers": [build_trainer_container(spec, name, namespace, config)],
        "volumes": build_volumes(spec, name, config),
    }
    return {
        "metadata": {
            "labels": child_labels(name),
            # A changed config gives a different template, so pods never run a stale config unnoticed.
            "annotations": {ANNOTATION_CONFIG_HASH: config_hash},
        },
        "spec": pod_spec,
    }
