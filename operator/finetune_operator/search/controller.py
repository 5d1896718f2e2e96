"""Reconcile a FineTuneJob with spec.hyperparameterSearch: trials as child training Jobs (docs/search.md).

One pass: observe every unfinished trial (its Job, pods and progress reports) -> stop the trials that
fall behind the median -> record new trials (parameters from Optuna) up to parallelTrials -> write the
status -> create the new trials' children, stop early-stopped trials' Jobs -> once no trial is left to
run, promote the best trial's model with the promote Job.

Restart safety: a trial's parameters reach status.trials before its Job is created, and a suggestion
is a pure function of the recorded trials and the trial's index; a restarted operator therefore
neither repeats nor loses a trial. Early stopping is written before the trial's Job is deleted, so a
crash between the two deletes the Job on the next pass instead of resurrecting the trial.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from datetime import datetime
from typing import Any

import kopf

from .. import reasons as r
from ..builders import build_promote_job
from ..children import JobsFirst, apply_suspension, create_children
from ..config import OperatorConfig
from ..kube import KubeApi
from ..names import promote_job_name, trial_name
from ..progress.hub import ProgressHub
from ..progress.records import JobRecord
from ..spec import SEARCH_PATHS, FineTuneJobSpec, changed_paths, parse_spec
from ..status import Observed, classify_failure, parse_timestamp, status_changes, timestamp
from ..termination import completed_metrics
from .early_stopping import median_stop
from .sampling import grid_size, space_from_search, suggest
from .status import (
    early_stopped,
    new_trial,
    observe_trial,
    search_phase,
    search_progress,
    trial_output_uri,
)
from .trials import best_trial, default_seed

log = logging.getLogger(__name__)


def trial_spec(spec_dict: dict[str, Any], parameters: dict[str, Any], output_uri: str, name: str) -> FineTuneJobSpec:
    """The spec a trial trains with: the job's, parameters applied, output in the trial's own folder."""
    body = SEARCH_PATHS.apply_parameters(spec_dict, parameters)
    body.pop("hyperparameterSearch", None)
    body["output"] = {**body["output"], "uri": trial_output_uri(output_uri, name)}
    return parse_spec(body)


async def reconcile_search(
    ftj: dict[str, Any],
    spec: FineTuneJobSpec,
    *,
    kube: KubeApi,
    hub: ProgressHub,
    config: OperatorConfig,
    jobs: Any,
    pods: Any,
    now: datetime,
    jobs_first: JobsFirst,
) -> dict[str, Any]:
    """One pass over a search job; returns its status as now written."""
    meta = ftj["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta.get("uid", "")
    generation = meta.get("generation")
    previous = ftj.get("status") or {}
    created = parse_timestamp(meta.get("creationTimestamp")) or now
    parent = hub.track(namespace, name, uid=uid, created=created, gpus=0, gpu_seconds=0)
    # The search runs on the spec it started with (status.search.spec): trials stay comparable however
    # the object is edited later. Only runPolicy.suspend is taken from the current spec.
    spec_dict, spec = _frozen_spec(ftj, spec, parent)
    search = spec.hyperparameter_search
    assert search is not None
    metric, goal = search.objective.metric, search.objective.resolved_goal
    space = space_from_search(search, SEARCH_PATHS.parameter_kind)
    planned = search.max_trials if search.algorithm != "grid" else min(search.max_trials, grid_size(space))

    def observed_of(child: str) -> Observed:
        return Observed(
            job=next(iter(jobs.get((namespace, child), ())), None), pods=list(pods.get((namespace, child), ()))
        )

    def trial_record(entry: dict[str, Any], tspec: FineTuneJobSpec) -> JobRecord:
        return hub.track(
            namespace,
            entry["name"],
            uid=uid,
            created=created,
            gpus=tspec.total_gpus,
            gpu_seconds=float(entry.get("gpuSeconds") or 0),
            parent=name,
        )

    if previous.get("phase") in r.TERMINAL_PHASES:
        parent.phase = previous["phase"]
        return previous  # a finished search stays finished; its trials' children go with the job
    trials = [dict(t) for t in previous.get("trials") or []]
    specs: dict[str, FineTuneJobSpec] = {}
    records: dict[str, JobRecord] = {}

    # 1. Observe the unfinished trials.
    for i, entry in enumerate(trials):
        if entry["state"] in r.TRIAL_FINISHED_STATES:
            continue
        tspec = specs[entry["name"]] = trial_spec(spec_dict, entry["parameters"], spec.output.uri, entry["name"])
        record = records[entry["name"]] = trial_record(entry, tspec)
        observed = observed_of(entry["name"])
        trials[i] = observe_trial(
            entry, tspec, observed, record, metric=metric, final_metrics=completed_metrics(observed.pods), now=now
        )
        _account_trial(hub, record, trials[i], now)

    # 2. Early stopping: trials behind the median of the completed ones at the same step.
    rule = search.early_stopping
    if rule is not None and rule.algorithm == "median":
        completed = [t.get("history") or [] for t in trials if t["state"] == r.TRIAL_SUCCEEDED]
        judged = {
            t["name"]: max((p["step"] for p in t.get("history") or []), default=None)
            for t in previous.get("trials") or []
        }
        for i, entry in enumerate(trials):
            if entry["state"] != r.TRIAL_RUNNING or not entry.get("history"):
                continue
            # Evaluations already in the status were judged by the pass that wrote them.
            why = median_stop(
                entry["history"],
                completed,
                goal=goal,
                min_steps=rule.min_steps,
                min_trials=rule.min_trials,
                metric=metric,
                judged_through=judged.get(entry["name"]),
            )
            if why:
                trials[i] = early_stopped(entry, why, now)
                records[entry["name"]].phase = r.TRIAL_EARLY_STOPPED

    # 3. New trials, up to parallelTrials at a time, maxTrials in all, until maxFailedTrials failed.
    failed = sum(1 for t in trials if t["state"] == r.TRIAL_FAILED)
    failed_limit_hit = search.max_failed_trials > 0 and failed >= search.max_failed_trials
    exhausted = False
    seed = search.seed if search.seed is not None else default_seed(uid)
    while not failed_limit_hit and len(trials) < planned:
        active = sum(1 for t in trials if t["state"] in (r.TRIAL_PENDING, r.TRIAL_RUNNING))
        if active >= search.parallel_trials:
            break
        index = len(trials)
        parameters = suggest(search.algorithm, space, trials, goal=goal, seed=seed, index=index, max_trials=planned)
        if parameters is None:
            exhausted = True
            break
        trials.append(new_trial(trial_name(name, index), index, parameters, spec.output.uri))

    # 4. The search job's own status.
    active = [t for t in trials if t["state"] in (r.TRIAL_PENDING, r.TRIAL_RUNNING)]
    finished = not active and (failed_limit_hit or exhausted or len(trials) >= planned)
    best = best_trial(trials, goal)
    promote_key = promote_job_name(name)
    promote_observed = observed_of(promote_key)
    promote_state, promote_failure = _promote_state(promote_observed)
    derived = search_phase(
        previous,
        trials,
        metric=metric,
        planned=planned,
        best=best,
        failed_limit_hit=failed_limit_hit,
        finished=finished,
        promote=promote_state,
        promote_failure=promote_failure,
        output_uri=spec.output.uri,
        generation=generation,
        now=now,
    )
    counts = {state: sum(1 for t in trials if t["state"] == state) for state in r.TRIAL_STATES}
    start = parse_timestamp(previous.get("startTime")) or (now if trials else None)
    derived.update(
        jobName=None,
        observedGeneration=generation,
        queue=spec.scheduling.queue_name,
        startTime=timestamp(start) if start else None,
        gpus=sum(specs[t["name"]].total_gpus for t in trials if t["state"] == r.TRIAL_RUNNING and t["name"] in specs),
        gpuSeconds=round(sum(float(t.get("gpuSeconds") or 0) for t in trials), 1),
        search={
            "algorithm": search.algorithm,
            "metric": metric,
            "goal": goal,
            "spec": (previous.get("search") or {}).get("spec") or _without_suspend(ftj["spec"]),
            "trials": {"total": len(trials), **{s[0].lower() + s[1:]: n for s, n in counts.items()}},
        },
        trials=trials,
    )
    derived["progress"] = search_progress(trials, planned, records, start, now)
    if best is not None:
        best_entry = {
            key: best[key] for key in ("name", "index", "parameters", "objectiveValue", "outputUri") if key in best
        }
        if best.get("metrics"):
            best_entry["metrics"] = best["metrics"]
        if promote_state == "succeeded":
            best_entry["outputUri"] = spec.output.uri
            derived["outputUri"] = spec.output.uri
            derived["metrics"] = best.get("metrics") or {metric: best["objectiveValue"]}
        derived["bestTrial"] = best_entry
    if derived["phase"] in r.TERMINAL_PHASES:
        derived["completionTime"] = timestamp(now)
        derived["progress"] = {**derived["progress"], "percent": 100, "etaSeconds": 0, "eta": "0s"}
    parent.phase = derived["phase"]
    parent.trial_counts = counts
    parent.best_objective = (metric, float(best["objectiveValue"])) if best else None

    changes = status_changes(previous, derived)
    changes = {key: value for key, value in changes.items() if not (value is None and key not in previous)}
    if changes:
        hub.metrics.status_writes.labels("reconcile").inc()
        await asyncio.to_thread(kube.patch_finetunejob_status, namespace, name, changes)
    _post_events(ftj, previous, derived, trials)
    if derived["phase"] == r.FAILED and previous.get("phase") != r.FAILED:
        hub.metrics.failures.labels(derived["reason"]).inc()

    # 5. Act on what the status now says: create trials, stop the early-stopped ones, promote.
    await _stop_trials(kube, namespace, [t["name"] for t in trials if t["state"] == r.TRIAL_EARLY_STOPPED], observed_of)
    for entry in trials:
        if entry["state"] not in (r.TRIAL_PENDING, r.TRIAL_RUNNING) or derived["phase"] in r.TERMINAL_PHASES:
            continue
        tspec = specs.get(entry["name"]) or trial_spec(spec_dict, entry["parameters"], spec.output.uri, entry["name"])
        record = records.get(entry["name"]) or trial_record(entry, tspec)
        job = observed_of(entry["name"]).job
        if job is None or not record.children_complete:
            await create_children(
                kube,
                ftj,
                tspec,
                entry["name"],
                config,
                hub.token(namespace, entry["name"], uid),
                jobs_first,
                search=name,
            )
            record.children_complete = True
        else:
            await asyncio.to_thread(apply_suspension, kube, tspec, job)
    # A stopped trial's trainer may still be saving into the trials folder that promotion removes.
    if (
        finished
        and best is not None
        and not failed_limit_hit
        and promote_state is None
        and derived["phase"] == r.RUNNING
    ):
        lingering = [
            pod["metadata"]["name"]
            for t in trials
            for pod in pods.get((namespace, t["name"]), ())
            if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        ]
        if lingering:
            log.info("search %s/%s: promotion waits for trial pods to stop: %s", namespace, name, ", ".join(lingering))
            return {**previous, **changes}
        remove = [] if search.keep_trial_outputs else [f"{spec.output.uri.rstrip('/')}/trials"]
        job = build_promote_job(spec, name, namespace, config=config, best_uri=best["outputUri"], remove_uris=remove)
        kopf.adopt(job, owner=ftj)
        await asyncio.to_thread(kube.create_if_absent, job)
    return {**previous, **changes}


def _without_suspend(spec: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(spec)
    (body.get("runPolicy") or {}).pop("suspend", None)
    return body


def _frozen_spec(
    ftj: dict[str, Any], spec: FineTuneJobSpec, record: JobRecord
) -> tuple[dict[str, Any], FineTuneJobSpec]:
    """The spec dict and model the search runs on, with the current runPolicy.suspend; warns once per
    ignored change (a Warning event naming the fields)."""
    frozen = ((ftj.get("status") or {}).get("search") or {}).get("spec")
    if frozen is None:
        return copy.deepcopy(ftj["spec"]), spec
    body = copy.deepcopy(frozen)
    body.setdefault("runPolicy", {})["suspend"] = spec.run_policy.suspend
    fields = changed_paths(frozen, _without_suspend(ftj["spec"]))
    if fields:
        digest = ",".join(fields) + str(ftj["metadata"].get("generation"))
        if record.ignored_spec_hash != digest:
            record.ignored_spec_hash = digest
            kopf.event(
                ftj,
                type="Warning",
                reason=r.SPEC_CHANGE_IGNORED,
                message=f"only spec.runPolicy.suspend can change after a search started; ignored changes to "
                f"{', '.join(fields)}: delete and recreate the job to search with them",
            )
    return body, parse_spec(body)


def _promote_state(observed: Observed) -> tuple[str | None, dict[str, Any] | None]:
    job = observed.job
    if job is None:
        return None, None
    conditions = {c.get("type"): c.get("status") for c in (job.get("status") or {}).get("conditions") or []}
    if conditions.get("Complete") == "True" or conditions.get("SuccessCriteriaMet") == "True":
        return "succeeded", None
    if conditions.get("Failed") == "True" or conditions.get("FailureTarget") == "True":
        return "failed", classify_failure(job, observed.pods).as_status()
    return "active", None


async def _stop_trials(kube: KubeApi, namespace: str, names: list[str], observed_of: Any) -> None:
    for trial in names:
        job = observed_of(trial).job
        if job is None or job["metadata"].get("deletionTimestamp"):
            continue
        conditions = {
            c.get("type") for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"
        }
        if conditions & {"Complete", "Failed"}:
            continue
        await asyncio.to_thread(kube.delete_job, namespace, trial)


def _account_trial(hub: ProgressHub, record: JobRecord, entry: dict[str, Any], now: datetime) -> None:
    """GPU-seconds of a trial into the operator's counter, as for a job."""
    record.phase = (
        r.RUNNING
        if entry["state"] == r.TRIAL_RUNNING
        else (
            entry["state"]
            if entry["state"] in r.PHASES
            else r.FAILED
            if entry["state"] == r.TRIAL_EARLY_STOPPED
            else r.PENDING
        )
    )
    record.set_running(entry["state"] == r.TRIAL_RUNNING, now)
    total = record.gpu_seconds_at(now)
    hub.metrics.gpu_seconds.inc(max(0.0, total - record.gpu_counted))
    record.gpu_counted = total


