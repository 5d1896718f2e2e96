"""Operator-wide settings, read once from the environment (the Deployment sets them)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class OperatorConfig:
    # The trainer image used when a FineTuneJob leaves spec.image empty.
    default_image: str = "ghcr.io/finetune-operator/trainer:0.1.0"
    # Requests for the trainer container when the spec gives none.
    default_cpu: str = "4"
    default_memory: str = "16Gi"
    # Minimum seconds between two progress writes to one job's status.
    status_interval_seconds: float = 15.0
    # Extra env for every trainer container (the sandbox sets HF_HUB_OFFLINE=1 here).
    trainer_env: dict[str, str] = field(default_factory=dict)
    image_pull_policy: str = "IfNotPresent"
    # Size cap of the trainer's memory-backed /dev/shm (dataloader workers, NCCL); it counts against
    # the container's memory limit, so it is kept well below the default memory request.
    shm_size: str = "2Gi"
    # Where trainers send progress reports (the operator's Service); empty disables reporting.
    progress_base_url: str = "http://finetune-operator.finetune-system.svc:8081"
    progress_port: int = 8081
    metrics_port: int = 9090
    # How often a trainer reports, and how long a running job's step may stand still before Stalled.
    progress_interval_seconds: float = 10.0
    stall_seconds: float = 900.0
    # Where each trainer pod serves its own /metrics (for the PodMonitor); 0 disables it.
    trainer_metrics_port: int = 9400

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> OperatorConfig:
        env = os.environ if environ is None else environ
        extra = {}
        for item in filter(None, env.get("FINETUNE_TRAINER_ENV", "").split(",")):
            key, _, value = item.partition("=")
            extra[key.strip()] = value.strip()
        return cls(
            default_image=env.get("FINETUNE_DEFAULT_IMAGE", cls.default_image),
            default_cpu=env.get("FINETUNE_DEFAULT_CPU", cls.default_cpu),
            default_memory=env.get("FINETUNE_DEFAULT_MEMORY", cls.default_memory),
            status_interval_seconds=float(env.get("FINETUNE_STATUS_INTERVAL_SECONDS", cls.status_interval_seconds)),
            trainer_env=extra,
            image_pull_policy=env.get("FINETUNE_IMAGE_PULL_POLICY", cls.image_pull_policy),
            shm_size=env.get("FINETUNE_SHM_SIZE", cls.shm_size),
            progress_base_url=env.get("FINETUNE_PROGRESS_BASE_URL", cls.progress_base_url).rstrip("/"),
            progress_port=int(env.get("FINETUNE_PROGRESS_PORT", cls.progress_port)),
            metrics_port=int(env.get("FINETUNE_METRICS_PORT", cls.metrics_port)),
            progress_interval_seconds=float(
                env.get("FINETUNE_PROGRESS_INTERVAL_SECONDS", cls.progress_interval_seconds)
            ),
            stall_seconds=float(env.get("FINETUNE_STALL_SECONDS", cls.stall_seconds)),
            trainer_metrics_port=int(env.get("FINETUNE_TRAINER_METRICS_PORT", cls.trainer_metrics_port)),
        )
