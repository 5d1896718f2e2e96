"""The shipped manifests, applied the way the README says (`kubectl apply -k manifests/`), into a fresh
sandbox API server that validates them against its CRD schema; no operator runs, so nothing changes them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from finetune_sandbox.cluster import MANIFESTS, Sandbox, SandboxThread
from sandbox_support import kubectl_binary

pytestmark = pytest.mark.e2e

SAMPLES = sorted((MANIFESTS / "samples").glob("*.yaml"))


@pytest.fixture()
def kubeconfig(tmp_path: Path) -> Path:
    """A fresh API server per test (it starts in a quarter second), so no test depends on another's applies."""
    runner = SandboxThread(Sandbox(tmp_path / "sandbox", run_operator=False))
    runner.start()
    try:
        yield runner.sandbox.kubeconfig
    finally:
        runner.stop()


def kubectl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [kubectl_binary(), "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True, timeout=60
    )


def applied(output: str) -> dict[str, str]:
    """`kind.group/name verb` lines of kubectl apply -> {kind.group/name: verb}."""
    return dict(line.rsplit(" ", 1) for line in output.strip().splitlines())


def rendered_objects() -> list[dict]:
    rendered = subprocess.run(
        [kubectl_binary(), "kustomize", str(MANIFESTS)], capture_output=True, text=True, timeout=60
    )
    assert rendered.returncode == 0, rendered.stderr
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


def test_apply_k_creates_every_object_then_reapplying_changes_nothing(kubeconfig: Path) -> None:
    first = kubectl(kubeconfig, "apply", "-k", str(MANIFESTS))

    assert first.returncode == 0, first.stderr
    results = applied(first.stdout)
    assert len(results) == len(rendered_objects()), first.stdout
    # The sandbox installs the CRD itself at start, as a cluster that already has it would.
    assert set(results.values()) <= {"created", "configured"}, first.stdout
    assert results["deployment.apps/finetune-operator"] == "created"

    second = kubectl(kubeconfig, "apply", "-k", str(MANIFESTS))

    assert second.returncode == 0, second.stderr
    assert applied(second.stdout) == {name: "unchanged" for name in results}, second.stdout


def test_applied_operator_objects_are_served_back_with_their_labels(kubeconfig: Path) -> None:
    kubectl(kubeconfig, "apply", "-k", str(MANIFESTS))

    for obj in rendered_objects():
        kind, name = obj["kind"], obj["metadata"]["name"]
        namespace = obj["metadata"].get("namespace")
        args = ["get", kind.lower(), name, "-o", "yaml"] + (["-n", namespace] if namespace else [])
        served = kubectl(kubeconfig, *args)
        assert served.returncode == 0, f"{kind}/{name}: {served.stderr}"
        labels = yaml.safe_load(served.stdout)["metadata"].get("labels") or {}
        assert labels.get("app.kubernetes.io/part-of") == "finetune-operator", f"{kind}/{name}: {labels}"


def test_every_sample_is_accepted_and_listed(kubeconfig: Path) -> None:
    assert SAMPLES, "manifests/samples/ holds no samples"
    samples = {path: yaml.safe_load(path.read_text()) for path in SAMPLES}
    # Samples for other teams' namespaces (e.g. research) expect those namespaces to exist, as on a real cluster.
    for namespace in sorted({doc["metadata"].get("namespace", "default") for doc in samples.values()} - {"default"}):
        kubectl(kubeconfig, "create", "namespace", namespace)

    for path in SAMPLES:
        result = kubectl(kubeconfig, "apply", "-f", str(path))
        assert result.returncode == 0, f"{path.name}: {result.stderr}"
        assert result.stdout.strip() == f"finetunejob.finetune.dev/{samples[path]['metadata']['name']} created"

    listed = kubectl(kubeconfig, "get", "ftj", "-A")
    assert listed.returncode == 0, listed.stderr
    header, *rows = [line.split() for line in listed.stdout.strip().splitlines()]
    assert header[:2] == ["NAMESPACE", "NAME"]
    expected = {(doc["metadata"].get("namespace", "default"), doc["metadata"]["name"]) for doc in samples.values()}
    assert {(row[0], row[1]) for row in rows} == expected
