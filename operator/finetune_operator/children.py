"""A training run's children, and whether its Job's suspension must change (pure).

Shared by a plain FineTuneJob (one run, named after the job) and a search (one run per trial, named
after the trial and labelled with the search's name). reconcile.apply sends them.
"""

from __future__ import annotations

from typing import Any

import kopf

from .builders import build_config_map, build_job, build_progress_secret, build_service, config_hash
from .config import OperatorConfig
from .names import LABEL_SEARCH
from .spec import FineTuneJobSpec


def _labelled(child: dict[str, Any], search: str) -> dict[str, Any]:
    """A trial's child carries its search's name, so its events reconcile the search job."""
    child["metadata"].setdefault("labels", {})[LABEL_SEARCH] = search
    template = (child.get("spec") or {}).get("template")
    if template is not None:
        template["metadata"].setdefault("labels", {})[LABEL_SEARCH] = search
    return child


def run_children(
    owner: dict[str, Any],
    spec: FineTuneJobSpec,
    name: str,
    config: OperatorConfig,
    token: str,
    *,
    search: str | None = None,
    deadline_seconds: int | None = None,
) -> list[dict[str, Any]]:
    """A run's four children, owned by `owner`, the Job last: its ConfigMap and progress Secret (which the
    Job's pods mount, so they are sent first), its Service (for the trainers' rendezvous; sent with the
    Job), and the Job.

    A restarted operator re-sends all four once per run (JobRecord.children_complete), so a crash
    between them leaves none missing. `deadline_seconds`: see build_job.
    """
    namespace = owner["metadata"]["namespace"]
    config_map = build_config_map(spec, name, namespace)
    job = build_job(
        spec, name, namespace, config=config, config_hash=config_hash(config_map), deadline_seconds=deadline_seconds
    )
    children = [
        config_map,
        build_progress_secret(name, namespace, token, config.progress_ca_bundle),
        build_service(spec, name, namespace),
        job,
    ]
    for child in children:
        if search is not None:
            _labelled(child, search)
        # Owner references (garbage collection with the FineTuneJob), namespace, and the owner's labels.
        kopf.adopt(child, owner=owner)
    return children


def suspension_change(spec: FineTuneJobSpec, job: dict[str, Any]) -> bool | None:
    """The Job's new spec.suspend when it must change to follow spec.runPolicy.suspend; else None."""
    desired = spec.run_policy.suspend
    actual = bool((job.get("spec") or {}).get("suspend"))
    # With a queue, unsuspending belongs to Kueue (admission); the operator only ever suspends.
    if desired != actual and (desired or not spec.scheduling.queue_name):
        return desired
    return None
