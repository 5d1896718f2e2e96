"""Plan one pass over a hyperparameter search (pure): what was observed in, a Plan out (docs/search.md).

One pass: observe every unfinished trial (its Job, pods and progress reports) -> stop the trials whose
loss diverged or that fall behind the median -> record new trials (parameters from Optuna) up to parallelTrials -> the
search's status -> the children of the trials to run, the Jobs of the early-stopped ones to delete ->
once no trial is left to run, the promote Job that copies the best trial's model.

Restart safety: a trial's parameters reach status.trials before its Job is created (the plan writes its
status first), and a suggestion is a pure function of the recorded trials and the trial's index; a
restarted operator therefore neither repeats nor loses a trial. Early stopping is written before the
trial's Job is deleted, so a crash between the two deletes the Job on the next pass instead of
resurrecting the trial.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import kopf

from .. import reasons as r
from ..builders import build_promote_job
from ..children import run_children, suspension_change
from ..config import OperatorConfig
from ..names import promote_job_name, trial_name
from ..progress.records import JobRecord
from ..reconcile.plan import Event, Plan, account_running
from ..spec import SEARCH_PATHS, FineTuneJobSpec, changed_paths
from ..status import Observed, parse_timestamp, status_changes, timestamp, ttl_expired
from ..termination import completed_metrics
from .divergence import diverged, judged_loss
from .early_stopping import median_stop
from .events import search_events
from .promotion import promote_job_state
from .sampling import grid_size, space_from_search, suggest
from .specs import frozen_spec, trial_spec, without_suspend
from .status import early_stopped, new_trial, observe_trial, search_phase, search_progress
from .trials import best_trial, default_seed

ACTIVE_STATES = (r.TRIAL_PENDING, r.TRIAL_RUNNING)


@dataclass(frozen=True)
class SearchObservation:
    """What one pass over a search sees: the object, its spec, each child run's Job and pods, the records."""

    ftj: dict[str, Any]
    spec: FineTuneJobSpec
    # Each trial's (and the promote Job's) children, by run name; absent: nothing observed.
    children: dict[str, Observed] = field(default_factory=dict)
    # The search's own record, and those of its unfinished trials, by trial name.
    parent: JobRecord | None = None
    trials: dict[str, JobRecord] = field(default_factory=dict)

    def observed(self, run: str) -> Observed:
        return self.children.get(run) or Observed()


@dataclass
class _Pass:
    """One pass's working state: the fixed context and the trials as they are being decided."""

    observation: SearchObservation
    spec_dict: dict[str, Any]
    spec: FineTuneJobSpec
    now: datetime
    trials: list[dict[str, Any]]
    specs: dict[str, FineTuneJobSpec] = field(default_factory=dict)
    plan: Plan = field(default_factory=Plan)

    @property
    def search(self) -> Any:
        return self.spec.hyperparameter_search

    @property
    def goal(self) -> str:
        return self.search.objective.resolved_goal

    @property
    def metric(self) -> str:
        return self.search.objective.metric

    def trial_spec(self, entry: dict[str, Any]) -> FineTuneJobSpec:
        name = entry["name"]
        if name not in self.specs:
            self.specs[name] = trial_spec(self.spec_dict, entry["parameters"], self.spec.output.uri, name)
        return self.specs[name]

    def remember(self, run: str, **fields: Any) -> None:
        self.plan.remember.setdefault(run, {}).update(fields)


