"""The process kubelet's pure parts: volume mapping, path rewriting, env resolution, status building."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from finetune_sandbox.kubelet.env import EnvError, expand_references, resolve_env, rewrite_cluster_dns, sandbox_env
from finetune_sandbox.kubelet.process_runtime import is_bad_image, is_python
from finetune_sandbox.kubelet.status import (
    ContainerRun,
    build_pod_status,
    exit_code_of,
    exit_reason,
    pod_phase,
    termination_message,
)
from finetune_sandbox.kubelet.volumes import (
    VolumeError,
    container_mounts,
    path_rewriter,
    referenced_sources,
    volume_files,
    volume_paths,
)

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
POD = {
    "metadata": {
        "name": "train-0-abcde",
        "namespace": "ns",
        "uid": "u-1",
        "labels": {"app": "train"},
        "annotations": {"batch.kubernetes.io/job-completion-index": "0"},
    },
    "spec": {
        "nodeName": "sandbox",
        "volumes": [
            {"name": "config", "configMap": {"name": "train-config"}},
            {"name": "models", "persistentVolumeClaim": {"claimName": "models"}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "creds", "secret": {"secretName": "s3", "items": [{"key": "key", "path": "sub/key.txt"}]}},
        ],
        "containers": [
            {
                "name": "trainer",
                "volumeMounts": [
                    {"name": "config", "mountPath": "/etc/finetune"},
                    {"name": "models", "mountPath": "/mnt/pvc/models"},
                    {"name": "tmp", "mountPath": "/tmp"},
                    {"name": "config", "mountPath": "/etc/one.json", "subPath": "config.json"},
                ],
            }
        ],
    },
}
CONFIGMAPS = {"train-config": {"data": {"config.json": '{"a": 1}', "other": "x"}}}
SECRETS = {"s3": {"data": {"key": base64.b64encode(b"secret!").decode(), "id": base64.b64encode(b"AK").decode()}}}


def test_volumes_map_to_pod_folders_and_shared_pvc_folders(tmp_path):
    paths = volume_paths(POD, tmp_path)
    assert paths["config"] == tmp_path / "pods/ns/train-0-abcde/volumes/config"
    assert paths["tmp"] == tmp_path / "pods/ns/train-0-abcde/volumes/tmp"
    assert paths["models"] == tmp_path / "pvcs/ns/models"
    mounts = container_mounts(POD["spec"]["containers"][0], paths)
    assert mounts[3].local_path == paths["config"] / "config.json"


def test_mount_of_unknown_volume_names_it():
    with pytest.raises(VolumeError, match="'nope'.*not in spec.volumes"):
        container_mounts({"name": "c", "volumeMounts": [{"name": "nope", "mountPath": "/x"}]}, {})


def test_configmap_and_secret_volumes_become_files_honouring_items():
    volumes = {v["name"]: v for v in POD["spec"]["volumes"]}
    assert volume_files(volumes["config"], CONFIGMAPS, SECRETS) == {"config.json": b'{"a": 1}', "other": b"x"}
    assert volume_files(volumes["creds"], CONFIGMAPS, SECRETS) == {"sub/key.txt": b"secret!"}
    assert volume_files(volumes["tmp"], CONFIGMAPS, SECRETS) is None


def test_missing_configmap_volume_fails_unless_optional():
    volume = {"name": "config", "configMap": {"name": "absent"}}
    with pytest.raises(VolumeError, match='configmap "absent" not found'):
        volume_files(volume, {}, {})
    assert volume_files({"name": "c", "configMap": {"name": "absent", "optional": True}}, {}, {}) == {}


def test_referenced_sources_cover_volumes_env_and_env_from():
    pod = {
        "spec": {
            "volumes": POD["spec"]["volumes"],
            "containers": [
                {
                    "name": "c",
                    "envFrom": [{"secretRef": {"name": "aws"}}],
                    "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}],
                }
            ],
        }
    }
    assert referenced_sources(pod) == ({"train-config"}, {"s3", "aws", "hf"})


def test_path_rewriting_is_longest_first_single_pass_and_respects_boundaries():
    rewrite = path_rewriter(
        {"/tmp": "/tmp/data/pods/p/volumes/tmp", "/tmp/cache": "/L/cache", "/mnt/pvc/models": "/L/models"}
    )
    assert rewrite("/tmp/x") == "/tmp/data/pods/p/volumes/tmp/x"
    assert rewrite("/tmp/cache/hf") == "/L/cache/hf"
    assert rewrite('{"models": "/mnt/pvc/models"}') == '{"models": "/L/models"}'
    assert rewrite("--out=/tmp") == "--out=/tmp/data/pods/p/volumes/tmp"
    assert rewrite("/var/tmp /tmpfiles") == "/var/tmp /tmpfiles"


def test_env_resolution_field_refs_secrets_configmaps_env_from_and_expansion():
    container = {
        "name": "trainer",
        "envFrom": [
            {"secretRef": {"name": "s3"}, "prefix": "AWS_"},
            {"configMapRef": {"name": "absent", "optional": True}},
        ],
        "env": [
            {
                "name": "RANK",
                "valueFrom": {
                    "fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}
                },
            },
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "key"}}},
            {"name": "CFG", "valueFrom": {"configMapKeyRef": {"name": "train-config", "key": "other"}}},
            {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "missing", "optional": True}}},
            {"name": "WHO", "value": "$(POD) in $(NS), $(UNDEFINED), $$(POD)"},
        ],
    }
    env = resolve_env(container, POD, CONFIGMAPS, SECRETS)
    assert env == {
        "AWS_key": "secret!",
        "AWS_id": "AK",
        "RANK": "0",
        "POD": "train-0-abcde",
        "NS": "ns",
        "APP": "train",
        "IP": "127.0.0.1",
        "NODE": "sandbox",
        "TOKEN": "secret!",
        "CFG": "x",
        "WHO": "train-0-abcde in ns, $(UNDEFINED), $(POD)",
    }


def test_resource_field_refs_round_up_to_the_divisor_like_the_kubelet():
    container = {
        "name": "trainer",
        "resources": {"limits": {"cpu": "1500m", "memory": "2Gi"}, "requests": {"cpu": "2"}},
        "env": [
            {"name": "THREADS", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1"}}},
            {"name": "MILLI", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}},
            {"name": "REQ", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu"}}},
            {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
        ],
    }
    env = resolve_env(container, POD, CONFIGMAPS, SECRETS)
    assert (env["THREADS"], env["MILLI"], env["REQ"], env["MEM_MI"]) == ("2", "1500", "2", "2048")


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        ({"name": "T", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}, 'secret "hf" not found'),
        (
            {"name": "T", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "nokey"}}},
            "couldn't find key nokey in Secret ns/s3",
        ),
        (
            {"name": "T", "valueFrom": {"fieldRef": {"fieldPath": "spec.weird"}}},
            "fieldRef 'spec.weird' is not supported",
        ),
    ],
)
def test_unresolvable_env_names_the_reference(variable, message):
    with pytest.raises(EnvError, match=message):
        resolve_env({"name": "c", "env": [variable]}, POD, CONFIGMAPS, SECRETS)


def test_expand_references_keeps_unknown_and_escaped():
    assert expand_references("$(A)-$(B)-$$(A)", {"A": "1"}) == "1-$(B)-$(A)"


def test_cluster_dns_names_point_at_the_sandbox_host():
    assert rewrite_cluster_dns("train-0.train.ns.svc") == "127.0.0.1"
    assert rewrite_cluster_dns("tcp://train-0.train.ns.svc.cluster.local:29500") == "tcp://127.0.0.1:29500"
    assert rewrite_cluster_dns("/etc/finetune/config.json") == "/etc/finetune/config.json"
    assert rewrite_cluster_dns("example.com") == "example.com"


def test_python_commands_and_bad_images():
    assert is_python("python") and is_python("python3") and is_python("/usr/bin/python3.11")
    assert not is_python("python-config") and not is_python("sh")
    assert is_bad_image("invalid/trainer:1") and is_bad_image("trainer:does-not-exist")
    assert not is_bad_image("ghcr.io/x/trainer:1")


def test_exit_codes_and_reasons():
    assert exit_code_of(-9) == 137 and exit_code_of(-15) == 143 and exit_code_of(3) == 3
    assert exit_reason(0, False) == "Completed"
    assert exit_reason(137, False) == "OOMKilled"
    assert exit_reason(137, True) == "Error"
    assert exit_reason(1, False) == "Error"


def test_termination_message_truncates_and_falls_back_to_logs_only_on_failure():
    assert termination_message(b"x" * 5000, b"", failed=True, fallback_to_logs=True) == "x" * 4096
    log = b"".join(f"line {i}\n".encode() for i in range(200))
    fallback = termination_message(b"", log, failed=True, fallback_to_logs=True)
    assert fallback.startswith("line 120\n") and fallback.endswith("line 199\n")
    assert termination_message(b"", log, failed=False, fallback_to_logs=True) == ""
    assert termination_message(b"", log, failed=True, fallback_to_logs=False) == ""


def run(name, state, exit_code=None, restarts=0):
    return ContainerRun(name, "img", state=state, exit_code=exit_code, restart_count=restarts)


@pytest.mark.parametrize(
    ("policy", "init", "main", "phase"),
    [
        ("Never", [], [run("a", "waiting")], "Pending"),
        ("Never", [run("i", "running")], [run("a", "waiting")], "Pending"),
        ("Never", [run("i", "terminated", 1)], [run("a", "waiting")], "Failed"),
        ("OnFailure", [run("i", "terminated", 1)], [run("a", "waiting")], "Pending"),
        ("Never", [run("i", "terminated", 0)], [run("a", "running")], "Running"),
        ("Never", [], [run("a", "terminated", 0), run("b", "terminated", 0)], "Succeeded"),
        ("Never", [], [run("a", "terminated", 0), run("b", "terminated", 2)], "Failed"),
        ("Never", [], [run("a", "terminated", 0), run("b", "running")], "Running"),
        ("OnFailure", [], [run("a", "terminated", 1)], "Running"),
        ("OnFailure", [], [run("a", "terminated", 0)], "Succeeded"),
        ("Always", [], [run("a", "terminated", 0)], "Running"),
    ],
)
def test_pod_phase(policy, init, main, phase):
    assert pod_phase(policy, init, main) == phase


def test_pod_status_keeps_foreign_conditions_and_reports_containers():
    existing = {
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"},
        ]
    }
    trainer = ContainerRun(
        "trainer",
        "img:1",
        state="terminated",
        exit_code=3,
        reason="Error",
        message="bad",
        started_at="s",
        finished_at="f",
        restart_count=0,
        pid=42,
    )
    status = build_pod_status(existing, "Never", [], [trainer], NOW, start_time="t0")
    assert status["phase"] == "Failed"
    assert status["podIP"] == status["hostIP"] == "127.0.0.1"
    assert status["startTime"] == "t0"
    types = {c["type"]: c for c in status["conditions"]}
    assert types["DisruptionTarget"]["reason"] == "PreemptionByScheduler"
    assert types["Ready"]["status"] == "False" and types["Ready"]["reason"] == "PodCompleted"
    assert types["Initialized"]["status"] == "True"
    (container,) = status["containerStatuses"]
    assert container["state"]["terminated"]["exitCode"] == 3
    assert container["state"]["terminated"]["message"] == "bad"
    assert container["image"] == "img:1" and container["imageID"] == "sandbox://img:1"


def test_running_pod_is_ready():
    status = build_pod_status(
        {}, "Never", [], [ContainerRun("a", "i", state="running", started_at="s")], NOW, start_time="t0"
    )
    types = {c["type"]: c["status"] for c in status["conditions"]}
    assert status["phase"] == "Running"
    assert types == {
        "PodScheduled": "True",
        "PodReadyToStartContainers": "True",
        "Initialized": "True",
        "ContainersReady": "True",
        "Ready": "True",
    }


def test_each_jobs_rendezvous_gets_its_own_port_on_the_shared_host():
    # Every sandbox pod is 127.0.0.1: two jobs' rank 0s cannot both listen on 29500, as they do on a cluster.
    def env(job: str) -> dict[str, str]:
        address = f"{job}-0.{job}.ns.svc"
        return {"MASTER_ADDR": address, "MASTER_PORT": "29500", "PET_MASTER_ADDR": address, "PET_MASTER_PORT": "29500"}

    first, again, other = sandbox_env(env("a")), sandbox_env(env("a")), sandbox_env(env("b"))
    assert first["MASTER_ADDR"] == first["PET_MASTER_ADDR"] == "127.0.0.1"
    assert first == again and first["MASTER_PORT"] == first["PET_MASTER_PORT"]  # every rank of a job agrees
    assert first["MASTER_PORT"] != other["MASTER_PORT"] and 20000 <= int(first["MASTER_PORT"]) < 32000
    # An address that is not a cluster name (a local run) keeps its port.
    assert sandbox_env({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"})["MASTER_PORT"] == "29500"
