"""One progress signal, two sinks: a real trainer's reports move the FineTuneJob's status and the
operator's /metrics (parsed with prometheus_client), and the series leave with the job."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from finetune_sandbox.cluster import wait_for
from prometheus_client.parser import text_string_to_metric_families
from sandbox_support import Cluster, finetunejob, progress_endpoint

pytestmark = pytest.mark.e2e


def scrape(cluster: Cluster) -> dict[str, list]:
    text = urllib.request.urlopen(cluster.sandbox.metrics_url, timeout=10).read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def job_series(cluster: Cluster, metric: str, namespace: str, name: str) -> float | None:
    for sample in scrape(cluster).get(metric, []):
        if sample.labels.get("namespace") == namespace and sample.labels.get("name") == name:
            return sample.value
    return None


# Long enough in time for several throttled status writes while training on an idle machine too (tiny BERT
# runs ~150 steps/s there; with 600 steps the first write to land was once the one at step 400, then Succeeded).
STEPS = 2400
CHECKPOINT_STEPS = 800


def test_progress_moves_status_and_metrics_and_leaves_with_the_job(cluster: Cluster, team: str) -> None:
    cluster.apply(
        finetunejob(
            "progressing",
            team,
            hyperparameters={"maxSteps": STEPS, "batchSize": 4},
            output={"checkpointSteps": CHECKPOINT_STEPS},
        )
    )

    steps_seen: set[int] = set()

    def advancing() -> bool:
        progress = cluster.status(team, "progressing").get("progress") or {}
        if progress.get("step"):
            steps_seen.add(progress["step"])
        return len(steps_seen) >= 2 or cluster.status(team, "progressing").get("phase") == "Succeeded"

    wait_for(advancing, 180, interval=0.3, message="status.progress to advance")
    status = cluster.wait_phase(team, "progressing", "Succeeded", "Failed", timeout=240)
    assert status["phase"] == "Succeeded", status
    assert len(steps_seen) >= 2, f"saw only steps {steps_seen} in status.progress while training"

    # The throttled writer lands the final report within one interval.
    def final() -> dict | None:
        progress = cluster.status(team, "progressing").get("progress") or {}
        return progress if progress.get("step") == STEPS else None

    progress = wait_for(final, 30, message="the final progress in status")
    assert progress["percent"] == 100 and progress["totalSteps"] == STEPS
    assert progress["loss"] >= 0 and progress["lastReportTime"]
    status = cluster.status(team, "progressing")
    assert status["checkpoint"]["step"] in (CHECKPOINT_STEPS, 2 * CHECKPOINT_STEPS, STEPS)
    assert status["timeToFirstStepSeconds"] > 0
    assert status["gpuSeconds"] == 0  # no GPUs asked for

    assert job_series(cluster, "finetune_operator_job_step", team, "progressing") == STEPS
    assert job_series(cluster, "finetune_operator_job_progress_ratio", team, "progressing") == 1.0
    assert job_series(cluster, "finetune_operator_job_phase", team, "progressing") is not None
    printed = cluster.kubectl("get", "ftj", "progressing", "-n", team).stdout.splitlines()[1].split()
    assert printed[2:4] == ["100", str(STEPS)], printed

    cluster.kubectl("delete", "ftj", "progressing", "-n", team)
    wait_for(
        lambda: job_series(cluster, "finetune_operator_job_phase", team, "progressing") is None,
        30,
        message="the deleted job's series to leave /metrics",
    )
    assert not [s for samples in scrape(cluster).values() for s in samples if s.labels.get("name") == "progressing"]


def test_the_endpoint_refuses_a_report_without_the_jobs_token(cluster: Cluster, team: str) -> None:
    cluster.apply(finetunejob("guarded", team, runPolicy={"suspend": True}))
    cluster.wait_phase(team, "guarded", "Suspended", timeout=60)
    url, tls, _ = progress_endpoint(cluster, team, "guarded")
    body = json.dumps({"time": "2026-11-28T12:00:00Z", "event": "log", "step": 1, "totalSteps": 2}).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={"Authorization": "Bearer forged"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10, context=tls)
    assert refused.value.code == 403
    assert "progress" not in cluster.status(team, "guarded")
