"""The process kubelet running plain pods against the sandbox API server (no Job controller involved)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time

import pytest
from finetune_sandbox.conditions import find_condition
from kubelet_harness import NS, phase_is, running_kubelet, wait_pod


@pytest.fixture
async def env(tmp_path):
    options = {"extra_env": {"SANDBOX": "yes"}, "restart_backoff_seconds": 0.1}
    async with running_kubelet(tmp_path, **options) as (client, kubelet):
        yield client, kubelet, tmp_path


def pod(name: str, code: str, *, restart: str = "Never", **spec) -> dict:
    container = {"name": "main", "image": "img:1", "command": ["python", "-c", code]}
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"nodeName": "sandbox", "restartPolicy": restart, "containers": [container], **spec},
    }


def main_status(pod):
    return pod["status"]["containerStatuses"][0]


async def test_volumes_env_and_paths_are_mapped_to_local_folders(env):
    client, _, data_dir = env
    await client.create("v1", "configmaps", NS, {"metadata": {"name": "cfg"}, "data": {"config.json": '{"lr": 1}'}})
    await client.create(
        "v1", "secrets", NS, {"metadata": {"name": "tok"}, "data": {"token": base64.b64encode(b"hf_123").decode()}}
    )
    code = (
        "import os, json, pathlib; "
        "cfg = json.loads(pathlib.Path(os.environ['CFG']).read_text()); "
        "pathlib.Path('/mnt/pvc/data/result.json').write_text(json.dumps({"
        "'lr': cfg['lr'], 'token': os.environ['HF_TOKEN'], 'cwd': os.getcwd(), 'sandbox': os.environ['SANDBOX'], "
        "'mounts': os.environ['MOUNTS'], 'host': os.environ['MASTER_ADDR'], 'tmp': os.path.isdir('/tmp')}))"
    )
    # The container sees container paths in its command; the kubelet rewrites them (the literal above too).
    body = pod(
        "mapped",
        code,
        container={
            "workingDir": "/work",
            "env": [
                {"name": "CFG", "value": "/etc/finetune/config.json"},
                {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "tok", "key": "token"}}},
                {"name": "MOUNTS", "value": json.dumps({"data": "/mnt/pvc/data"})},
                {"name": "MASTER_ADDR", "value": "job-0.job.default.svc"},
                {"name": "SANDBOX", "value": "overridden-by-extra-env"},
            ],
            "volumeMounts": [
                {"name": "config", "mountPath": "/etc/finetune", "readOnly": True},
                {"name": "data", "mountPath": "/mnt/pvc/data"},
                {"name": "work", "mountPath": "/work"},
            ],
        },
        volumes=[
            {"name": "config", "configMap": {"name": "cfg"}},
            {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
            {"name": "work", "emptyDir": {}},
        ],
    )
    await client.create("v1", "pods", NS, body)
    done = await wait_pod(client, "mapped", phase_is("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Succeeded", await client.logs(NS, "mapped")

    result = json.loads((data_dir / "pvcs" / NS / "data" / "result.json").read_text())
    pod_volumes = data_dir / "pods" / NS / "mapped" / "volumes"
    assert result == {
        "lr": 1,
        "token": "hf_123",
        "cwd": str(pod_volumes / "work"),
        "sandbox": "yes",
        "mounts": json.dumps({"data": str(data_dir / "pvcs" / NS / "data")}),
        "host": "127.0.0.1",
        "tmp": True,
    }


async def test_on_failure_restarts_with_count_and_fallback_termination_message(env):
    client, _, data_dir = env
    # Fails twice (printing a reason), then succeeds; the counter lives in a PVC so it survives restarts.
    code = (
        "import pathlib, sys; p = pathlib.Path('/data/n'); n = int(p.read_text()) if p.exists() else 0; "
        "p.write_text(str(n + 1)); print(f'attempt {n}: boom'); sys.exit(0 if n >= 2 else 7)"
    )
    body = pod(
        "retry",
        code,
        restart="OnFailure",
        container={
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "volumeMounts": [{"name": "d", "mountPath": "/data"}],
        },
        volumes=[{"name": "d", "persistentVolumeClaim": {"claimName": "retry"}}],
    )
    await client.create("v1", "pods", NS, body)
    done = await wait_pod(client, "retry", phase_is("Succeeded", "Failed"))
    status = main_status(done)
    assert done["status"]["phase"] == "Succeeded"
    assert status["restartCount"] == 2
    last = status["lastState"]["terminated"]
    assert (last["exitCode"], last["reason"]) == (7, "Error")
    assert last["message"].endswith("attempt 1: boom\n")
    log = await client.logs(NS, "retry", "main")
    assert log.splitlines() == ["attempt 0: boom", "attempt 1: boom", "attempt 2: boom"]


async def test_init_containers_run_first_and_a_failing_init_fails_the_pod(env):
    client, _, _ = env
    body = pod(
        "init",
        "import pathlib; assert pathlib.Path('/s/ready').read_text() == 'ok'",
        container={"volumeMounts": [{"name": "s", "mountPath": "/s"}]},
        volumes=[{"name": "s", "emptyDir": {}}],
        initContainers=[
            {
                "name": "prep",
                "image": "img:1",
                "volumeMounts": [{"name": "s", "mountPath": "/s"}],
                "command": ["python", "-c", "open('/s/ready', 'w').write('ok')"],
            }
        ],
    )
    await client.create("v1", "pods", NS, body)
    done = await wait_pod(client, "init", phase_is("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Succeeded"
    assert done["status"]["initContainerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"

    failing = pod(
        "badinit",
        "print('never')",
        initContainers=[{"name": "prep", "image": "img:1", "command": ["python", "-c", "raise SystemExit(2)"]}],
    )
    await client.create("v1", "pods", NS, failing)
    done = await wait_pod(client, "badinit", phase_is("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Failed"
    assert main_status(done)["state"].get("waiting")
    initialized = find_condition(done["status"]["conditions"], "Initialized")
    assert (initialized["status"], initialized["reason"]) == ("False", "ContainersNotInitialized")


async def test_stop_kills_every_process(env):
    client, kubelet, _ = env
    await client.create("v1", "pods", NS, pod("sleeper", "import time; time.sleep(60)"))
    running = await wait_pod(client, "sleeper", phase_is("Running"))
    pid = int(main_status(running)["containerID"].removeprefix("process://"))
    await kubelet.stop()
    with pytest.raises(ProcessLookupError):
        for _ in range(50):
            os.kill(pid, 0)
            await asyncio.sleep(0.05)


async def test_deletion_sigterms_then_sigkills_after_grace_and_removes_the_pod(env):
    client, kubelet, _ = env
    code = (
        "import signal, time, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    await client.create("v1", "pods", NS, pod("stubborn", code, terminationGracePeriodSeconds=1))
    await wait_pod(client, "stubborn", phase_is("Running"))
    await asyncio.sleep(0.3)  # let it install its handler
    started = time.monotonic()
    await client.delete("v1", "pods", NS, "stubborn")
    await wait_pod(client, "stubborn", lambda current: current is None)
    assert 0.9 <= time.monotonic() - started < 5
    assert not kubelet.workers


async def test_oom_like_sigkill_and_termination_message_file(env):
    client, _, _ = env
    code = (
        "import os, signal; open('/dev/termination-log', 'w').write('out of memory'); "
        "os.kill(os.getpid(), signal.SIGKILL)"
    )
    await client.create("v1", "pods", NS, pod("oom", code))
    done = await wait_pod(client, "oom", phase_is("Failed"))
    terminated = main_status(done)["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"], terminated["message"]) == (137, "OOMKilled", "out of memory")


async def test_bad_image_waits_with_image_pull_errors(env):
    client, _, _ = env
    await client.create("v1", "pods", NS, pod("pull", "print(1)", container={"image": "invalid/trainer:1"}))

    def pulling(current):
        waiting = (current or {}).get("status", {}).get("containerStatuses", [{}])[0].get("state", {}).get("waiting")
        return waiting and waiting["reason"] == "ImagePullBackOff"

    done = await wait_pod(client, "pull", pulling, timeout=5)
    assert done["status"]["phase"] == "Pending"
    assert 'Back-off pulling image "invalid/trainer:1"' in main_status(done)["state"]["waiting"]["message"]


async def test_missing_secret_reference_waits_with_create_container_config_error(env):
    client, _, _ = env
    body = pod(
        "nosecret",
        "print(1)",
        container={"env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}]},
    )
    await client.create("v1", "pods", NS, body)

    def config_error(current):
        waiting = (current or {}).get("status", {}).get("containerStatuses", [{}])[0].get("state", {}).get("waiting")
        return waiting and waiting["reason"] == "CreateContainerConfigError" and waiting

    waiting = await wait_pod(client, "nosecret", config_error, timeout=5)
    assert 'secret "absent" not found' in main_status(waiting)["state"]["waiting"]["message"]


async def test_each_pod_has_its_own_temporary_folder(env):
    # In a container /tmp is the container's own; on this machine tempfile would share one /tmp between pods
    # (a replacement pod once found its predecessor's staged checkpoint there).
    client, _, _ = env
    code = "import tempfile; print(tempfile.gettempdir())"
    with_empty_dir = pod(
        "tmp-mounted",
        code,
        container={"volumeMounts": [{"name": "t", "mountPath": "/tmp"}]},
        volumes=[{"name": "t", "emptyDir": {}}],
    )
    for body in (pod("tmp-a", code), pod("tmp-b", code), with_empty_dir):
        await client.create("v1", "pods", NS, body)
    folders = {}
    for name in ("tmp-a", "tmp-b", "tmp-mounted"):
        done = await wait_pod(client, name, phase_is("Succeeded", "Failed"))
        assert done["status"]["phase"] == "Succeeded", done["status"]
        folders[name] = (await client.logs(NS, name, "main")).strip()
    assert len(set(folders.values())) == 3 and "/tmp" not in folders.values(), folders
    assert all(name in folder for name, folder in folders.items()), folders
