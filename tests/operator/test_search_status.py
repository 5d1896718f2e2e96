"""A search's status from its trials: each trial's state and objective, the search's phase, progress and
message (pure functions of search/status.py)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from finetune_operator import reasons as r
from finetune_operator.progress.records import JobRecord
from finetune_operator.progress.report import ProgressReport
from finetune_operator.search.status import (
    new_trial,
    observe_trial,
    search_phase,
    search_progress,
    trial_output_uri,
)
from finetune_operator.spec import parse_spec
from finetune_operator.status import Observed

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)
SPEC = parse_spec(
    {
        "task": "text-classification",
        "model": {"source": "pvc://models/base"},
        "dataset": {"train": "pvc://data/train.csv", "validationSplit": 0.2},
        "output": {"uri": "pvc://models/out/trials/s-t0"},
    }
)


def job(*conditions: str) -> dict:
    return {
        "metadata": {"name": "s-t0", "namespace": "ns"},
        "spec": {},
        "status": {"conditions": [{"type": c, "status": "True"} for c in conditions]},
    }


def pod(phase: str, message: str | None = None) -> dict:
    state = {"terminated": {"exitCode": 0, "message": message}} if message else {"running": {}}
    return {
        "metadata": {"name": "s-t0-0-abc", "annotations": {"batch.kubernetes.io/job-completion-index": "0"}},
        "status": {"phase": phase, "containerStatuses": [{"name": "trainer", "state": state}]},
    }


def report(step: int, event: str = "evaluate", **metrics: float) -> ProgressReport:
    return ProgressReport.model_validate(
        {
            "time": (NOW + timedelta(seconds=step)).isoformat(),
            "event": event,
            "step": step,
            "totalSteps": 100,
            "evalMetrics": metrics,
        }
    )


def record_with(*reports: ProgressReport) -> JobRecord:
    record = JobRecord("ns", "s-t0", parent="s")
    for item in reports:
        record.accept(item, item.time)
    return record


def test_a_trial_writes_into_its_own_folder_under_the_jobs_output():
    assert trial_output_uri("pvc://models/out/", "s-t3") == "pvc://models/out/trials/s-t3"
    assert new_trial("s-t3", 3, {"learningRate": 1e-4}, "s3://b/p")["outputUri"] == "s3://b/p/trials/s-t3"


def test_running_trial_records_each_evaluation_of_the_objective_once():
    # Interval reports repeat the last evaluation: only new evaluations become history points; the evaluation
    # of the untrained model (step 0) is the same for every trial and is left out.
    record = record_with(
        report(0, eval_loss=0.7),
        report(10, eval_loss=0.6),
        report(12, "interval", eval_loss=0.6),
        report(20, eval_loss=0.5),
    )
    entry = observe_trial(
        new_trial("s-t0", 0, {}, "pvc://o/x"),
        SPEC,
        Observed(job=job(), pods=[pod("Running")]),
        record,
        metric="eval_loss",
        final_metrics=None,
        now=NOW,
    )
    assert entry["state"] == r.TRIAL_RUNNING
    assert entry["history"] == [{"step": 10, "value": 0.6}, {"step": 20, "value": 0.5}]
    assert entry["objectiveValue"] == 0.5 and entry["step"] == 20 and entry["totalSteps"] == 100


def test_succeeded_trial_takes_its_objective_from_the_termination_message():
    record = record_with(report(10, eval_loss=0.6))
    entry = observe_trial(
        {**new_trial("s-t0", 0, {}, "pvc://o/x"), "state": r.TRIAL_RUNNING},
        SPEC,
        Observed(job=job("Complete"), pods=[pod("Succeeded", "{}")]),
        record,
        metric="eval_loss",
        final_metrics={"eval_loss": 0.4200000123, "eval_accuracy": 0.9},
        now=NOW,
    )
    assert entry["state"] == r.TRIAL_SUCCEEDED
    assert entry["objectiveValue"] == 0.42  # six significant digits: what `kubectl get` shows as BEST
    assert entry["metrics"] == {"eval_loss": 0.42, "eval_accuracy": 0.9}
    assert "completionTime" in entry


def test_succeeded_trial_without_the_objective_fails_and_names_what_was_reported():
    entry = observe_trial(
        new_trial("s-t0", 0, {}, "pvc://o/x"),
        SPEC,
        Observed(job=job("Complete"), pods=[pod("Succeeded", "{}")]),
        None,
        metric="eval_acuracy",
        final_metrics={"eval_accuracy": 0.9},
        now=NOW,
    )
    assert entry["state"] == r.TRIAL_FAILED and entry["reason"] == r.OBJECTIVE_MISSING
    assert "eval_acuracy" in entry["message"] and "eval_accuracy" in entry["message"]


def test_failed_trial_keeps_the_failure_reason():
    failed = job("Failed")
    failed["status"]["failed"] = 1
    oom = {
        "metadata": {"name": "s-t0-0-x", "annotations": {"batch.kubernetes.io/job-completion-index": "0"}},
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {
                    "name": "trainer",
                    "state": {
                        "terminated": {
                            "exitCode": 4,
                            "message": json.dumps({"reason": "OutOfMemory", "message": "CUDA out of memory"}),
                        }
                    },
                }
            ],
        },
    }
    entry = observe_trial(
        new_trial("s-t0", 0, {}, "pvc://o/x"),
        SPEC,
        Observed(job=failed, pods=[oom]),
        None,
        metric="eval_loss",
        final_metrics=None,
        now=NOW,
    )
    assert entry["state"] == r.TRIAL_FAILED and entry["reason"] == r.OUT_OF_MEMORY


def trials(*states: str) -> list[dict]:
    return [{**new_trial(f"s-t{i}", i, {"learningRate": 1e-4}, "pvc://o/x"), "state": s} for i, s in enumerate(states)]


def phase(trial_list: list[dict], **kwargs) -> dict:
    arguments = dict(
        metric="eval_loss",
        planned=4,
        best=None,
        failed_limit_hit=False,
        finished=False,
        promote=None,
        promote_failure=None,
        output_uri="pvc://o/x",
        generation=1,
        now=NOW,
    )
    arguments.update(kwargs)
    return search_phase({}, trial_list, **arguments)


def test_search_phase_follows_its_trials_to_promotion():
    assert phase(trials(r.TRIAL_PENDING))["phase"] == r.STARTING
    running = phase(trials(r.TRIAL_RUNNING, r.TRIAL_PENDING))
    assert running["phase"] == r.RUNNING and running["reason"] == r.SEARCHING
    assert running["message"].startswith("2 of 4 trials (1 pending, 1 running)")
    best = {**trials(r.TRIAL_SUCCEEDED)[0], "objectiveValue": 0.3}
    promoting = phase(trials(*[r.TRIAL_SUCCEEDED] * 4), best=best, finished=True)
    assert (promoting["phase"], promoting["reason"]) == (r.RUNNING, r.PROMOTING)
    done = phase(trials(*[r.TRIAL_SUCCEEDED] * 4), best=best, finished=True, promote="succeeded")
    assert (done["phase"], done["reason"]) == (r.SUCCEEDED, r.COMPLETED)
    assert "best eval_loss 0.3 by s-t0 (learningRate=0.0001)" in done["message"]


def test_search_fails_with_a_reason_that_says_what_to_do():
    too_many = phase(trials(r.TRIAL_FAILED, r.TRIAL_FAILED), failed_limit_hit=True, finished=True)
    assert (too_many["phase"], too_many["reason"]) == (r.FAILED, r.TOO_MANY_TRIALS_FAILED)
    assert "maxFailedTrials" in too_many["message"]
    nothing = phase(trials(r.TRIAL_EARLY_STOPPED), finished=True)
    assert nothing["reason"] == r.NO_SUCCESSFUL_TRIAL
    best = {**trials(r.TRIAL_SUCCEEDED)[0], "objectiveValue": 0.3}
    promotion = phase(
        trials(r.TRIAL_SUCCEEDED),
        best=best,
        finished=True,
        promote="failed",
        promote_failure={"message": "permission denied"},
    )
    assert promotion["reason"] == r.PROMOTION_FAILED and "permission denied" in promotion["message"]


def test_search_progress_counts_finished_trials_whole_and_running_ones_by_their_steps():
    record = record_with(report(50, "interval"))
    progress = search_progress(
        trials(r.TRIAL_SUCCEEDED, r.TRIAL_RUNNING), 4, {"s-t1": record}, NOW - timedelta(seconds=150), NOW
    )
    # 1.5 of 4 trials in 150 s: 250 s to go.
    assert progress["percent"] == 37
    assert progress["etaSeconds"] == 250 and progress["eta"] == "4m10s"
    assert progress["lastReportTime"] == "2026-11-28T12:00:50Z"
