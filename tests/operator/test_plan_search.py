"""plan_search: one pass over a hyperparameter search, from what it observed (pure, no API).

A search is driven here pass by pass, its status written back as apply_plan would, its trials' Jobs
and pods changed by hand: trials start up to parallelTrials, are recorded before their children, finish,
fail or are stopped by the median rule, and the best model is promoted once nothing else runs.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from typing import Any

from finetune_operator import reasons as r
from finetune_operator.config import OperatorConfig
from finetune_operator.names import LABEL_SEARCH, promote_job_name
from finetune_operator.progress.records import JobRecord
from finetune_operator.progress.report import ProgressReport
from finetune_operator.search.plan import SearchObservation, plan_search
from finetune_operator.spec import parse_spec
from finetune_operator.status import Observed

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)
CONFIG = OperatorConfig.from_env()


def search_ftj(**search: Any) -> dict[str, Any]:
    spec = {
        "task": "text-classification",
        "model": {"source": "pvc://models/base"},
        "dataset": {"train": "pvc://data/train.csv", "validationSplit": 0.2},
        "output": {"uri": "pvc://models/out"},
        "hyperparameterSearch": {
            "algorithm": "grid",
            "objective": {"metric": "eval_loss", "goal": "minimize"},
            "maxTrials": 3,
            "parallelTrials": 2,
            "seed": 7,
            "parameters": {"learningRate": {"values": [1e-3, 2e-3, 3e-3]}},
            **search,
        },
    }
    return {
        "apiVersion": "finetune.example.com/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "s", "namespace": "ns", "uid": "uid-1", "generation": 1},
        "spec": spec,
        "status": {},
    }


def job(*conditions: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "x", "namespace": "ns"},
        "spec": {},
        "status": {"conditions": [{"type": c, "status": "True"} for c in conditions]},
    }


def pod(name: str, phase: str, message: str | None = None) -> dict[str, Any]:
    state = {"terminated": {"exitCode": 0 if phase == "Succeeded" else 1, "message": message or ""}}
    if phase == "Running":
        state = {"running": {}}
    return {
        "metadata": {"name": name, "annotations": {"batch.kubernetes.io/job-completion-index": "0"}},
        "status": {"phase": phase, "containerStatuses": [{"name": "trainer", "state": state}]},
    }


def running(trial: str) -> Observed:
    return Observed(job(), [pod(f"{trial}-0", "Running")])


def succeeded(trial: str, eval_loss: float) -> Observed:
    return Observed(job("Complete"), [pod(f"{trial}-0", "Succeeded", f'{{"metrics": {{"eval_loss": {eval_loss}}}}}')])


def failed(trial: str) -> Observed:
    message = '{"reason": "InvalidData", "message": "no label column"}'
    return Observed(job("Failed"), [pod(f"{trial}-0", "Failed", message)])


class Search:
    """A search's object and records across passes, as the operator keeps them."""

    def __init__(self, ftj: dict[str, Any]) -> None:
        self.ftj = ftj
        self.records: dict[str, JobRecord] = {}

    def record(self, run: str) -> JobRecord:
        if run not in self.records:
            self.records[run] = JobRecord("ns", run, uid="uid-1", created=NOW, gpus=1, parent="s")
        return self.records[run]

    def plan(self, children: dict[str, Observed] | None = None, now: datetime = NOW):
        status = self.ftj["status"]
        unfinished = [t["name"] for t in status.get("trials") or [] if t["state"] not in r.TRIAL_FINISHED_STATES]
        observation = SearchObservation(
            ftj=copy.deepcopy(self.ftj),
            spec=parse_spec(self.ftj["spec"]),
            children=children or {},
            parent=self.records.setdefault("s", JobRecord("ns", "s", uid="uid-1", created=NOW)),
            trials={run: self.record(run) for run in unfinished},
        )
        plan = plan_search(observation, config=CONFIG, token_of=lambda run: f"token-{run}", now=now)
        self.ftj["status"] = {**status, **plan.status}
        for run in plan.track:
            self.record(run)
        for run, fields in plan.remember.items():
            (self.records.get(run) or self.record(run)).update(**fields)
        return plan

    def trial(self, name: str) -> dict[str, Any]:
        [entry] = [t for t in self.ftj["status"].get("trials") or [] if t["name"] == name]
        return entry

    def trials(self) -> dict[str, str]:
        return {t["name"]: t["state"] for t in self.ftj["status"].get("trials") or []}


