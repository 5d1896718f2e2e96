"""The kubelet's image runtime: pods run from their images with buildah (no container engine, no pulls).

Needs buildah and, as root, the images in its local storage: the Debian base (images/local-base.sh makes it)
for the runtime's own checks, the trainer image (`make images`) for the demo. Skips with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from finetune_sandbox.cluster import IMAGE_OPERATOR_IMAGE, IMAGE_TRAINER_IMAGE, OPERATOR_POD
from finetune_sandbox.kubelet.image_runtime.buildah import WORKING_CONTAINER_PREFIX
from kubelet_harness import NS, phase_is, running_kubelet, wait_pod
from test_demo import ACCURACY_LINE, processes_using

pytestmark = [pytest.mark.e2e]

BASE_IMAGE = os.environ.get("FINETUNE_TEST_BASE_IMAGE", "docker.io/library/debian:bookworm-slim")
# Buildah's working containers start slower than the process runtime's subprocesses.
POD_TIMEOUT = 30.0


def image_missing(image: str) -> str | None:
    if shutil.which("buildah") is None:
        return "buildah is not installed"
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return "the image runtime mounts and chroots: run as root"
    if subprocess.run(["buildah", "inspect", "--type", "image", image], capture_output=True).returncode != 0:
        return f"image {image} is not in buildah's local storage"
    return None


def working_containers() -> list[str]:
    out = subprocess.run(["buildah", "containers", "--format", "{{.ContainerName}}"], capture_output=True, text=True)
    return [name for name in out.stdout.split() if name.startswith(WORKING_CONTAINER_PREFIX)]


@pytest.fixture
async def image_kubelet(tmp_path):
    reason = image_missing(BASE_IMAGE)
    if reason:
        pytest.skip(f"image runtime: {reason} (make it with images/local-base.sh {BASE_IMAGE})")
    options = {"runtime": "image", "extra_env": {"SANDBOX": "yes"}, "restart_backoff_seconds": 0.1}
    async with running_kubelet(tmp_path, **options) as (client, kubelet):
        yield client, kubelet, tmp_path


def python_pod(name: str, code: str, **container) -> dict:
    spec = container.pop("pod", {})
    body = {"name": "main", "image": BASE_IMAGE, "command": ["python3", "-c", code], **container}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"nodeName": "sandbox", "restartPolicy": "Never", "containers": [body], **spec},
    }


CHECKS = r"""
import json, os, socket, subprocess, sys
result = {
    "uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
    "id_u": subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip(),
    "cwd": os.getcwd(), "env": {k: os.environ.get(k) for k in ("GREETING", "LANG", "SANDBOX", "MASTER_ADDR",
                                                               "OUT", "HOME", "HOSTNAME", "VIRTUAL_ENV")},
    "argv": sys.argv[1:], "python": sys.executable,
    "config": open("/etc/app/config.txt").read(),
    "os_release": open("/etc/os-release").read().splitlines()[0],
}
try:
    open("/etc/should-fail", "w")
    result["root"] = "writable"
except OSError as error:
    result["root"] = error.strerror
try:
    open("/etc/app/new", "w")
    result["config_mount"] = "writable"
except OSError as error:
    result["config_mount"] = error.strerror
with socket.create_server(("127.0.0.1", 0)) as server:
    result["loopback"] = server.getsockname()[0]