def plan_search(
    observation: SearchObservation,
    *,
    config: OperatorConfig,
    token_of: Callable[[str], str],
    now: datetime,
) -> Plan:
    """`token_of(run)`: the progress token of a trial's run (for its Secret)."""
    ftj, previous = observation.ftj, observation.ftj.get("status") or {}
    name = ftj["metadata"]["name"]
    if previous.get("phase") in r.TERMINAL_PHASES:
        # A finished search stays finished; its trials' children go with the job.
        plan = Plan(remember={name: {"phase": previous["phase"]}})
        plan.delete_finetunejob = ttl_expired(observation.spec, previous, now)
        return plan
    spec_dict, spec = frozen_spec(ftj, observation.spec)
    work = _Pass(observation, spec_dict, spec, now, [dict(t) for t in previous.get("trials") or []])
    work.plan.status_first = True
    work.plan.events.extend(_ignored_spec_change(work))
    _observe_trials(work)
    _stop_early(work, previous)
    planned = _planned_trials(work)
    failed_limit_hit, exhausted = _add_trials(work, planned)
    active = [t for t in work.trials if t["state"] in ACTIVE_STATES]
    finished = not active and (failed_limit_hit or exhausted or len(work.trials) >= planned)
    derived, best, promote_state = _search_status(work, previous, planned, failed_limit_hit, finished)
    changes = status_changes(previous, derived)
    work.plan.status = {key: value for key, value in changes.items() if not (value is None and key not in previous)}
    work.plan.events.extend(search_events(previous, derived, work.trials))
    if derived["phase"] == r.FAILED and previous.get("phase") != r.FAILED:
        work.plan.metrics.failures.append(derived["reason"])
    _plan_runs(work, derived, config, token_of)
    if (
        finished
        and best is not None
        and not failed_limit_hit
        and promote_state is None
        and derived["phase"] == r.RUNNING
    ):
        _plan_promotion(work, best, config)
    work.plan.delete_finetunejob = ttl_expired(observation.spec, {**previous, **work.plan.status}, now)
    return work.plan


def _ignored_spec_change(work: _Pass) -> list[Event]:
    """A Warning, once per change, naming the fields of the object's spec the search ignores."""
    ftj, parent = work.observation.ftj, work.observation.parent
    frozen = ((ftj.get("status") or {}).get("search") or {}).get("spec")
    fields = changed_paths(frozen, without_suspend(ftj["spec"])) if frozen is not None else []
    if not fields:
        return []
    digest = ",".join(fields) + str(ftj["metadata"].get("generation"))
    if parent is not None and parent.ignored_spec_hash == digest:
        return []
    work.remember(ftj["metadata"]["name"], ignored_spec_hash=digest)
    message = (
        f"only spec.runPolicy.suspend can change after a search started; ignored changes to {', '.join(fields)}: "
        "delete and recreate the job to search with them"
    )
    return [Event("Warning", r.SPEC_CHANGE_IGNORED, message)]


def _observe_trials(work: _Pass) -> None:
    """Each unfinished trial's next entry, from its Job, pods and reports; its GPU-seconds accounted."""
    for i, entry in enumerate(work.trials):
        if entry["state"] in r.TRIAL_FINISHED_STATES:
            continue
        record = work.observation.trials.get(entry["name"])
        observed = work.observation.observed(entry["name"])
        work.trials[i] = observe_trial(
            entry,
            work.trial_spec(entry),
            observed,
            record,
            metric=work.metric,
            final_metrics=completed_metrics(observed.pods),
            now=work.now,
        )
        if record is not None:
            _account_trial(work, record, work.trials[i]["state"])


def _account_trial(work: _Pass, record: JobRecord, state: str) -> None:
    """A trial's GPU-seconds into the operator's counter, and its record's phase, as for a job."""
    fields, gpu_seconds = account_running(record, state == r.TRIAL_RUNNING, work.now)
    work.plan.metrics.gpu_seconds += gpu_seconds
    if state == r.TRIAL_RUNNING:
        phase = r.RUNNING
    elif state in r.PHASES:
        phase = state
    else:
        phase = r.FAILED if state == r.TRIAL_EARLY_STOPPED else r.PENDING
    work.remember(record.name, phase=phase, **fields)


def _stop_early(work: _Pass, previous: dict[str, Any]) -> None:
    """Early stopping: running trials whose loss diverged, or that fall behind the median of the completed
    ones at the same step; never a trial at its final step (it is done: let it finish and count)."""
    rule = work.search.early_stopping
    if rule is None or rule.algorithm != "median":
        return
    completed = [t.get("history") or [] for t in work.trials if t["state"] == r.TRIAL_SUCCEEDED]
    # Evaluations already in the status were judged by the pass that wrote them.
    judged = {
        t["name"]: max((p["step"] for p in t.get("history") or []), default=None) for t in previous.get("trials") or []
    }
    loss = judged_loss(work.metric)
    for i, entry in enumerate(work.trials):
        if entry["state"] != r.TRIAL_RUNNING:
            continue
        final_step = entry.get("totalSteps") or None
        if final_step and (entry.get("step") or 0) >= final_step:
            continue
        record = work.observation.trials.get(entry["name"])
        why = diverged(_evaluations(entry, record, loss, work.metric), loss, final_step=final_step)
        reason = r.DIVERGED
        if why is None and entry.get("history"):
            reason = r.EARLY_STOPPED
            why = median_stop(
                entry["history"],
                completed,
                goal=work.goal,
                min_steps=rule.min_steps,
                min_trials=rule.min_trials,
                metric=work.metric,
                judged_through=judged.get(entry["name"]),
                final_step=final_step,
            )
        if why:
            work.trials[i] = early_stopped(entry, why, work.now, reason=reason)
            work.remember(entry["name"], phase=r.TRIAL_EARLY_STOPPED)


