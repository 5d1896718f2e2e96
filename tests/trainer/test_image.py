"""The trainer image, checked statically (no Docker engine here): pins, Dockerfile rules, the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DOCKERFILE = os.path.join(ROOT, "trainer_image", "Dockerfile")
REQUIREMENTS = os.path.join(ROOT, "trainer_image", "requirements.txt")


def _pins() -> dict[str, str]:
    pins = {}
    for line in open(REQUIREMENTS).read().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"requirements.txt: {line!r} is not pinned with =="
            pins[canonicalize_name(name)] = version.strip()
    return pins


def _stages() -> list[list[str]]:
    """Dockerfile instructions (continuations joined), split into stages."""
    text = re.sub(r"\\\n", " ", open(DOCKERFILE).read())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def test_every_trainer_dependency_is_pinned_at_a_version_its_range_admits():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        extra = tomllib.load(f)["project"]["optional-dependencies"]["trainer"]
    pins = _pins()
    for spec in extra:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is in pyproject's trainer extra but not pinned in requirements.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} is outside {requirement.specifier}"


def test_dockerfile_is_multi_stage_pinned_and_installs_requirements():
    stages = _stages()
    assert len(stages) >= 2
    for stage in stages:
        image = stage[0].split()[1]
        assert ":" in image and not image.endswith(":latest"), f"base image {image} is not pinned by version"
    build = " ".join(stages[0])
    assert re.search(r"pip install (-r|--requirement) \S*requirements\.txt", build)


def test_final_stage_runs_as_non_root_without_build_tools():
    final = _stages()[-1]
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    assert users, "the final stage sets no USER"
    assert users[-1].split(":")[0] not in ("root", "0")
    text = " ".join(final).lower()
    for tool in ("build-essential", "gcc", "g++", "python3-dev", "make "):
        assert tool not in text, f"final stage installs {tool}"
    assert 'ENTRYPOINT ["python", "-m", "finetune_trainer"]' in final
    assert any("HF_HOME=/var/cache/finetune/huggingface" in line for line in final)
    assert any(line.startswith("VOLUME") and "/var/cache/finetune" in line for line in final)


def test_cli_help_and_missing_config():
    env = {**os.environ, "FINETUNE_CONFIG": ""}
    done = subprocess.run([sys.executable, "-m", "finetune_trainer", "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0 and "usage: python -m finetune_trainer" in done.stdout
    done = subprocess.run([sys.executable, "-m", "finetune_trainer"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 3 and "FINETUNE_CONFIG" in done.stderr


def test_importing_the_contract_does_not_import_torch():
    code = "import sys, finetune_trainer, finetune_trainer.arguments; assert 'torch' not in sys.modules, 'torch imported'"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).returncode == 0


def test_cli_exit_code_and_termination_message_for_bad_config(tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"task": "summarize", "model_uri": "m", "train_uri": "t", "output_uri": "o"}')
    log = tmp_path / "termination-log"
    env = {**os.environ, "FINETUNE_CONFIG": str(config), "FINETUNE_TERMINATION_LOG": str(log)}
    done = subprocess.run([sys.executable, "-m", "finetune_trainer"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 3
    message = json.loads(log.read_text())
    assert message["reason"] == "InvalidData" and "task must be one of" in message["message"]