def test_a_new_search_records_parallel_trials_before_sending_their_children():
    search = Search(search_ftj())
    plan = search.plan()
    assert plan.status_first
    assert search.trials() == {"s-t0": r.TRIAL_PENDING, "s-t1": r.TRIAL_PENDING}
    assert [[c["kind"] for c in group] for group in plan.create] == [["ConfigMap", "Secret", "Service", "Job"]] * 2
    assert {group[-1]["metadata"]["name"] for group in plan.create} == {"s-t0", "s-t1"}
    # Labelled with the search's name, so their events reconcile the search job.
    assert all(child["metadata"]["labels"][LABEL_SEARCH] == "s" for group in plan.create for child in group)
    assert set(plan.track) == {"s-t0", "s-t1"} and plan.track["s-t0"]["parent"] == "s"
    assert (plan.status["phase"], plan.status["reason"]) == (r.STARTING, "Created")
    assert [e.reason for e in plan.events] == ["Created"]
    assert plan.status["search"]["spec"]["hyperparameterSearch"]["maxTrials"] == 3  # the spec it started with
    # The same pass again sends nothing new: the trials' children went out.
    again = search.plan({"s-t0": running("s-t0"), "s-t1": running("s-t1")})
    assert again.create == [] and set(search.trials().values()) == {r.TRIAL_RUNNING}


def test_a_finished_trial_frees_its_slot_for_the_next_and_is_announced():
    search = Search(search_ftj())
    search.plan()
    plan = search.plan({"s-t0": succeeded("s-t0", 0.4), "s-t1": running("s-t1")})
    assert search.trials() == {"s-t0": r.TRIAL_SUCCEEDED, "s-t1": r.TRIAL_RUNNING, "s-t2": r.TRIAL_PENDING}
    assert [group[-1]["metadata"]["name"] for group in plan.create] == ["s-t2"]
    assert [(e.reason, e.message) for e in plan.events][0] == (r.TRIAL_SUCCEEDED_EVENT, "s-t0: objective 0.4")
    assert search.ftj["status"]["phase"] == r.RUNNING and plan.events[1].type == "Normal"
    assert search.ftj["status"]["bestTrial"]["name"] == "s-t0"
    assert search.records["s"].best_objective == ("eval_loss", 0.4)