def _evaluations(entry: dict[str, Any], record: JobRecord | None, loss: str, metric: str) -> list[tuple[int, dict]]:
    """The trial's evaluations for the divergence rule: what was reported to this operator process, and,
    when the objective is the judged loss, the earlier points of its status history. An operator restarted
    mid-trial (a SIGKILL, a new leader) holds only the evaluations reported since; the status still has the
    trial's first evaluated loss, so a trial that diverged across the restart is still judged from its start."""
    evaluations = list(record.evaluations) if record else []
    if metric != loss:
        return evaluations
    reported = {step for step, _ in evaluations}
    earlier = [(p["step"], {loss: p["value"]}) for p in entry.get("history") or () if p["step"] not in reported]
    return earlier + evaluations


def _planned_trials(work: _Pass) -> int:
    search = work.search
    if search.algorithm == "grid":
        return min(search.max_trials, grid_size(space_from_search(search, SEARCH_PATHS.parameter_kind)))
    return search.max_trials


def _add_trials(work: _Pass, planned: int) -> tuple[bool, bool]:
    """New trials, up to parallelTrials at a time, maxTrials in all, until maxFailedTrials failed;
    returns (the failed-trials limit was hit, the search space is exhausted)."""
    search, trials = work.search, work.trials
    failed = sum(1 for t in trials if t["state"] == r.TRIAL_FAILED)
    if search.max_failed_trials > 0 and failed >= search.max_failed_trials:
        return True, False
    space = space_from_search(search, SEARCH_PATHS.parameter_kind)
    seed = search.seed if search.seed is not None else default_seed(work.observation.ftj["metadata"].get("uid", ""))
    name = work.observation.ftj["metadata"]["name"]
    while len(trials) < planned:
        if sum(1 for t in trials if t["state"] in ACTIVE_STATES) >= search.parallel_trials:
            break
        index = len(trials)
        parameters = suggest(
            search.algorithm, space, trials, goal=work.goal, seed=seed, index=index, max_trials=planned
        )
        if parameters is None:
            return False, True
        trials.append(new_trial(trial_name(name, index), index, parameters, work.spec.output.uri))
    return False, False


def _search_status(
    work: _Pass, previous: dict[str, Any], planned: int, failed_limit_hit: bool, finished: bool
) -> tuple[dict[str, Any], dict[str, Any] | None, str | None]:
    """(the search job's next status, its best trial, the promote Job's state)."""
    trials, spec, now, metric = work.trials, work.spec, work.now, work.metric
    ftj = work.observation.ftj
    best = best_trial(trials, work.goal)
    promote_state, promote_failure = promote_job_state(
        work.observation.observed(promote_job_name(ftj["metadata"]["name"]))
    )
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
        generation=ftj["metadata"].get("generation"),
        now=now,
    )
    counts = {state: sum(1 for t in trials if t["state"] == state) for state in r.TRIAL_STATES}
    start = parse_timestamp(previous.get("startTime")) or (now if trials else None)
    running = [t for t in trials if t["state"] == r.TRIAL_RUNNING and t["name"] in work.specs]
    derived.update(
        jobName=None,
        observedGeneration=ftj["metadata"].get("generation"),
        queue=spec.scheduling.queue_name,
        startTime=timestamp(start) if start else None,
        gpus=sum(work.specs[t["name"]].total_gpus for t in running),
        gpuSeconds=round(sum(float(t.get("gpuSeconds") or 0) for t in trials), 1),
        search={
            "algorithm": work.search.algorithm,
            "metric": metric,
            "goal": work.goal,
            "spec": (previous.get("search") or {}).get("spec") or without_suspend(ftj["spec"]),
            "trials": {"total": len(trials), **{s[0].lower() + s[1:]: n for s, n in counts.items()}},
        },
        trials=trials,
    )
    derived["progress"] = search_progress(trials, planned, work.observation.trials, start, now)
    if best is not None:
        derived["bestTrial"] = _best_entry(derived, best, promote_state, spec.output.uri, metric)
    if derived["phase"] in r.TERMINAL_PHASES:
        derived["completionTime"] = timestamp(now)
        derived["progress"] = {**derived["progress"], "percent": 100, "etaSeconds": 0, "eta": "0s"}
    best_objective = (metric, float(best["objectiveValue"])) if best else None
    work.remember(ftj["metadata"]["name"], phase=derived["phase"], trial_counts=counts, best_objective=best_objective)
    return derived, best, promote_state


