"""API server + scheduler + Job controller + process kubelet together, on real subprocesses."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from async_wait import eventually
from finetune_sandbox.apiserver import ApiServer
from finetune_sandbox.client import ApiError, SandboxClient
from finetune_sandbox.conditions import find_condition
from finetune_sandbox.jobs import JobController
from finetune_sandbox.jobs.plan import LABEL_JOB_NAME
from finetune_sandbox.kubelet import ProcessKubelet
from finetune_sandbox.scheduler import Scheduler

NS = "default"


class Cluster:
    def __init__(self, client: SandboxClient, kubelet: ProcessKubelet, data_dir: Path) -> None:
        self.client = client
        self.kubelet = kubelet
        self.data_dir = data_dir

    async def job(self, name: str) -> dict:
        return await self.client.get("batch/v1", "jobs", NS, name)

    async def pods(self, job: str) -> list[dict]:
        listing = await self.client.list("v1", "pods", NS, label_selector=f"{LABEL_JOB_NAME}={job}")
        return sorted(listing["items"], key=lambda pod: pod["metadata"].get("creationTimestamp", ""))

    async def wait_condition(self, job: str, type_: str, timeout: float = 20.0) -> dict:
        async def check():
            return find_condition((await self.job(job)).get("status", {}).get("conditions"), type_)

        condition = await eventually(check, f"job {job} condition {type_}", timeout)
        assert condition["status"] == "True", condition
        return condition


@pytest.fixture
async def cluster(tmp_path):
    server = ApiServer(host="127.0.0.1", port=0, graceful_pod_deletion=True)
    url = await server.start()
    client = SandboxClient(url)
    kubelet = ProcessKubelet(client, tmp_path, register_log=server.set_log_path, restart_backoff_seconds=0.2)
    controllers = [
        Scheduler(client, capacity={"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": 1}),
        JobController(client),
        kubelet,
    ]
    tasks = [asyncio.create_task(controller.run()) for controller in controllers]
    yield Cluster(client, kubelet, tmp_path)
    for controller in reversed(controllers):
        await controller.stop()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await client.close()
    await server.stop()


# The container: writes a file to the PVC, prints, exits with the code its rank asks for.
SCRIPT = """
import os, sys, time, pathlib
rank = int(os.environ["RANK"])
out = pathlib.Path(os.environ["OUT"])
out.mkdir(parents=True, exist_ok=True)
(out / f"rank-{rank}.txt").write_text(os.environ["POD_NAME"])
print(f"hello from rank {rank} of {os.environ['JOB_COMPLETION_INDEX']}", flush=True)
pathlib.Path(os.environ["TERMINATION_LOG"]).write_text('{"reason": "Done", "rank": %d}' % rank)
codes = os.environ.get("EXIT_CODES", "0,0").split(",")
marker = out / f"started-{rank}"
if os.environ.get("SLEEP_FIRST") and not marker.exists():
    marker.write_text("x")
    time.sleep(60)
