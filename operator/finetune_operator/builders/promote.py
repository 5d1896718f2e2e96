"""The Job that ends a hyperparameter search: the best trial's model becomes the job's output.

It runs `python -m finetune_trainer.promote` from the trainer image (so it reads pvc:// and s3:// URIs
exactly as the trainer wrote them), with the training pods' claims and credentials but no GPU.
"""

from __future__ import annotations

from typing import Any

from ..config import OperatorConfig
from ..names import LABEL_SEARCH, promote_job_name
from ..spec import FineTuneJobSpec
from .claims import claim_of, pvc_claims
from .env import merge_env, operator_env, storage_env_values, user_env
from .job import pod_failure_policy
from .meta import child_metadata
from .pod_template import trainer_image_container
from .security import restricted_pod_security_context
from .volumes import TMP_MOUNT_DIR, TMP_VOLUME, build_claim_mounts, build_claim_volumes

PROMOTE_COMMAND = ["python", "-m", "finetune_trainer.promote"]
# Renames on one claim, or server-side copies in a bucket: little CPU, little memory.
PROMOTE_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
PROMOTE_BACKOFF_LIMIT = 3


def promote_args(output_uri: str, best_uri: str, remove_uris: list[str]) -> list[str]:
    args = ["--best", best_uri, "--output", output_uri]
    for uri in remove_uris:
        args += ["--remove", uri]
    return args


def _check_claims_mounted(spec: FineTuneJobSpec, uris: list[str]) -> None:
    mounted = pvc_claims(spec)
    for uri in uris:
        claim = claim_of(uri)
        if claim is not None and claim not in mounted:
            raise ValueError(
                f"promote URI {uri}: claim {claim!r} is not one the job mounts ({', '.join(mounted) or 'none'}); "
                f"trial outputs live under spec.output.uri ({spec.output.uri})"
            )


def build_promote_env(spec: FineTuneJobSpec, name: str, namespace: str, config: OperatorConfig) -> list[dict[str, Any]]:
    own = {
        "FINETUNE_JOB_NAME": name,
        "FINETUNE_JOB_NAMESPACE": namespace,
        **storage_env_values(spec),
        # The root filesystem is read-only: whatever caches under ~ (s3fs, botocore) gets /tmp.
        "HOME": TMP_MOUNT_DIR,
    }
    # Operator-wide and user env too: that is where e.g. AWS_ENDPOINT_URL for an S3-compatible store is set.
    return merge_env(
        [{"name": key, "value": value} for key, value in own.items()], operator_env(config), user_env(spec)
    )


def build_promote_container(
    spec: FineTuneJobSpec, name: str, namespace: str, config: OperatorConfig, args: list[str]
) -> dict[str, Any]:
    return trainer_image_container(
        spec,
        config,
        command=PROMOTE_COMMAND,
        args=args,
        env=build_promote_env(spec, name, namespace, config),
        resources={kind: dict(amounts) for kind, amounts in PROMOTE_RESOURCES.items()},
        volume_mounts=[*build_claim_mounts(spec), {"name": TMP_VOLUME, "mountPath": TMP_MOUNT_DIR}],
    )


def build_promote_job(
    spec: FineTuneJobSpec,
    name: str,
    namespace: str,
    *,
    config: OperatorConfig,
    best_uri: str,
    remove_uris: list[str],
) -> dict[str, Any]:
    """The `<name>-promote` Job: moves `best_uri`'s model into spec.output.uri, then deletes `remove_uris`."""
    _check_claims_mounted(spec, [best_uri, *remove_uris])
    job_name = promote_job_name(name)
    metadata = child_metadata(job_name, namespace, job_name)
    metadata["labels"][LABEL_SEARCH] = name
    args = promote_args(spec.output.uri, best_uri, remove_uris)
    pod_spec: dict[str, Any] = {
        # podFailurePolicy requires Never; the Job controller retries.
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": restricted_pod_security_context(),
        "containers": [build_promote_container(spec, name, namespace, config, args)],
        "volumes": [*build_claim_volumes(spec), {"name": TMP_VOLUME, "emptyDir": {}}],
    }
    job_spec: dict[str, Any] = {
        "backoffLimit": PROMOTE_BACKOFF_LIMIT,
        # Exit 3 (nothing to promote, bad URIs) fails at once; disruptions do not count.
        "podFailurePolicy": pod_failure_policy(),
        # Two promote pods must never move the same files at once: a retry starts once the last one is gone.
        "podReplacementPolicy": "Failed",
        "template": {"metadata": {"labels": dict(metadata["labels"])}, "spec": pod_spec},
    }
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}
