"""A hyperparameter search's status, from its trials (pure: no I/O, no clock).

The search job's status.trials is the search's whole memory: every trial's parameters are recorded
there before its Job is created, and its state, objective history and result as they become known.
These functions turn what the trials' Jobs, pods and progress reports show into the next status.trials
entry, and the trials into the search job's phase, message, progress and best trial.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .. import reasons as r
from ..conditions import set_condition
from ..progress.records import JobRecord, format_eta
from ..status import Observed, derive_status, timestamp
from .trials import add_history_point

# A trial's phase as a job (status.derive_status) -> its state in status.trials.
TRIAL_STATE_OF_PHASE = {
    r.PENDING: r.TRIAL_PENDING,
    r.QUEUED: r.TRIAL_PENDING,
    r.STARTING: r.TRIAL_PENDING,
    r.SUSPENDED: r.TRIAL_PENDING,
    r.RUNNING: r.TRIAL_RUNNING,
    r.SUCCEEDED: r.TRIAL_SUCCEEDED,
    r.FAILED: r.TRIAL_FAILED,
}
MAX_TRIAL_MESSAGE = 4096


def significant(value: float) -> float:
    """Six significant digits: what ranks trials, readable in `kubectl get` (BEST) and in the status."""
    return float(f"{value:.6g}")


def trial_output_uri(output_uri: str, trial: str) -> str:
    return f"{output_uri.rstrip('/')}/trials/{trial}"


def new_trial(name: str, index: int, parameters: dict[str, Any], output_uri: str) -> dict[str, Any]:
    return {
        "name": name,
        "index": index,
        "parameters": parameters,
        "state": r.TRIAL_PENDING,
        "outputUri": trial_output_uri(output_uri, name),
    }


def observe_trial(
    entry: dict[str, Any],
    trial_spec: Any,
    observed: Observed,
    record: JobRecord | None,
    *,
    metric: str,
    final_metrics: dict[str, float] | None,
    now: datetime,
) -> dict[str, Any]:
    """The next status.trials entry of an unfinished trial, from its Job, pods and progress reports."""
    out = dict(entry)
    if record is not None:
        history = list(entry.get("history") or [])
        for step, metrics in record.evaluations:
            # Step 0 is the trainer's evaluation of the untrained model (the "before" of its metrics): the
            # same for every trial, it says nothing about the parameters and would mask a diverging trial.
            if metric in metrics and step > 0:
                history = add_history_point(history, step, significant(metrics[metric]))
        if history:
            out["history"] = history
            out["objectiveValue"] = history[-1]["value"]
        if record.report is not None:
            out["step"] = record.report.step
            out["totalSteps"] = record.report.totalSteps
        out["gpuSeconds"] = round(record.gpu_seconds_at(now), 1)
    derived = derive_status(
        trial_spec,
        {"startTime": entry.get("startTime"), "retries": entry.get("retries", 0)},
        observed,
        job_name=entry["name"],
        generation=None,
        now=now,
    )
    state = TRIAL_STATE_OF_PHASE[derived["phase"]]
    out["state"] = state
    out["reason"] = derived.get("reason") or state
    out["message"] = (derived.get("message") or "")[:MAX_TRIAL_MESSAGE]
    if derived.get("startTime"):
        out["startTime"] = derived["startTime"]
    if state in r.TRIAL_FINISHED_STATES:
        out["completionTime"] = derived.get("completionTime") or timestamp(now)
    if state == r.TRIAL_SUCCEEDED:
        if final_metrics and metric in final_metrics:
            # The trainer's own final evaluation (termination message): survives a lost progress report.
            out["objectiveValue"] = significant(final_metrics[metric])
            if out.get("step") is not None:
                out["history"] = add_history_point(list(out.get("history") or []), out["step"], out["objectiveValue"])
            out["metrics"] = {key: significant(value) for key, value in final_metrics.items()}
        if out.get("objectiveValue") is None:
            reported = sorted(
                (final_metrics or {}) | (record.evaluations[-1][1] if record and record.evaluations else {})
            )
            out.update(
                state=r.TRIAL_FAILED,
                reason=r.OBJECTIVE_MISSING,
                message=f"the trial finished without reporting {metric}; reported: {', '.join(reported) or 'nothing'}; "
                f"{r.FAILURE_HINTS[r.OBJECTIVE_MISSING]}",
            )
    return out


def early_stopped(
    entry: dict[str, Any], message: str, now: datetime, *, reason: str = r.EARLY_STOPPED
) -> dict[str, Any]:
    """A stopped trial: reason EarlyStopped (the median rule) or Diverged (its loss blew up)."""
    return {
        **entry,
        "state": r.TRIAL_EARLY_STOPPED,
        "reason": reason,
        "message": message,
        "completionTime": timestamp(now),
    }


def describe_parameters(parameters: dict[str, Any]) -> str:
    return ", ".join(
        f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}" for key, value in parameters.items()
    )


def best_summary(best: dict[str, Any] | None, metric: str) -> str:
    if best is None:
        return f"no {metric} yet"
    return f"best {metric} {best['objectiveValue']:.4g} by {best['name']} ({describe_parameters(best['parameters'])})"


def search_progress(
    trials: list[dict[str, Any]], planned: int, records: dict[str, JobRecord], start: datetime | None, now: datetime
) -> dict[str, Any]:
    """Finished trials count whole, running ones by their step fraction; the ETA extrapolates the elapsed time."""
    done = 0.0
    last_report: datetime | None = None
    for trial in trials:
        if trial["state"] in r.TRIAL_FINISHED_STATES:
            done += 1
            continue
        record = records.get(trial["name"])
        ratio = record.progress_ratio() if record else None
        done += ratio or 0.0
        if record and record.received and (last_report is None or record.received > last_report):
            last_report = record.received
    fraction = min(1.0, done / planned) if planned else 1.0
    progress: dict[str, Any] = {"percent": int(fraction * 100)}
    if start is not None and 0 < fraction < 1:
        elapsed = (now - start).total_seconds()
        eta = elapsed * (1 - fraction) / fraction
        progress.update(etaSeconds=int(eta), eta=format_eta(eta))
    if last_report is not None:
        progress["lastReportTime"] = timestamp(last_report)
    return progress


def search_phase(
    previous: dict[str, Any],
    trials: list[dict[str, Any]],
    *,
    metric: str,
    planned: int,
    best: dict[str, Any] | None,
    failed_limit_hit: bool,
    finished: bool,
    promote: str | None,
    promote_failure: dict[str, Any] | None,
    output_uri: str,
    generation: int | None,
    now: datetime,
) -> dict[str, Any]:
    """phase, reason, message and conditions of the search job.

    `finished`: no trial will be launched and none is active. `promote`: None (no promote Job yet),
    "active", "succeeded" or "failed".
    """
    stamp = timestamp(now)
    conditions = list(previous.get("conditions") or [])

    def cond(type_: str, status: bool, reason: str, message: str) -> None:
        nonlocal conditions
        conditions = set_condition(conditions, type_, status, reason, message, now=stamp, generation=generation)

    def finish(phase: str, reason: str, message: str) -> dict[str, Any]:
        return {"phase": phase, "reason": reason, "message": message, "conditions": conditions}

    if previous.get("phase") in r.TERMINAL_PHASES:
        return finish(previous["phase"], previous.get("reason", ""), previous.get("message", ""))
    counts = {state: sum(1 for t in trials if t["state"] == state) for state in r.TRIAL_STATES}
    tally = ", ".join(f"{n} {state[0].lower() + state[1:]}" for state, n in counts.items() if n)
    summary = f"{len(trials)} of {planned} trials ({tally or 'none yet'}); {best_summary(best, metric)}"
    if finished and (failed_limit_hit or best is None):
        reason = r.TOO_MANY_TRIALS_FAILED if failed_limit_hit else r.NO_SUCCESSFUL_TRIAL
        message = f"search stopped: {summary}; {r.FAILURE_HINTS[reason]}"
        cond(r.COND_RUNNING, False, reason, message)
        cond(r.COND_SUCCEEDED, False, reason, "the search did not finish")
        cond(r.COND_FAILED, True, reason, message)
        return finish(r.FAILED, reason, message)
    if finished and promote == "failed":
        detail = (promote_failure or {}).get("message") or "the promote Job failed"
        message = f"moving the best trial's model to {output_uri} failed: {detail}"
        cond(r.COND_RUNNING, False, r.PROMOTION_FAILED, message)
        cond(r.COND_SUCCEEDED, False, r.PROMOTION_FAILED, "the best model was not promoted")
        cond(r.COND_FAILED, True, r.PROMOTION_FAILED, message)
        return finish(r.FAILED, r.PROMOTION_FAILED, message)
    if finished and promote == "succeeded":
        message = f"search finished: {summary}; model written to {output_uri}"
        cond(r.COND_RUNNING, False, r.COMPLETED, "the search finished")
        cond(r.COND_SUCCEEDED, True, r.COMPLETED, message)
        cond(r.COND_FAILED, False, r.COMPLETED, "the search finished")
        return finish(r.SUCCEEDED, r.COMPLETED, message)
    cond(r.COND_FAILED, False, r.NOT_FINISHED, "no failure")
    cond(r.COND_SUCCEEDED, False, r.NOT_FINISHED, "the search has not finished")
    if finished:
        message = f"moving {best['name']}'s model to {output_uri}: {summary}"  # type: ignore[index]
        cond(r.COND_RUNNING, True, r.PROMOTING, message)
        return finish(r.RUNNING, r.PROMOTING, message)
    if counts[r.TRIAL_RUNNING] or any(t["state"] in r.TRIAL_FINISHED_STATES for t in trials):
        cond(r.COND_RUNNING, True, r.SEARCHING, summary)
        return finish(r.RUNNING, r.SEARCHING, summary)
    # Only pending trials: say why the first one waits (queue, scheduling, image...).
    waiting = next((t for t in trials if t["state"] == r.TRIAL_PENDING), None)
    reason = (waiting or {}).get("reason") or r.CREATED
    message = f"{waiting['name']}: {waiting.get('message') or 'starting'}" if waiting else "launching the first trials"
    cond(r.COND_RUNNING, False, reason, message)
    return finish(r.QUEUED if reason == r.WAITING_FOR_ADMISSION else r.STARTING, reason, message)
