"""Operator-wide settings, read once from the environment (the Deployment sets them)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

DAY = 86400.0
TLS_MODES = ("self-signed", "external", "disabled")


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
    progress_base_url: str = "https://finetune-operator.finetune-system.svc:8081"
    progress_port: int = 8081
    metrics_port: int = 9090
    # How often a trainer reports, and how long a running job's step may stand still before Stalled.
    progress_interval_seconds: float = 10.0
    stall_seconds: float = 900.0
    # Where each trainer pod serves its own /metrics (for the PodMonitor); 0 disables it.
    trainer_metrics_port: int = 9400
    # TLS of the progress endpoint (docs/progress.md, "Security"): "self-signed" (the operator makes and
    # rotates its own CA and serving certificate), "external" (cert-manager or another tool keeps the Secret;
    # the operator only reads and reloads it) or "disabled" (plain HTTP: tokens travel in clear text).
    progress_tls: str = "self-signed"
    # The Secret holding tls.crt, tls.key and ca.crt (and, self-signed, the CA keys), in this namespace
    # (FINETUNE_PROGRESS_TLS_NAMESPACE, else POD_NAMESPACE; neither: kept in memory, lost on restart).
    progress_tls_secret: str = "finetune-operator-progress-tls"
    progress_tls_namespace: str = ""
    # Names the serving certificate holds besides the host of progress_base_url: the Service's DNS names.
    progress_tls_dns_names: tuple[str, ...] = (
        "finetune-operator.finetune-system.svc",
        "finetune-operator.finetune-system.svc.cluster.local",
    )
    # Lifetimes: the serving certificate is renewed with a third of its life left; the CA too, through an
    # overlap during which trainers trust both the old and the new CA.
    progress_tls_cert_seconds: float = 30 * DAY
    progress_tls_ca_seconds: float = 3650 * DAY
    progress_tls_ca_overlap_seconds: float = 7 * DAY
    # How often the Secret is read and the certificates checked (0: a thirtieth of the certificate's life, at
    # most 5 minutes).
    progress_tls_check_seconds: float = 0.0
    # The CA bundle (PEM) trainers verify the endpoint with: set by progress.tls at start-up and on rotation,
    # never from the environment; it goes into each job's progress Secret (key ca.crt).
    progress_ca_bundle: str = ""

    @property
    def progress_tls_hosts(self) -> tuple[str, ...]:
        """What the serving certificate must name: the base URL's host (a DNS name or an IP), then the Service's."""
        host = urlsplit(self.progress_base_url).hostname if self.progress_base_url else None
        return tuple(dict.fromkeys(h for h in (host, *self.progress_tls_dns_names) if h))

    @property
    def progress_tls_check_interval(self) -> float:
        if self.progress_tls_check_seconds > 0:
            return self.progress_tls_check_seconds
        return max(0.5, min(300.0, self.progress_tls_cert_seconds / 30))

    def check_progress_tls(self) -> None:
        """Refuse settings that would leave trainers unable to report, naming the variable and a valid value."""
        if self.progress_tls not in TLS_MODES:
            raise ValueError(
                f"FINETUNE_PROGRESS_TLS={self.progress_tls!r}: use one of {', '.join(TLS_MODES)} (e.g. self-signed)"
            )
        scheme = urlsplit(self.progress_base_url).scheme if self.progress_base_url else ""
        if self.progress_tls == "disabled" and scheme == "https":
            raise ValueError(
                f"FINETUNE_PROGRESS_TLS=disabled serves plain HTTP, but FINETUNE_PROGRESS_BASE_URL is "
                f"{self.progress_base_url}: make it http://... or enable TLS"
            )
        if self.progress_tls != "disabled" and scheme == "http":
            raise ValueError(
                f"FINETUNE_PROGRESS_BASE_URL={self.progress_base_url} is plain HTTP while the endpoint serves TLS: "
                f"make it https://... (or set FINETUNE_PROGRESS_TLS=disabled to send tokens in clear text)"
            )
        if self.progress_tls_ca_seconds / 3 <= self.progress_tls_ca_overlap_seconds + self.progress_tls_cert_seconds:
            raise ValueError(
                "FINETUNE_PROGRESS_TLS_CA_SECONDS must exceed three times (the CA overlap + the certificate "
                f"lifetime): {self.progress_tls_ca_seconds:g} <= 3 x ({self.progress_tls_ca_overlap_seconds:g} + "
                f"{self.progress_tls_cert_seconds:g}); e.g. the defaults 315360000, 604800 and 2592000"
            )

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> OperatorConfig:
        env = os.environ if environ is None else environ
        extra = {}
        for item in filter(None, env.get("FINETUNE_TRAINER_ENV", "").split(",")):
            key, _, value = item.partition("=")
            extra[key.strip()] = value.strip()
        dns_default = ",".join(cls.__dataclass_fields__["progress_tls_dns_names"].default)
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
            progress_tls=env.get("FINETUNE_PROGRESS_TLS", cls.progress_tls).strip().lower() or cls.progress_tls,
            progress_tls_secret=env.get("FINETUNE_PROGRESS_TLS_SECRET", cls.progress_tls_secret),
            progress_tls_namespace=env.get("FINETUNE_PROGRESS_TLS_NAMESPACE") or env.get("POD_NAMESPACE", ""),
            progress_tls_dns_names=tuple(
                filter(None, (n.strip() for n in env.get("FINETUNE_PROGRESS_TLS_DNS_NAMES", dns_default).split(",")))
            ),
            progress_tls_cert_seconds=float(
                env.get("FINETUNE_PROGRESS_TLS_CERT_SECONDS", cls.progress_tls_cert_seconds)
            ),
            progress_tls_ca_seconds=float(env.get("FINETUNE_PROGRESS_TLS_CA_SECONDS", cls.progress_tls_ca_seconds)),
            progress_tls_ca_overlap_seconds=float(
                env.get("FINETUNE_PROGRESS_TLS_CA_OVERLAP_SECONDS", cls.progress_tls_ca_overlap_seconds)
            ),
            progress_tls_check_seconds=float(
                env.get("FINETUNE_PROGRESS_TLS_CHECK_SECONDS", cls.progress_tls_check_seconds)
            ),
        )