def test_the_best_model_is_promoted_once_no_trial_pod_runs_then_the_search_succeeds():
    search = Search(search_ftj(maxTrials=2))
    search.plan()
    done = {"s-t0": succeeded("s-t0", 0.4), "s-t1": succeeded("s-t1", 0.2)}
    lingering = {**done, "s-t1": Observed(job("Complete"), [*done["s-t1"].pods, pod("s-t1-x", "Running")])}
    assert search.plan(lingering).create == []  # a stopped trainer may still be writing into trials/
    plan = search.plan(done)
    [[promote]] = plan.create
    assert promote["metadata"]["name"] == promote_job_name("s")
    assert promote["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert search.ftj["status"]["phase"] == r.RUNNING
    final = search.plan({**done, promote_job_name("s"): Observed(job("Complete"))})
    assert search.ftj["status"]["phase"] == r.SUCCEEDED
    assert search.ftj["status"]["outputUri"] == "pvc://models/out"
    assert search.ftj["status"]["bestTrial"]["name"] == "s-t1"
    [event] = final.events
    assert (event.type, event.reason) == ("Normal", "Completed") and "by s-t1" in event.message
    assert search.plan(done).status == {}  # a finished search stays finished


def test_max_failed_trials_stops_the_search_keeps_each_reason_and_promotes_nothing():
    search = Search(search_ftj(maxFailedTrials=2))
    search.plan()
    plan = search.plan({"s-t0": failed("s-t0"), "s-t1": failed("s-t1")})
    trials = search.ftj["status"]["trials"]
    assert [t["reason"] for t in trials] == [r.INVALID_DATA, r.INVALID_DATA]
    assert search.ftj["status"]["phase"] == r.FAILED
    assert plan.create == [] and plan.metrics.failures == [search.ftj["status"]["reason"]]
    assert [e.type for e in plan.events] == ["Warning", "Warning", "Warning"]


def report(step: int, eval_loss: float, total_steps: int = 100) -> ProgressReport:
    return ProgressReport.model_validate(
        {
            "time": (NOW + timedelta(seconds=step)).isoformat(),
            "event": "evaluate",
            "step": step,
            "totalSteps": total_steps,
            "evalMetrics": {"eval_loss": eval_loss},
        }
    )


def test_a_trial_behind_the_median_is_stopped_status_first_then_its_job_deleted():
    rule = {"earlyStopping": {"algorithm": "median", "minSteps": 10, "minTrials": 1}}
    search = Search(search_ftj(**rule, maxTrials=2))
    search.plan()
    for step, loss in ((10, 0.5), (20, 0.3), (30, 0.2)):
        search.record("s-t0").accept(report(step, loss), NOW)
    search.plan({"s-t0": succeeded("s-t0", 0.2), "s-t1": running("s-t1")})
    search.record("s-t1").accept(report(10, 9.0), NOW)
    search.record("s-t1").accept(report(20, 12.0), NOW)
    plan = search.plan({"s-t0": succeeded("s-t0", 0.2), "s-t1": running("s-t1")})
    assert search.trials()["s-t1"] == r.TRIAL_EARLY_STOPPED
    assert plan.status_first and plan.delete_jobs == ["s-t1"]
    assert [e.reason for e in plan.events][:1] == [r.TRIAL_EARLY_STOPPED_EVENT]
    assert search.records["s-t1"].phase == r.TRIAL_EARLY_STOPPED


def first_trial_without_peers() -> Search:
    """One trial at a time, its first one running: the median rule (minTrials 2) cannot judge it yet."""
    rule = {"earlyStopping": {"algorithm": "median", "minSteps": 20, "minTrials": 2}}
    search = Search(search_ftj(**rule, maxTrials=2, parallelTrials=1))
    search.plan()
    return search


def test_a_diverging_first_trial_is_stopped_without_peers_as_diverged():
    # Issue 19: lr 0.5 went from 0.69 (untrained, step 0) to 49.2 at step 10 while no trial had completed,
    # so the median rule (minTrials 2) could not judge it.
    search = first_trial_without_peers()
    search.record("s-t0").accept(report(0, 0.693, total_steps=25), NOW)
    search.record("s-t0").accept(report(10, 49.2, total_steps=25), NOW)
    plan = search.plan({"s-t0": running("s-t0")})
    trial = search.trial("s-t0")
    assert trial["state"] == r.TRIAL_EARLY_STOPPED and trial["reason"] == r.DIVERGED
    assert trial["message"].startswith("eval_loss 49.2 at step 10 is far above its start 0.693 at step 0")
    assert plan.status_first and plan.delete_jobs == ["s-t0"]
    [event] = [e for e in plan.events if e.reason == r.TRIAL_EARLY_STOPPED_EVENT]
    assert event.type == "Warning" and event.message.startswith("s-t0 (Diverged): eval_loss 49.2")
    assert "s-t1" in search.trials()  # its slot goes to the next trial


def test_a_trial_that_diverges_across_an_operator_restart_is_judged_from_its_start_in_the_status():
    # Issue 19's search survived an operator SIGKILL: a new process holds only the evaluations reported
    # after it started, and would take the first of those for the trial's start.
    search = first_trial_without_peers()
    search.record("s-t0").accept(report(10, 0.5, total_steps=50), NOW)
    search.record("s-t0").accept(report(20, 0.6, total_steps=50), NOW)
    search.plan({"s-t0": running("s-t0")})
    assert search.trials()["s-t0"] == r.TRIAL_RUNNING
    search.records.clear()  # the restart: no records, the FineTuneJob's status as it was
    search.record("s-t0").accept(report(30, 2.0, total_steps=50), NOW)
    plan = search.plan({"s-t0": running("s-t0")})
    trial = search.trial("s-t0")
    assert trial["reason"] == r.DIVERGED, trial
    assert trial["message"].startswith("eval_loss 2 at step 30 is far above its start 0.5 at step 10")
    assert plan.delete_jobs == ["s-t0"]


def test_a_trial_at_its_final_step_is_not_stopped_but_finishes_and_counts():
    # Issue 19: a trial behind the median at its last evaluation (step 25 of 25) was stopped, which saved
    # nothing and deleted a finished run.
    rule = {"earlyStopping": {"algorithm": "median", "minSteps": 10, "minTrials": 1}}
    search = Search(search_ftj(**rule, maxTrials=2))
    search.plan()
    for step, loss in ((10, 0.5), (20, 0.3), (25, 0.2)):
        search.record("s-t0").accept(report(step, loss, total_steps=25), NOW)
    search.plan({"s-t0": succeeded("s-t0", 0.2), "s-t1": running("s-t1")})
    search.record("s-t1").accept(report(10, 0.45, total_steps=25), NOW)
    search.record("s-t1").accept(report(25, 0.6, total_steps=25), NOW)
    plan = search.plan({"s-t0": succeeded("s-t0", 0.2), "s-t1": running("s-t1")})
    assert search.trials()["s-t1"] == r.TRIAL_RUNNING and plan.delete_jobs == []
    search.plan({"s-t0": succeeded("s-t0", 0.2), "s-t1": succeeded("s-t1", 0.6)})
    assert search.trials() == {"s-t0": r.TRIAL_SUCCEEDED, "s-t1": r.TRIAL_SUCCEEDED}


def test_a_suspended_search_suspends_its_running_trials():
    search = Search(search_ftj())
    search.plan()
    children = {"s-t0": running("s-t0"), "s-t1": running("s-t1")}
    search.plan(children)
    search.ftj["spec"]["runPolicy"] = {"suspend": True}
    plan = search.plan(children)
    assert sorted(plan.suspend) == [("s-t0", True), ("s-t1", True)]


def test_an_edited_search_keeps_its_spec_and_warns_once_naming_the_fields():
    search = Search(search_ftj())
    search.plan()
    search.ftj["spec"]["hyperparameterSearch"]["maxTrials"] = 9
    search.ftj["metadata"]["generation"] = 2
    plan = search.plan()
    [warning] = [e for e in plan.events if e.reason == r.SPEC_CHANGE_IGNORED]
    assert "hyperparameterSearch.maxTrials" in warning.message
    assert not [e for e in search.plan().events if e.reason == r.SPEC_CHANGE_IGNORED]
    assert search.ftj["status"]["search"]["spec"]["hyperparameterSearch"]["maxTrials"] == 3


def test_a_running_trials_gpu_seconds_are_counted_as_they_accrue():
    search = Search(search_ftj())
    search.plan()
    children = {"s-t0": running("s-t0"), "s-t1": running("s-t1")}
    search.plan(children)
    later = search.plan(children, now=NOW + timedelta(seconds=30))
    assert later.metrics.gpu_seconds == 60.0  # two 1-GPU trials for 30 s