time.sleep(float(os.environ.get("SLEEP", "0")))
sys.exit(int(codes[rank]))
"""


def indexed_job(name: str, *, env: dict[str, str] | None = None, gpus: int = 0, **spec) -> dict:
    variables = [
        {
            "name": "RANK",
            "valueFrom": {
                "fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}
            },
        },
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "OUT", "value": "/mnt/pvc/shared/out"},
        {"name": "TERMINATION_LOG", "value": "/dev/termination-log"},
    ] + [{"name": key, "value": value} for key, value in (env or {}).items()]
    container = {
        "name": "trainer",
        "image": "finetune/trainer:test",
        "command": ["python", "-c", SCRIPT],
        "env": variables,
        "volumeMounts": [{"name": "shared", "mountPath": "/mnt/pvc/shared"}],
    }
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    body = {
        "completionMode": "Indexed",
        "completions": 2,
        "parallelism": 2,
        "backoffLimit": 0,
        "template": {
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 2,
                "containers": [container],
                "volumes": [{"name": "shared", "persistentVolumeClaim": {"claimName": "shared"}}],
            }
        },
    }
    body.update(spec)
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": NS}, "spec": body}


async def test_indexed_job_completes_with_pvc_files_logs_and_termination_messages(cluster):
    await cluster.client.create("batch/v1", "jobs", NS, indexed_job("ok"))
    await cluster.wait_condition("ok", "Complete")

    status = (await cluster.job("ok"))["status"]
    assert (status["succeeded"], status["failed"], status["completedIndexes"]) == (2, 0, "0-1")
    assert status["completionTime"] and status["startTime"]
    pods = await cluster.pods("ok")
    assert len(pods) == 2
    out = cluster.data_dir / "pvcs" / NS / "shared" / "out"
    for pod in pods:
        rank = int(pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"])
        assert (out / f"rank-{rank}.txt").read_text() == pod["metadata"]["name"]
        assert pod["status"]["phase"] == "Succeeded"
        assert pod["spec"]["nodeName"] == "sandbox"
        assert pod["status"]["podIP"] == "127.0.0.1"
        (container,) = pod["status"]["containerStatuses"]
        terminated = container["state"]["terminated"]
        assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
        assert terminated["message"] == '{"reason": "Done", "rank": %d}' % rank
        log = await cluster.client.logs(NS, pod["metadata"]["name"], "trainer")
        assert log == f"hello from rank {rank} of {rank}\n"
        # Counted pods are released from the Job's tracking finalizer.
        assert not pod["metadata"].get("finalizers")


async def test_failures_count_against_backoff_limit(cluster):
    await cluster.client.create("batch/v1", "jobs", NS, indexed_job("flaky", env={"EXIT_CODES": "0,1"}, backoffLimit=1))
    failed = await cluster.wait_condition("flaky", "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    status = (await cluster.job("flaky"))["status"]
    assert status["failed"] == 2
    index1 = [
        pod
        for pod in await cluster.pods("flaky")
        if pod["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] == "1"
    ]
    assert len(index1) == 2  # the first failure was replaced once
    assert all(pod["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] == "Error" for pod in index1)


POLICY = {
    "rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        {"action": "FailJob", "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [3]}},
    ]
}


async def test_pod_failure_policy_fails_job_at_once_on_exit_code_3(cluster):
    job = indexed_job(
        "bad",
        env={"EXIT_CODES": "3,0", "SLEEP": "0"},
        backoffLimit=5,
        podFailurePolicy=POLICY,
        podReplacementPolicy="Failed",
    )
    await cluster.client.create("batch/v1", "jobs", NS, job)
    failed = await cluster.wait_condition("bad", "Failed")
    assert failed["reason"] == "PodFailurePolicy"
    assert "failed with exit code 3 matching FailJob rule at index 1" in failed["message"]
    assert find_condition((await cluster.job("bad"))["status"]["conditions"], "FailureTarget")["status"] == "True"


async def test_disrupted_pod_is_ignored_by_policy_and_replaced(cluster):
    job = indexed_job(
        "disrupt",
        env={"SLEEP_FIRST": "1"},
        completions=1,
        parallelism=1,
        backoffLimit=0,
        podFailurePolicy=POLICY,
        podReplacementPolicy="Failed",
    )
    await cluster.client.create("batch/v1", "jobs", NS, job)

    async def running_pod():
        pods = await cluster.pods("disrupt")
        return pods and pods[0]["status"].get("phase") == "Running" and pods[0]

    first = await eventually(running_pod, "a running pod", 10)
    # Running means the process was spawned, not that it got as far as its marker: disrupted before that,
    # the replacement would sleep too (on a loaded machine the interpreter takes seconds to get there).
    marker = cluster.data_dir / "pvcs" / NS / "shared" / "out" / "started-0"

    async def marked():
        return marker.exists()

    await eventually(marked, "the first pod's marker", 30)
    await cluster.kubelet.disrupt(NS, first["metadata"]["name"])

    await cluster.wait_condition("disrupt", "Complete")
    status = (await cluster.job("disrupt"))["status"]
    assert (status["succeeded"], status["failed"]) == (1, 0)
    names = [pod["metadata"]["name"] for pod in await cluster.pods("disrupt")]
    assert first["metadata"]["name"] not in names  # the kubelet removed the disrupted pod after terminating it


async def test_suspend_deletes_pods_and_resume_recreates_them(cluster):
    await cluster.client.create("batch/v1", "jobs", NS, indexed_job("pause", env={"SLEEP": "60"}))

    async def two_running():
        pods = await cluster.pods("pause")
        return len(pods) == 2 and all(pod["status"].get("phase") == "Running" for pod in pods)

    await eventually(two_running, "two running pods", 10)
    first_names = {pod["metadata"]["name"] for pod in await cluster.pods("pause")}

    await cluster.client.patch("batch/v1", "jobs", NS, "pause", {"spec": {"suspend": True}})
    suspended = await cluster.wait_condition("pause", "Suspended")
    assert suspended["reason"] == "JobSuspended"

    async def no_pods():
        return not await cluster.pods("pause")

    await eventually(no_pods, "suspended pods to be gone", 10)
    assert (await cluster.job("pause"))["status"]["failed"] == 0

    await cluster.client.patch("batch/v1", "jobs", NS, "pause", {"spec": {"suspend": False}})

    async def resumed():
        pods = await cluster.pods("pause")
        return len(pods) == 2 and not first_names & {pod["metadata"]["name"] for pod in pods}

    await eventually(resumed, "new pods after resume", 10)
    condition = find_condition((await cluster.job("pause"))["status"]["conditions"], "Suspended")
    assert (condition["status"], condition["reason"]) == ("False", "JobResumed")


async def test_active_deadline_fails_the_job_and_removes_its_pods(cluster):
    await cluster.client.create(
        "batch/v1", "jobs", NS, indexed_job("slow", env={"SLEEP": "60"}, activeDeadlineSeconds=1)
    )
    failed = await cluster.wait_condition("slow", "Failed", timeout=20)
    assert failed["reason"] == "DeadlineExceeded"
    running = [pod for pod in await cluster.pods("slow") if pod["status"].get("phase") == "Running"]
    assert running == []


async def test_ttl_after_finished_deletes_the_job(cluster):
    await cluster.client.create("batch/v1", "jobs", NS, indexed_job("ttl", ttlSecondsAfterFinished=1))
    await cluster.wait_condition("ttl", "Complete")

    async def gone():
        try:
            await cluster.job("ttl")
        except ApiError as error:
            return error.status == 404
        return False

    await eventually(gone, "the finished job to be deleted", 10)


async def test_pod_stays_unschedulable_while_gpus_are_exhausted(cluster):
    await cluster.client.create("batch/v1", "jobs", NS, indexed_job("gpu", env={"SLEEP": "60"}, gpus=1))

    async def one_pending():
        pods = await cluster.pods("gpu")
        pending = [pod for pod in pods if not pod["spec"].get("nodeName")]
        scheduled = find_condition(pending[0]["status"].get("conditions"), "PodScheduled") if pending else None
        return len(pods) == 2 and scheduled and scheduled["status"] == "False" and scheduled

    condition = await eventually(one_pending, "an unschedulable pod", 10)
    assert condition["reason"] == "Unschedulable"
    assert condition["message"] == "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    status = (await cluster.job("gpu"))["status"]
    assert status["active"] == 2


async def test_deleting_a_running_job_removes_its_pods(cluster):
    await cluster.client.create("batch/v1", "jobs", NS, indexed_job("gone", env={"SLEEP": "60"}))

    async def two_running():
        pods = await cluster.pods("gone")
        return len(pods) == 2 and all(pod["status"].get("phase") == "Running" for pod in pods)

    await eventually(two_running, "two running pods", 10)
    await cluster.client.delete("batch/v1", "jobs", NS, "gone", propagation_policy="Background")

    async def no_pods():
        return not await cluster.pods("gone")

    # Garbage collection deletes the pods; the controller must release its tracking finalizer from them.
    await eventually(no_pods, "the deleted job's pods to be gone", 15)
