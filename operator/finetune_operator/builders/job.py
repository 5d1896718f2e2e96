"""The batch/v1 Job that runs the trainer: Indexed, one completion per node, rank = completion index."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..config import OperatorConfig
from ..names import ANNOTATION_SPEC_HASH, LABEL_QUEUE_NAME, TRAINER_CONTAINER, training_job_name
from ..reasons import FINAL_EXIT_CODES
from ..spec import FineTuneJobSpec
from .meta import child_metadata
from .pod_template import build_pod_template


def pod_failure_policy() -> dict[str, Any]:
    """One pod: the trainer's final failures (bad data, denied or missing storage, an unreachable Hub) fail the
    Job at once, instead of a retry storm against a store that will answer the same; the rest count against
    backoffLimit (StorageUnavailable included: the trainer has already backed off within the attempt)."""
    return {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": TRAINER_CONTAINER,
                    "operator": "In",
                    "values": list(FINAL_EXIT_CODES),
                },
            },
            # Preemption, node drain and eviction are not the trainer's fault.
            {
                "action": "Ignore",
                "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
            },
            {
                "action": "Count",
                "onExitCodes": {
                    "containerName": TRAINER_CONTAINER,
                    "operator": "NotIn",
                    "values": [0, *FINAL_EXIT_CODES],
                },
            },
        ]
    }


def gang_pod_failure_policy() -> dict[str, Any]:
    """Several ranks train as one gang: the first rank to fail or be disrupted fails the whole Job, and the
    Job controller stops the other ranks at once (they would otherwise wait in a collective until its
    timeout). The operator then restarts the gang from the newest checkpoint (gang.py), counting the
    restart against runPolicy.backoffLimit unless a disruption caused it."""
    return {
        "rules": [
            # First, so that the Job's message says a disruption ended the pod (it also exits 143).
            {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {
                "action": "FailJob",
                "onExitCodes": {"containerName": TRAINER_CONTAINER, "operator": "NotIn", "values": [0]},
            },
        ]
    }


def spec_hash(spec: FineTuneJobSpec) -> str:
    """A short digest of the spec, defaults included, without the fields that may change after creation."""
    fields = spec.model_dump(mode="json", by_alias=True, exclude={"run_policy": {"suspend"}})
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def build_job(
    spec: FineTuneJobSpec,
    name: str,
    namespace: str,
    *,
    config: OperatorConfig,
    config_hash: str,
    deadline_seconds: int | None = None,
) -> dict[str, Any]:
    """The training Job. `deadline_seconds` overrides runPolicy.activeDeadlineSeconds for a Job sent again
    (a restarted gang) so that the deadline keeps counting from the job's first start."""
    metadata = child_metadata(training_job_name(name), namespace, name)
    # What the Job was built from: a later spec with another digest is a change the Job cannot take.
    metadata["annotations"] = {ANNOTATION_SPEC_HASH: spec_hash(spec)}
    queue = spec.scheduling.queue_name
    if queue:
        metadata["labels"][LABEL_QUEUE_NAME] = queue
    nodes = spec.resources.nodes
    run_policy = spec.run_policy
    gang = nodes > 1
    job_spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": nodes,
        "parallelism": nodes,
        # One pod: the Job controller retries it, up to runPolicy.backoffLimit. Several: the operator
        # restarts them all together (gang.py) and counts against backoffLimit itself.
        "backoffLimit": 0 if gang else run_policy.backoff_limit,
        "podFailurePolicy": gang_pod_failure_policy() if gang else pod_failure_policy(),
        # A replacement rank starts only once the failed one is gone, so two pods never claim one
        # hostname (and rank) at the same time.
        "podReplacementPolicy": "Failed",
        # Kueue admits a queued Job by unsuspending it.
        "suspend": run_policy.suspend or bool(queue),
        "template": build_pod_template(spec, name, namespace, config=config, config_hash=config_hash),
    }
    # No ttlSecondsAfterFinished: the operator applies the FineTuneJob's TTL itself, after it has
    # read the Job's final status.
    deadline = deadline_seconds if deadline_seconds is not None else run_policy.active_deadline_seconds
    if deadline is not None:
        job_spec["activeDeadlineSeconds"] = deadline
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}
