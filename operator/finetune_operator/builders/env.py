"""The trainer container's environment: the distributed contract, operator extras, the user's env, secrets.

Order matters only for readability and `$(VAR)` expansion; names are unique, and a later source
replaces an earlier entry of the same name (operator-wide `trainer_env` may override contract
values, e.g. the sandbox pointing MASTER_ADDR at localhost; the spec's own env cannot touch reserved
names, which spec/ enforces).
"""

from __future__ import annotations

import json
from typing import Any

from ..config import OperatorConfig
from ..names import (
    CACHE_MOUNT_DIR,
    CONFIG_FILE_KEY,
    CONFIG_MOUNT_DIR,
    PROGRESS_TOKEN_DIR,
    PROGRESS_TOKEN_KEY,
    RENDEZVOUS_PORT,
    TERMINATION_LOG,
    TRAINER_CONTAINER,
    service_name,
    training_job_name,
)
from ..spec import FineTuneJobSpec
from .secret import PROGRESS_CA_KEY
from .volumes import claim_mount_table

COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
HF_TOKEN_ENV = "HF_TOKEN"


def procs_per_node(spec: FineTuneJobSpec) -> int:
    # A CPU-only node still runs one training process.
    return max(1, spec.resources.gpus_per_node)


def master_address(name: str, namespace: str) -> str:
    """Rank 0's pod through the headless Service: Indexed Job pods are named JOB-INDEX."""
    return f"{training_job_name(name)}-0.{service_name(name)}.{namespace}.svc"


def storage_env_values(spec: FineTuneJobSpec) -> dict[str, str]:
    """How code in the trainer image finds the mounted claims and where it leaves its termination message."""
    return {
        "FINETUNE_VOLUME_MOUNTS": json.dumps(claim_mount_table(spec), sort_keys=True),
        "FINETUNE_TERMINATION_LOG": TERMINATION_LOG,
    }


def contract_env(spec: FineTuneJobSpec, name: str, namespace: str) -> list[dict[str, Any]]:
    nodes = spec.resources.nodes
    nproc = procs_per_node(spec)
    master = master_address(name, namespace)
    plain = {
        "FINETUNE_CONFIG": f"{CONFIG_MOUNT_DIR}/{CONFIG_FILE_KEY}",
        "FINETUNE_JOB_NAME": name,
        "FINETUNE_JOB_NAMESPACE": namespace,
        **storage_env_values(spec),
        # How long a stop may take (the pod's terminationGracePeriodSeconds): the trainer's wait for its
        # checkpoint uploads on SIGTERM must end before the kubelet's SIGKILL.
        "FINETUNE_TERMINATION_GRACE_SECONDS": str(spec.run_policy.termination_grace_period_seconds),
        "HF_HOME": f"{CACHE_MOUNT_DIR}/huggingface",
        # The root filesystem is read-only: libraries that cache under ~ or XDG dirs need a writable home.
        "HOME": "/tmp",
        "XDG_CACHE_HOME": CACHE_MOUNT_DIR,
        "MASTER_ADDR": master,
        "PET_MASTER_ADDR": master,
        "MASTER_PORT": str(RENDEZVOUS_PORT),
        "PET_MASTER_PORT": str(RENDEZVOUS_PORT),
        "WORLD_SIZE": str(nodes * nproc),
        "NNODES": str(nodes),
        "PET_NNODES": str(nodes),
        "NPROC_PER_NODE": str(nproc),
        "PET_NPROC_PER_NODE": str(nproc),
    }
    env = [{"name": key, "value": value} for key, value in plain.items()]
    rank_path = f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"
    env += [
        {"name": key, "valueFrom": {"fieldRef": {"fieldPath": rank_path}}}
        for key in ("RANK", "NODE_RANK", "PET_NODE_RANK")
    ]
    if nproc == 1:
        # torch sizes its thread pool by the node's cores, not the container's CPU limit: on a shared
        # node (or two trials on one machine) that oversubscribes the CPUs several times over. The
        # kubelet rounds the limit up to whole CPUs. Several processes per node keep torchrun's
        # default (1 thread each).
        env.append(
            {
                "name": "OMP_NUM_THREADS",
                "valueFrom": {
                    "resourceFieldRef": {"containerName": TRAINER_CONTAINER, "resource": "limits.cpu", "divisor": "1"}
                },
            }
        )
    return env


def user_env(spec: FineTuneJobSpec) -> list[dict[str, Any]]:
    env = []
    for var in spec.env:
        entry: dict[str, Any] = {"name": var.name}
        if var.value_from is not None:
            entry["valueFrom"] = var.value_from
        else:
            entry["value"] = var.value or ""
        env.append(entry)
    return env


def secret_env(spec: FineTuneJobSpec) -> list[dict[str, Any]]:
    token = spec.secrets.hf_token
    if token is None:
        return []
    return [{"name": HF_TOKEN_ENV, "valueFrom": {"secretKeyRef": {"name": token.name, "key": token.key}}}]


def progress_env(name: str, namespace: str, config: OperatorConfig) -> list[dict[str, Any]]:
    """Where and how often rank 0 reports progress (docs/progress.md); nothing when reporting is off."""
    plain = {"FINETUNE_METRICS_PORT": str(config.trainer_metrics_port)}
    if config.progress_base_url:
        plain.update(
            FINETUNE_PROGRESS_URL=f"{config.progress_base_url}/progress/v1/namespaces/{namespace}/finetunejobs/{name}",
            FINETUNE_PROGRESS_TOKEN_FILE=f"{PROGRESS_TOKEN_DIR}/{PROGRESS_TOKEN_KEY}",
            FINETUNE_PROGRESS_INTERVAL_SECONDS=f"{config.progress_interval_seconds:g}",
        )
        if config.progress_base_url.startswith("https://"):
            # The CA bundle beside the token (same Secret, same mount): the trainer verifies the operator with it.
            plain["FINETUNE_PROGRESS_CA_FILE"] = f"{PROGRESS_TOKEN_DIR}/{PROGRESS_CA_KEY}"
    return [{"name": key, "value": value} for key, value in plain.items()]


def operator_env(config: OperatorConfig) -> list[dict[str, Any]]:
    return [{"name": key, "value": value} for key, value in config.trainer_env.items()]


def merge_env(*sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per name; a later source replaces an earlier entry of the same name."""
    merged: dict[str, dict[str, Any]] = {}
    for entry in [entry for source in sources for entry in source]:
        # Re-inserting moves an overridden name to its new source's position, so the list still
        # reads in source order (contract, operator, user, secrets).
        merged.pop(entry["name"], None)
        merged[entry["name"]] = entry
    return list(merged.values())


def build_env(spec: FineTuneJobSpec, name: str, namespace: str, config: OperatorConfig) -> list[dict[str, Any]]:
    contract = [*contract_env(spec, name, namespace), *progress_env(name, namespace, config)]
    return merge_env(contract, operator_env(config), user_env(spec), secret_env(spec))


def build_env_from(spec: FineTuneJobSpec) -> list[dict[str, Any]]:
    credentials = spec.secrets.s3_credentials
    if credentials is None:
        return []
    return [{"secretRef": {"name": credentials.name}}]