open("/data/out/result.json", "w").write(json.dumps(result))
open("/scratch/tmp-file", "w").write("scratch")
open("/dev/termination-log", "w").write("finished with 3")
print("checks done", flush=True)
sys.exit(3)
"""


async def test_a_pod_runs_from_its_image_as_its_user_with_env_volumes_and_a_read_only_root(image_kubelet):
    client, kubelet, data_dir = image_kubelet
    await client.create("v1", "configmaps", NS, {"metadata": {"name": "app"}, "data": {"config.txt": "lr=1"}})
    body = python_pod(
        "checks",
        CHECKS,
        args=["$(GREETING)", "/data/out"],
        env=[
            {"name": "GREETING", "value": "hello"},
            {"name": "SANDBOX", "value": "from-pod"},
            {"name": "MASTER_ADDR", "value": "checks-0.job.default.svc"},
            {"name": "OUT", "value": "/data/out/result.json"},
        ],
        securityContext={"readOnlyRootFilesystem": True, "runAsGroup": 2000},
        volumeMounts=[
            {"name": "config", "mountPath": "/etc/app", "readOnly": True},
            {"name": "data", "mountPath": "/data/out"},
            {"name": "scratch", "mountPath": "/scratch"},
        ],
        pod={
            "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 3000},
            "volumes": [
                {"name": "config", "configMap": {"name": "app"}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "results"}},
                {"name": "scratch", "emptyDir": {}},
            ],
        },
    )
    await client.create("v1", "pods", NS, body)
    done = await wait_pod(client, "checks", phase_is("Succeeded", "Failed"), timeout=POD_TIMEOUT)
    status = done["status"]["containerStatuses"][0]
    terminated = status["state"]["terminated"]
    log = await client.logs(NS, "checks")
    assert done["status"]["phase"] == "Failed", log
    assert (terminated["exitCode"], terminated["reason"], terminated["message"]) == (3, "Error", "finished with 3")
    assert log == "checks done\n"
    assert status["imageID"].startswith("sha256:")

    claim = data_dir / "pvcs" / NS / "results"
    result = json.loads((claim / "result.json").read_text())
    assert (result["uid"], result["gid"], result["id_u"]) == (1000, 2000, "1000")
    assert result["groups"] == [2000, 3000]
    # The image's Python and files, not this machine's.
    assert result["python"] == "/usr/bin/python3" and "Debian GNU/Linux 12" in result["os_release"]
    assert result["root"] == "Read-only file system"
    assert result["config_mount"] == "Read-only file system"
    assert result["config"] == "lr=1"
    assert result["loopback"] == "127.0.0.1"
    # Volume paths stay container paths; cluster DNS names point at this machine; extra_env wins.
    assert result["argv"] == ["hello", "/data/out"]
    assert result["env"] == {
        "GREETING": "hello",
        "LANG": "C.UTF-8",
        "SANDBOX": "yes",
        "MASTER_ADDR": "127.0.0.1",
        "OUT": "/data/out/result.json",
        "HOME": "/",
        "HOSTNAME": "checks",
        "VIRTUAL_ENV": None,
    }
    assert result["cwd"] == "/"
    # Written from inside as the container's user, into the folders the kubelet owns.
    assert (claim / "result.json").stat().st_uid == 1000
    scratch = data_dir / "pods" / NS / "checks" / "volumes" / "scratch" / "tmp-file"
    assert scratch.read_text() == "scratch"

    # The working container goes with the pod; nothing stays mounted on this machine.
    await client.delete("v1", "pods", NS, "checks")
    await wait_pod(client, "checks", lambda current: current is None, timeout=POD_TIMEOUT)
    for _ in range(200):
        if not kubelet.workers and not [name for name in working_containers() if "-checks-main-" in name]:
            break
        await asyncio.sleep(0.05)
    assert not [name for name in working_containers() if "-checks-main-" in name]
    assert str(data_dir) not in Path("/proc/self/mountinfo").read_text()


async def test_sigterm_reaches_the_container_process_and_ends_it_with_143(image_kubelet):
    client, kubelet, data_dir = image_kubelet
    code = (
        "import signal, sys, time\n"
        "def stop(*_):\n"
        "    open('/dev/termination-log', 'w').write('stopped by SIGTERM')\n"
        "    sys.exit(143)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "print('ready', flush=True)\n"
        "time.sleep(120)\n"
    )
    await client.create("v1", "pods", NS, python_pod("term", code, pod={"terminationGracePeriodSeconds": 20}))
    await wait_pod(client, "term", phase_is("Running"), timeout=POD_TIMEOUT)
    worker = kubelet.workers[(NS, "term")]
    for _ in range(200):
        if "ready" in await client.logs(NS, "term"):
            break
        await asyncio.sleep(0.05)
    started = time.monotonic()
    await client.delete("v1", "pods", NS, "term")
    await wait_pod(client, "term", lambda current: current is None, timeout=POD_TIMEOUT)
    assert time.monotonic() - started < 10  # ended by SIGTERM, not by the SIGKILL after the grace period
    run = worker.runs[0]
    assert (run.exit_code, run.message) == (143, "stopped by SIGTERM")


async def test_a_restarted_container_starts_from_a_fresh_writable_layer(image_kubelet):
    client, _, data_dir = image_kubelet
    # First start: leaves a file in the image's root filesystem and fails; the restart must not see it.
    code = (
        "import os, pathlib, sys\n"
        "count = pathlib.Path('/state/starts')\n"
        "n = int(count.read_text()) if count.exists() else 0\n"
        "count.write_text(str(n + 1))\n"
        "print(f'start {n}: leftover={os.path.exists(\"/leftover\")}', flush=True)\n"
        "pathlib.Path('/leftover').write_text('x')\n"
        "sys.exit(0 if n else 1)\n"
    )
    body = python_pod(
        "again",
        code,
        volumeMounts=[{"name": "state", "mountPath": "/state"}],
        pod={"restartPolicy": "OnFailure", "volumes": [{"name": "state", "emptyDir": {}}]},
    )
    await client.create("v1", "pods", NS, body)
    done = await wait_pod(client, "again", phase_is("Succeeded", "Failed"), timeout=POD_TIMEOUT)
    assert done["status"]["phase"] == "Succeeded"
    assert done["status"]["containerStatuses"][0]["restartCount"] == 1
    assert await client.logs(NS, "again") == "start 0: leftover=False\nstart 1: leftover=False\n"
    # The first start's working container is gone already; the second goes with the pod.
    for _ in range(100):
        if len([name for name in working_containers() if "-again-main-" in name]) == 1:
            break
        await asyncio.sleep(0.05)
    assert len([name for name in working_containers() if "-again-main-" in name]) == 1


async def test_the_image_cmd_runs_when_the_pod_sets_no_command(image_kubelet):
    client, _, _ = image_kubelet
    # The Debian base's CMD is /bin/bash: with args it gets no ENTRYPOINT, so args alone replace CMD.
    body = python_pod("cmd", "", args=["/bin/sh", "-c", "echo from-args; exit 4"])
    del body["spec"]["containers"][0]["command"]
    await client.create("v1", "pods", NS, body)
    done = await wait_pod(client, "cmd", phase_is("Succeeded", "Failed"), timeout=POD_TIMEOUT)
    assert done["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 4
    assert await client.logs(NS, "cmd") == "from-args\n"


async def test_an_image_missing_locally_waits_with_image_pull_errors(image_kubelet):
    client, _, _ = image_kubelet
    body = python_pod("absent", "print(1)")
    body["spec"]["containers"][0]["image"] = "localhost/finetune-no-such-image:0"

    def pulling(current):
        waiting = (current or {}).get("status", {}).get("containerStatuses", [{}])[0].get("state", {}).get("waiting")
        return waiting and waiting["reason"] in ("ErrImagePull", "ImagePullBackOff") and waiting

    await client.create("v1", "pods", NS, body)
    done = await wait_pod(client, "absent", pulling, timeout=10)
    assert done["status"]["phase"] == "Pending"
    waiting = done["status"]["containerStatuses"][0]["state"]["waiting"]
    assert "localhost/finetune-no-such-image:0" in waiting["message"]


@pytest.mark.slow
def test_demo_runs_the_operator_image_and_trains_with_the_trainer_image(tmp_path: Path) -> None:
    reason = image_missing(IMAGE_OPERATOR_IMAGE) or image_missing(IMAGE_TRAINER_IMAGE)
    if reason:
        if os.environ.get("FINETUNE_REQUIRE_IMAGES") == "1":
            pytest.fail(f"image runtime demo: {reason}")
        pytest.skip(f"image runtime demo: {reason} (build it with `make images`)")
    data_dir = tmp_path / "demo"
    ftjob = shutil.which("ftjob") or str(Path(sys.executable).with_name("ftjob"))

    result = subprocess.run(
        [ftjob, "demo", "--images", "--data-dir", str(data_dir), "--timeout", "540"],
        capture_output=True,
        text=True,
        timeout=600,
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Result: Succeeded (Completed)" in result.stdout, output[-4000:]
    accuracy = ACCURACY_LINE.search(result.stdout)
    assert accuracy is not None, result.stdout
    assert float(accuracy.group(2)) / 100 > float(accuracy.group(1)) / 100, accuracy.group(0)
    model_dir = data_dir / "pvcs" / "default" / "models" / "sentiment-minilm"
    assert (model_dir / "model.safetensors").exists() and (model_dir / "metrics.json").exists()
    # Written by the trainer image's process as the pod's user (the process runtime writes as this user, root).
    assert (model_dir / "model.safetensors").stat().st_uid == 1000
    # The operator that reconciled the job ran from its image, as the pod of its Deployment: its log (the
    # kubelet's, of that pod's container) shows it creating the training Job.
    operator_log = data_dir / "pods" / "finetune-system" / OPERATOR_POD / "operator.log"
    assert "sentiment-minilm" in operator_log.read_text(errors="replace"), operator_log.read_text()[-2000:]
    assert "operator: localhost/finetune-operator:0.1.0" in result.stdout
    assert processes_using(data_dir) == []
    assert not [name for name in working_containers() if "-sentiment-minilm-" in name or OPERATOR_POD in name]