def _best_entry(
    derived: dict[str, Any], best: dict[str, Any], promote_state: str | None, output_uri: str, metric: str
) -> dict[str, Any]:
    """status.bestTrial; once promoted, the job's own output and metrics are the best trial's."""
    entry = {key: best[key] for key in ("name", "index", "parameters", "objectiveValue", "outputUri") if key in best}
    if best.get("metrics"):
        entry["metrics"] = best["metrics"]
    if promote_state == "succeeded":
        entry["outputUri"] = output_uri
        derived["outputUri"] = output_uri
        derived["metrics"] = best.get("metrics") or {metric: best["objectiveValue"]}
    return entry


def _plan_runs(work: _Pass, derived: dict[str, Any], config: OperatorConfig, token_of: Callable[[str], str]) -> None:
    """Delete the early-stopped trials' Jobs; send the children of the trials to run, or follow suspension."""
    for entry in work.trials:
        if entry["state"] == r.TRIAL_EARLY_STOPPED and _still_running(work.observation.observed(entry["name"]).job):
            work.plan.delete_jobs.append(entry["name"])
    if derived["phase"] in r.TERMINAL_PHASES:
        return
    ftj = work.observation.ftj
    meta = ftj["metadata"]
    for entry in work.trials:
        if entry["state"] not in ACTIVE_STATES:
            continue
        run, tspec = entry["name"], work.trial_spec(entry)
        record = work.observation.trials.get(run)
        job = work.observation.observed(run).job
        if record is None:
            work.plan.track[run] = {
                "uid": meta.get("uid", ""),
                "created": parse_timestamp(meta.get("creationTimestamp")) or work.now,
                "gpus": tspec.total_gpus,
                "gpu_seconds": float(entry.get("gpuSeconds") or 0),
                "parent": meta["name"],
            }
        if job is None or record is None or not record.children_complete:
            work.plan.create.append(run_children(ftj, tspec, run, config, token_of(run), search=meta["name"]))
            work.remember(run, children_complete=True)
        else:
            suspend = suspension_change(tspec, job)
            if suspend is not None:
                work.plan.suspend.append((run, suspend))


def _still_running(job: dict[str, Any] | None) -> bool:
    if job is None or job["metadata"].get("deletionTimestamp"):
        return False
    conditions = {c.get("type") for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"}
    return not conditions & {"Complete", "Failed"}


def _plan_promotion(work: _Pass, best: dict[str, Any], config: OperatorConfig) -> None:
    """The promote Job, once no trial pod is left: a stopped trial's trainer may still be saving into the
    trials folder that promotion removes."""
    lingering = [
        pod["metadata"]["name"]
        for t in work.trials
        for pod in work.observation.observed(t["name"]).pods
        if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    ]
    if lingering:
        return  # the pods' events reconcile the search again as they stop
    ftj, spec = work.observation.ftj, work.spec
    meta = ftj["metadata"]
    remove = [] if work.search.keep_trial_outputs else [f"{spec.output.uri.rstrip('/')}/trials"]
    job = build_promote_job(
        spec, meta["name"], meta["namespace"], config=config, best_uri=best["outputUri"], remove_uris=remove
    )
    kopf.adopt(job, owner=ftj)
    work.plan.create.append([job])
