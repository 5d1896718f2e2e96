"""Pod status as the kubelet reports it, built from the runtime's container records (pure functions)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from ..conditions import format_time, set_condition

SANDBOX_IP = "127.0.0.1"
OOM_EXIT_CODE = 137
# Where a container writes its termination message unless its terminationMessagePath says otherwise.
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
MAX_TERMINATION_MESSAGE_BYTES = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048


@dataclass
class ContainerRun:
    """What the runtime knows about one container (mutable; the worker updates it)."""

    name: str
    image: str
    state: str = "waiting"  # waiting | running | terminated
    reason: str = "ContainerCreating"
    message: str = ""
    exit_code: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    restart_count: int = 0
    pid: int | None = None
    last_state: dict = field(default_factory=dict)
    image_id: str = ""  # the image runtime's real image ID; "sandbox://IMAGE" otherwise

    def terminated_state(self) -> dict:
        state = {
            "exitCode": self.exit_code,
            "reason": self.reason,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "containerID": self.container_id(),
        }
        if self.message:
            state["message"] = self.message
        return {"terminated": state}

    def container_id(self) -> str:
        return f"process://{self.pid}" if self.pid else ""


def container_status(run: ContainerRun) -> dict:
    if run.state == "running":
        state = {"running": {"startedAt": run.started_at}}
    elif run.state == "terminated":
        state = run.terminated_state()
    else:
        state = {"waiting": {"reason": run.reason, **({"message": run.message} if run.message else {})}}
    status = {
        "name": run.name,
        "image": run.image,
        "imageID": run.image_id or f"sandbox://{run.image}",
        "ready": run.state == "running",
        "started": run.state == "running",
        "restartCount": run.restart_count,
        "state": state,
        "lastState": run.last_state,
    }
    if run.pid:
        status["containerID"] = run.container_id()
    return status


def exit_reason(exit_code: int, killed_by_kubelet: bool) -> str:
    if exit_code == 0:
        return "Completed"
    # A SIGKILL we did not send is what the kernel's OOM killer looks like from outside.
    if exit_code == OOM_EXIT_CODE and not killed_by_kubelet:
        return "OOMKilled"
    return "Error"


def exit_code_of(returncode: int) -> int:
    """Popen's returncode (negative = killed by signal N) as a container runtime reports it (128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


def termination_message(file_content: bytes, log_tail: bytes, *, failed: bool, fallback_to_logs: bool) -> str:
    message = file_content[:MAX_TERMINATION_MESSAGE_BYTES]
    if not message.strip() and failed and fallback_to_logs:
        lines = log_tail.splitlines(keepends=True)[-FALLBACK_LOG_LINES:]
        message = b"".join(lines)[-FALLBACK_LOG_BYTES:]
    return message.decode(errors="replace")


def pod_phase(restart_policy: str, init_runs: list[ContainerRun], runs: list[ContainerRun]) -> str:
    """Phase from container states; `restart_policy` "Never" also gives the final phase of a stopping pod."""
    for run in init_runs:
        if run.state == "terminated" and run.exit_code != 0 and restart_policy == "Never":
            return "Failed"
    if not all(run.state == "terminated" and run.exit_code == 0 for run in init_runs):
        return "Pending"
    if runs and all(run.state == "terminated" for run in runs):
        all_ok = all(run.exit_code == 0 for run in runs)
        if restart_policy == "Never" or (restart_policy == "OnFailure" and all_ok):
            return "Succeeded" if all_ok else "Failed"
        return "Running"
    if any(run.state in ("running", "terminated") or run.restart_count for run in runs):
        return "Running"
    return "Pending"


def pod_conditions(
    existing: list[dict] | None,
    phase: str,
    init_runs: list[ContainerRun],
    runs: list[ContainerRun],
    now: dt.datetime,
    *,
    sandbox_ready: bool,
) -> list[dict]:
    conditions = list(existing or [])
    if not any(c.get("type") == "PodScheduled" for c in conditions):
        conditions.append({"type": "PodScheduled", "status": "True", "lastTransitionTime": format_time(now)})
    conditions = set_condition(
        conditions, "PodReadyToStartContainers", "True" if sandbox_ready else "False", "", "", now
    )
    pending_init = [run.name for run in init_runs if not (run.state == "terminated" and run.exit_code == 0)]
    if pending_init:
        conditions = set_condition(
            conditions,
            "Initialized",
            "False",
            "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(pending_init)}]",
            now,
        )
    else:
        conditions = set_condition(conditions, "Initialized", "True", "", "", now)
    unready = [run.name for run in runs if run.state != "running"]
    if phase in ("Succeeded", "Failed"):
        reason, message, status = "PodCompleted", "", "False"
    elif unready:
        reason, message, status = (
            "ContainersNotReady",
            f"containers with unready status: [{' '.join(unready)}]",
            "False",
        )
    else:
        reason, message, status = "", "", "True"
    conditions = set_condition(conditions, "ContainersReady", status, reason, message, now)
    conditions = set_condition(conditions, "Ready", status, reason, message, now)
    return [_drop_empty(condition) for condition in conditions]


def _drop_empty(condition: dict) -> dict:
    return {key: value for key, value in condition.items() if value != ""}


def build_pod_status(
    existing: dict | None,
    restart_policy: str,
    init_runs: list[ContainerRun],
    runs: list[ContainerRun],
    now: dt.datetime,
    *,
    start_time: str,
    phase: str | None = None,
    sandbox_ready: bool = True,
) -> dict:
    """The complete status to write.

    The kubelet owns PodReadyToStartContainers, Initialized, ContainersReady and Ready; other conditions in
    `existing` (PodScheduled, DisruptionTarget, readiness gates) are kept as they are.
    """
    phase = phase or pod_phase(restart_policy, init_runs, runs)
    status = {
        "phase": phase,
        "conditions": pod_conditions(
            (existing or {}).get("conditions"), phase, init_runs, runs, now, sandbox_ready=sandbox_ready
        ),
        "hostIP": SANDBOX_IP,
        "hostIPs": [{"ip": SANDBOX_IP}],
        "podIP": SANDBOX_IP,
        "podIPs": [{"ip": SANDBOX_IP}],
        "startTime": start_time,
        "containerStatuses": [container_status(run) for run in runs],
        "qosClass": "BestEffort",
    }
    if init_runs:
        status["initContainerStatuses"] = [container_status(run) for run in init_runs]
    return status