def _post_events(
    ftj: dict[str, Any], previous: dict[str, Any], derived: dict[str, Any], trials: list[dict[str, Any]]
) -> None:
    before = {t["name"]: t["state"] for t in previous.get("trials") or []}
    for trial in trials:
        state = trial["state"]
        if before.get(trial["name"]) == state:
            continue
        if state == r.TRIAL_EARLY_STOPPED:
            kopf.event(
                ftj,
                type="Normal",
                reason=r.TRIAL_EARLY_STOPPED_EVENT,
                message=f"{trial['name']}: {trial.get('message', '')}",
            )
        elif state == r.TRIAL_FAILED:
            kopf.event(
                ftj,
                type="Warning",
                reason=r.TRIAL_FAILED_EVENT,
                message=f"{trial['name']} ({trial.get('reason')}): {trial.get('message', '')}",
            )
        elif state == r.TRIAL_SUCCEEDED:
            kopf.event(
                ftj,
                type="Normal",
                reason=r.TRIAL_SUCCEEDED_EVENT,
                message=f"{trial['name']}: objective {trial.get('objectiveValue')}",
            )
    if derived["phase"] != previous.get("phase"):
        failed = derived["phase"] == r.FAILED
        kopf.event(
            ftj,
            type="Warning" if failed else "Normal",
            reason=derived["reason"] or derived["phase"],
            message=f"{derived['phase']}: {derived['message']}",
        )
