"""Trainer pods (for every sample) and the operator's own pod meet the "restricted" Pod Security Standard,
trainer pods get no API token, and the checker itself catches each kind of violation."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from finetune_operator.builders import build_config_map, build_job, config_hash
from finetune_operator.config import OperatorConfig
from finetune_operator.spec import parse_spec
from pss_restricted import violations

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "manifests" / "samples").glob("*.yaml"))
DEPLOYMENT = ROOT / "manifests" / "operator" / "deployment.yaml"


def trainer_pod(path: Path) -> dict[str, Any]:
    job = yaml.safe_load(path.read_text())
    name, namespace = job["metadata"]["name"], job["metadata"].get("namespace", "default")
    spec = parse_spec(job["spec"], name)
    config = OperatorConfig.from_env({})
    built = build_job(
        spec, name, namespace, config=config, config_hash=config_hash(build_config_map(spec, name, namespace))
    )
    return built["spec"]["template"]["spec"]


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_trainer_pod_meets_the_restricted_profile(path):
    pod = trainer_pod(path)
    assert violations(pod) == []
    assert pod["automountServiceAccountToken"] is False
    # Beyond the profile: a read-only root filesystem, with writable scratch only where the trainer needs it.
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        if not mount.get("readOnly"):
            assert "emptyDir" in volumes[mount["name"]] or "persistentVolumeClaim" in volumes[mount["name"]], mount
    assert "/tmp" in writable


def test_operator_pod_meets_the_restricted_profile():
    deployment = yaml.safe_load(DEPLOYMENT.read_text())
    pod = deployment["spec"]["template"]["spec"]
    assert violations(pod) == []
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


COMPLIANT = {
    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [
        {"name": "c", "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}
    ],
    "volumes": [{"name": "scratch", "emptyDir": {}}],
}
BREAKS = {
    "host network": (lambda p: p.update(hostNetwork=True), "hostNetwork"),
    "host pid": (lambda p: p.update(hostPID=True), "hostPID"),
    "host ipc": (lambda p: p.update(hostIPC=True), "hostIPC"),
    "host path": (lambda p: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "hostPath"),
    "nfs volume": (lambda p: p["volumes"].append({"name": "n", "nfs": {"server": "x", "path": "/"}}), "not allowed"),
    "privileged": (lambda p: p["containers"][0]["securityContext"].update(privileged=True), "privileged"),
    "escalation": (
        lambda p: p["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
        "allowPrivilegeEscalation",
    ),
    "root": (lambda p: p["securityContext"].pop("runAsNonRoot"), "runAsNonRoot"),
    "uid 0": (lambda p: p["containers"][0]["securityContext"].update(runAsUser=0), "runAsUser"),
    "no seccomp": (lambda p: p["securityContext"].pop("seccompProfile"), "seccompProfile"),
    "unconfined": (lambda p: p["securityContext"].update(seccompProfile={"type": "Unconfined"}), "seccompProfile"),
    "caps kept": (lambda p: p["containers"][0]["securityContext"].update(capabilities={}), "drop must include ALL"),
    "cap added": (
        lambda p: p["containers"][0]["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]),
        "SYS_ADMIN",
    ),
    "host port": (lambda p: p["containers"][0].update(ports=[{"containerPort": 80, "hostPort": 80}]), "hostPort"),
    "init container": (lambda p: p.update(initContainers=[{"name": "i"}]), "initContainers[i]"),
}


def test_the_checker_passes_a_compliant_pod_and_allows_net_bind_service():
    pod = copy.deepcopy(COMPLIANT)
    pod["containers"][0]["securityContext"]["capabilities"]["add"] = ["NET_BIND_SERVICE"]
    assert violations(pod) == []


@pytest.mark.parametrize("mutate,expected", BREAKS.values(), ids=BREAKS.keys())
def test_the_checker_names_each_violation(mutate, expected):
    pod = copy.deepcopy(COMPLIANT)
    mutate(pod)
    found = violations(pod)
    assert any(expected in v for v in found), found
