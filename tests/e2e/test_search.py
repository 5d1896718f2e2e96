"""Hyperparameter search end to end: a FineTuneJob with spec.hyperparameterSearch in the sandbox, with the
real operator and real trainer processes (docs/search.md).

Four trials of the tiny BERT, two at a time; one learning rate is so large that the trial's loss diverges,
and the divergence rule stops it (reason Diverged) before its last step. The operator is SIGKILLed while trials run: the
restarted one must continue the same search, neither repeating nor losing a trial.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
import yaml
from finetune_sandbox.cluster import wait_for
from prometheus_client.parser import text_string_to_metric_families
from sandbox_support import Cluster, finetunejob, kill_operator, restart_operator

pytestmark = pytest.mark.e2e

GOOD_RATES = [3.0e-3, 2.0e-3, 1.5e-3]
# Adam at this rate blows the tiny model up: its eval loss leaves the others far behind within a few steps.
HOPELESS_RATE = 0.5
# Long enough (~10 s of tiny-BERT steps) that several progress reports, and so several reconciles of the
# search, fall inside the hopeless trial's training: a stop needs one of them.
MAX_STEPS = 1000
EVAL_STEPS = 10


def search_job(name: str, namespace: str, seed: int) -> dict[str, Any]:
    return finetunejob(
        name,
        namespace,
        hyperparameters={"maxSteps": MAX_STEPS, "batchSize": 8, "evalStrategy": "steps", "evalSteps": EVAL_STEPS},
        output={"uri": f"pvc://models/out-{name}", "checkpointSteps": 1000},
        hyperparameterSearch={
            "algorithm": "grid",
            "objective": {"metric": "eval_loss", "goal": "minimize"},
            "maxTrials": 4,
            "parallelTrials": 2,
            "seed": seed,
            "earlyStopping": {"algorithm": "median", "minSteps": EVAL_STEPS, "minTrials": 1},
            "parameters": {"learningRate": {"values": [*GOOD_RATES, HOPELESS_RATE]}},
        },
    )


def seed_with_hopeless_rate_late(manifest: dict[str, Any]) -> int:
    """A seed whose grid order puts the hopeless rate third or fourth, so a finished trial exists to compare it
    with (two trials start at once; if both were running together neither could be stopped). Suggestions are
    a pure function of the seed and the trials so far, which is what makes this choice possible."""
    from finetune_operator.search.sampling import space_from_search, suggest
    from finetune_operator.spec import SEARCH_PATHS, parse_spec

    for seed in range(100):
        manifest["spec"]["hyperparameterSearch"]["seed"] = seed
        search = parse_spec(manifest["spec"]).hyperparameter_search
        space = space_from_search(search, SEARCH_PATHS.parameter_kind)
        trials: list[dict[str, Any]] = []
        for index in range(2):
            parameters = suggest("grid", space, trials, goal="minimize", seed=seed, index=index, max_trials=4)
            trials.append({"index": index, "name": f"t{index}", "parameters": parameters, "state": "Running"})
        if all(t["parameters"]["learningRate"] != HOPELESS_RATE for t in trials):
            return seed
    raise AssertionError("no seed in 0..99 puts the hopeless rate after the first two trials")


def trial_pods(cluster: Cluster, namespace: str, search: str) -> dict[str, list[str]]:
    pods: dict[str, list[str]] = {}
    for pod in cluster.core.list_namespaced_pod(namespace, label_selector=f"finetune.dev/search={search}").items:
        pods.setdefault(pod.metadata.labels["finetune.dev/job-name"], []).append(pod.metadata.name)
    return pods


def test_search_runs_trials_stops_the_hopeless_one_and_promotes_the_best(cluster: Cluster, team: str) -> None:
    name = "search"
    manifest = search_job(name, team, seed=0)
    manifest["spec"]["hyperparameterSearch"]["seed"] = seed_with_hopeless_rate_late(manifest)
    cluster.apply(manifest)

    # Kill the operator while the first two trials train; the restarted one must carry on the same search.
    def two_running() -> dict[str, Any] | None:
        status = cluster.status(team, name)
        running = [t for t in status.get("trials") or [] if t["state"] == "Running"]
        return status if len(running) == 2 else None

    wait_for(two_running, 180, interval=0.2, message="two trials running")
    kill_operator(cluster)
    restart_operator(cluster)

    status = cluster.wait_phase(team, name, "Succeeded", "Failed", timeout=420)
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    trials = status["trials"]

    # Four trials, each rate once, each with a Job of its own that ran once: nothing repeated, nothing lost.
    assert [t["name"] for t in trials] == [f"{name}-t{i}" for i in range(4)], trials
    assert sorted(t["parameters"]["learningRate"] for t in trials) == sorted([*GOOD_RATES, HOPELESS_RATE])
    # Every trial that was not stopped ran exactly one pod; a stopped one ran at most one (its Job is deleted).
    pods = trial_pods(cluster, team, name)
    assert all(len(names) == 1 for names in pods.values()), pods
    assert {t["name"] for t in trials if t["state"] != "EarlyStopped"} <= set(pods), pods

    # The hopeless trial was stopped early, before its last step, as diverged: its loss left its own start far
    # behind (or stopped being a number), whatever the other trials did.
    hopeless = next(t for t in trials if t["parameters"]["learningRate"] == HOPELESS_RATE)
    assert hopeless["state"] == "EarlyStopped", json.dumps(trials, indent=1)
    assert hopeless["reason"] == "Diverged" and "the training diverged" in hopeless["message"], hopeless
    assert hopeless["step"] < MAX_STEPS, hopeless
    wait_for(
        lambda: not cluster.batch.list_namespaced_job(team, field_selector=f"metadata.name={hopeless['name']}").items,
        30,
        message=f"{hopeless['name']}'s Job to be deleted",
    )
    events = [(e.reason, e.message) for e in cluster.events(team, name)]
    assert any(reason == "TrialEarlyStopped" and hopeless["name"] in message for reason, message in events), events

    # The best trial is the succeeded one with the lowest eval_loss, and its model is now the job's output.
    succeeded = [t for t in trials if t["state"] == "Succeeded"]
    assert succeeded, trials
    best = min(succeeded, key=lambda t: (t["objectiveValue"], t["index"]))
    assert status["bestTrial"]["name"] == best["name"], status["bestTrial"]
    assert status["bestTrial"]["objectiveValue"] == pytest.approx(best["objectiveValue"])
    assert status["outputUri"] == f"pvc://models/out-{name}"
    assert status["metrics"]["eval_loss"] == pytest.approx(best["objectiveValue"])
    output = cluster.pvc_dir(team, "models") / f"out-{name}"
    assert (output / "config.json").is_file() and (output / "metrics.json").is_file()
    assert json.loads((output / "metrics.json").read_text())["eval_loss"] == pytest.approx(
        best["objectiveValue"], rel=1e-5
    )
    assert not (output / "trials").exists(), sorted(p.name for p in output.iterdir())

    # kubectl shows the best value; the summary counts agree with the trials.
    assert status["search"]["trials"] == {
        "total": 4,
        "pending": 0,
        "running": 0,
        "succeeded": len(succeeded),
        "failed": 0,
        "earlyStopped": 4 - len(succeeded),
    }
    table = cluster.kubectl("get", "finetunejob", name, "-n", team).stdout
    assert "BEST" in table.splitlines()[0], table
    assert f"{best['objectiveValue']:.3g}"[:4] in table.splitlines()[1], table

    # Prometheus sees the same: trials by state, the best value, and each trial's own job series.
    text = urllib.request.urlopen(cluster.sandbox.metrics_url, timeout=10).read().decode()
    samples = {family.name: family.samples for family in text_string_to_metric_families(text)}
    by_state = {
        s.labels["state"]: s.value
        for s in samples["finetune_operator_search_trials"]
        if s.labels["namespace"] == team and s.labels["name"] == name
    }
    assert by_state["Succeeded"] == len(succeeded) and by_state["EarlyStopped"] == 4 - len(succeeded), by_state
    best_series = [s for s in samples["finetune_operator_search_best_objective"] if s.labels["namespace"] == team]
    assert [(s.labels["metric"], s.value) for s in best_series] == [
        ("eval_loss", pytest.approx(best["objectiveValue"]))
    ]
    trial_steps = {
        s.labels["name"]: s.value for s in samples["finetune_operator_job_step"] if s.labels["namespace"] == team
    }
    assert trial_steps[best["name"]] == MAX_STEPS, trial_steps


def test_search_stops_after_max_failed_trials_and_keeps_each_trials_reason(cluster: Cluster, team: str) -> None:
    manifest = search_job("search-fails", team, seed=3)
    manifest["spec"]["hyperparameters"]["maxSteps"] = 4
    manifest["spec"]["hyperparameterSearch"].update(
        maxTrials=4,
        parallelTrials=2,
        maxFailedTrials=2,
        earlyStopping={"algorithm": "none"},
        # Neither model exists: every trial fails on its first read, with InvalidData (no retries).
        parameters={
            "model.source": {"values": ["pvc://models/missing-a", "pvc://models/missing-b", "pvc://models/missing-c"]}
        },
    )
    cluster.apply(manifest)
    status = cluster.wait_phase(team, "search-fails", "Succeeded", "Failed", timeout=180)
    assert (status["phase"], status["reason"]) == ("Failed", "TooManyTrialsFailed"), json.dumps(status, indent=1)
    assert "maxFailedTrials" in status["message"]
    # The second failure stops launching: of the 4 planned trials, at most the one started beside the first
    # failure joins them (2 run in parallel); all ended; no promote Job is made.
    trials = status["trials"]
    assert len(trials) in (2, 3) and [t["state"] for t in trials] == ["Failed"] * len(trials), trials
    assert all(t["reason"] == "InvalidData" and "does not exist" in t["message"] for t in trials), trials
    assert "bestTrial" not in status
    jobs = sorted(j.metadata.name for j in cluster.batch.list_namespaced_job(team).items)
    assert jobs == [t["name"] for t in trials], jobs


def test_search_with_an_unknown_parameter_path_is_refused_naming_the_field(cluster: Cluster, team: str) -> None:
    manifest = search_job("search-bad", team, seed=1)
    manifest["spec"]["hyperparameterSearch"]["parameters"] = {"hyperparameters.learningRat": {"min": 1e-5, "max": 1e-3}}
    result = cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest), check=False)
    # The CRD's validation lists the searchable paths, so the API server refuses it before the operator sees it.
    assert result.returncode != 0
    assert "spec.hyperparameterSearch.parameters" in result.stderr and "learningRat" in result.stderr, result.stderr
    assert cluster.ftj(team, "search-bad") is None


def test_a_search_keeps_the_spec_it_started_with_and_warns_of_later_edits(cluster: Cluster, team: str) -> None:
    manifest = search_job("search-frozen", team, seed=5)
    manifest["spec"]["hyperparameters"]["maxSteps"] = 4
    manifest["spec"]["hyperparameterSearch"].update(
        maxTrials=2,
        parallelTrials=1,
        earlyStopping={"algorithm": "none"},
        parameters={"learningRate": {"values": [1.0e-3, 2.0e-3]}},
    )
    cluster.apply(manifest)
    wait_for(lambda: cluster.status(team, "search-frozen").get("trials"), 120, message="the first trial")

    # An edit of the space half-way: refused with a warning; the second trial still comes from the first space.
    cluster.kubectl(
        "patch",
        "ftj",
        "search-frozen",
        "-n",
        team,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"hyperparameterSearch": {"parameters": {"learningRate": {"values": [0.5, 0.6]}}}}}),
    )
    status = cluster.wait_phase(team, "search-frozen", "Succeeded", "Failed", timeout=240)
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    assert sorted(t["parameters"]["learningRate"] for t in status["trials"]) == [1.0e-3, 2.0e-3]
    assert status["search"]["spec"]["hyperparameterSearch"]["parameters"]["learningRate"]["values"] == [1.0e-3, 2.0e-3]
    warnings = [e.message for e in cluster.events(team, "search-frozen") if e.reason == "SpecChangeIgnored"]
    assert len(warnings) == 1 and "hyperparameterSearch.parameters.learningRate.values" in warnings[0], warnings
