"""Names and labels of a FineTuneJob's children: deterministic, so a restarted operator finds them."""

from __future__ import annotations

GROUP = "finetune.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "FineTuneJob"
PLURAL = "finetunejobs"

MANAGED_BY = "finetune-operator"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_JOB_NAME = f"{GROUP}/job-name"
LABEL_QUEUE_NAME = "kueue.x-k8s.io/queue-name"
ANNOTATION_CONFIG_HASH = f"{GROUP}/config-hash"
# On the training Job: the digest of the spec it was built from (all but the mutable fields).
ANNOTATION_SPEC_HASH = f"{GROUP}/spec-hash"
# On every child of a hyperparameter-search trial (and the promote Job): the FineTuneJob that owns the search.
LABEL_SEARCH = f"{GROUP}/search"

TRAINER_CONTAINER = "trainer"
RENDEZVOUS_PORT = 29500
CONFIG_MOUNT_DIR = "/etc/finetune"
CONFIG_FILE_KEY = "config.json"
PVC_MOUNT_ROOT = "/mnt/pvc"
CACHE_MOUNT_DIR = "/var/cache/finetune"
TERMINATION_LOG = "/dev/termination-log"
PROGRESS_TOKEN_DIR = "/var/run/secrets/finetune/progress"
PROGRESS_TOKEN_KEY = "token"
TRAINER_METRICS_PORT_NAME = "metrics"


def config_map_name(job_name: str) -> str:
    return f"{job_name}-config"


def progress_secret_name(job_name: str) -> str:
    return f"{job_name}-progress"


def service_name(job_name: str) -> str:
    return job_name


def training_job_name(job_name: str) -> str:
    return job_name


def selector_labels(job_name: str) -> dict[str, str]:
    return {LABEL_JOB_NAME: job_name}


def child_labels(job_name: str) -> dict[str, str]:
    return {LABEL_MANAGED_BY: MANAGED_BY, **selector_labels(job_name)}


def trial_name(job_name: str, index: int) -> str:
    """Trial `index` of a search; its children are named as a job of this name would be."""
    return f"{job_name}-t{index}"


def promote_job_name(job_name: str) -> str:
    """The Job that moves a search's best model into the job's output after the last trial."""
    return f"{job_name}-promote"
