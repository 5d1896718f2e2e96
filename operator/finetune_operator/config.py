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
        )
