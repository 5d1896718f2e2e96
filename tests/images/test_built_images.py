"""The built images (`make images`), opened with buildah: what each holds, and that each runs.

Skipped where the images were not built (no buildah, or `make images` not run); CI builds them first and
sets FINETUNE_REQUIRE_IMAGES=1, which turns a missing image into a failure.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from images_support import OPERATOR_IMAGE, TRAINER_IMAGE, require_image

pytestmark = pytest.mark.images

OPERATOR_SIZE_LIMIT_BYTES = 250 * 1000 * 1000  # the target of issue 12, in the units `buildah images` reports


class Opened:
    """A working container of an image: its root filesystem on the host, commands run inside it."""

    def __init__(self, image: str) -> None:
        self.image = image
        self.container = _buildah("from", "--pull=never", "--quiet", image).strip()
        self.root = Path(_buildah("mount", self.container).strip())
        self.config = json.loads(_buildah("inspect", "--type", "image", image))["OCIv1"]["config"]

    def run(self, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
        # Only commands that exit 0 are run this way: buildah 1.28 reports other exits as 2 (see notes).
        return subprocess.run(
            ["buildah", "run", "--isolation", "chroot", self.container, "--", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def site_packages(self) -> Path:
        (found,) = (self.root / "opt" / "venv" / "lib").glob("python3*/site-packages")
        return found

    def close(self) -> None:
        _buildah("rm", self.container)


def _buildah(*args: str) -> str:
    return subprocess.run(["buildah", *args], capture_output=True, text=True, check=True, timeout=300).stdout


def _open(image: str) -> Iterator[Opened]:
    require_image(image)
    opened = Opened(image)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture(scope="module")
def operator_image() -> Iterator[Opened]:
    yield from _open(OPERATOR_IMAGE)


@pytest.fixture(scope="module")
def trainer_image() -> Iterator[Opened]:
    yield from _open(TRAINER_IMAGE)


def _distributions(site_packages: Path) -> set[str]:
    return {path.name.split("-")[0].lower().replace("_", "-") for path in site_packages.glob("*.dist-info")}


def test_operator_image_holds_no_torch_sandbox_cli_or_kubernetes_client(operator_image):
    installed = _distributions(operator_image.site_packages())
    assert {"kopf", "optuna", "pydantic", "urllib3"} <= installed
    for absent in ("torch", "transformers", "kubernetes", "sqlalchemy", "pip", "jsonschema", "cel-python"):
        assert absent not in installed, f"{absent} is in the operator image"
    app = operator_image.root / "app"
    assert sorted(path.name for path in app.iterdir()) == ["finetune_operator"]
    for package in ("finetune_sandbox", "finetune_cli", "finetune_trainer"):
        assert not list(operator_image.root.glob(f"**/{package}/__init__.py")), f"{package} is in the operator image"


def test_operator_image_is_at_most_250_mb_and_runs_as_non_root(operator_image):
    size = _image_size(OPERATOR_IMAGE)
    print(f"operator image: {size / 1e6:.0f} MB")
    assert size <= OPERATOR_SIZE_LIMIT_BYTES, f"the operator image is {size / 1e6:.0f} MB, over 250 MB"
    assert operator_image.config["User"] == "1000:1000"
    assert operator_image.config["Entrypoint"] == ["python", "-m", "finetune_operator"]


def test_operator_image_imports_every_module_and_samples_a_bayesian_trial(operator_image):
    code = (
        "import importlib, pkgutil, sys, finetune_operator\n"
        "for module in pkgutil.walk_packages(finetune_operator.__path__, 'finetune_operator.'):\n"
        "    importlib.import_module(module.name)\n"
        "from finetune_operator.search.sampling import Param, suggest\n"
        "space = {'learningRate': Param('learningRate', 'float', 1e-5, 1e-3, log=True),\n"
        "         'batchSize': Param('batchSize', 'categorical', values=(8, 16))}\n"
        "trials = [{'index': i, 'state': 'Succeeded', 'parameters': {'learningRate': 1e-4 * (i + 1), 'batchSize': 8},\n"
        "           'objectiveValue': 1.0 / (i + 1)} for i in range(3)]\n"
        "params = suggest('bayesian', space, trials, goal='minimize', seed=1, index=3, max_trials=8)\n"
        "assert 1e-5 <= params['learningRate'] <= 1e-3 and params['batchSize'] in (8, 16), params\n"
        "assert 'sqlalchemy' not in sys.modules and 'kubernetes' not in sys.modules\n"
        "print('ok', sorted(params))\n"
    )
    done = operator_image.run("python", "-c", code)
    assert done.returncode == 0 and "ok" in done.stdout, done.stdout + done.stderr
    done = operator_image.run("python", "-m", "finetune_operator", "--help")
    assert done.returncode == 0 and "--all-namespaces" in done.stdout, done.stdout + done.stderr


def test_trainer_image_holds_the_trainer_and_no_operator_sandbox_or_cli(trainer_image):
    installed = _distributions(trainer_image.site_packages())
    assert {"torch", "transformers", "accelerate", "peft", "datasets"} <= installed
    for absent in ("kopf", "pip", "finetune-operator"):
        assert absent not in installed, f"{absent} is in the trainer image"
    assert sorted(path.name for path in (trainer_image.root / "opt" / "finetune").iterdir()) == ["finetune_trainer"]
    for package in ("finetune_operator", "finetune_sandbox", "finetune_cli"):
        assert not list(trainer_image.root.glob(f"opt/**/{package}/__init__.py")), f"{package} is in the trainer image"
    assert not (trainer_image.root / "opt" / "finetune" / "finetune_trainer" / "data").exists()
    for tool in ("usr/bin/gcc", "usr/bin/make", "usr/bin/cc"):
        assert not (trainer_image.root / tool).exists(), f"/{tool} is in the trainer image"
    print(f"trainer image: {_image_size(TRAINER_IMAGE) / 1e6:.0f} MB")


def test_trainer_image_runs_the_trainer_as_its_non_root_user_with_cpu_torch(trainer_image):
    assert trainer_image.config["User"] == "1000:1000"
    assert trainer_image.config["Entrypoint"] == ["python", "-m", "finetune_trainer"]
    done = trainer_image.run("python", "-m", "finetune_trainer", "--help")
    assert done.returncode == 0 and "usage: python -m finetune_trainer" in done.stdout, done.stdout + done.stderr
    done = trainer_image.run("python", "-c", "import os, torch, transformers; print(os.getuid(), torch.__version__)")
    assert done.returncode == 0, done.stderr
    uid, version = done.stdout.split()
    assert uid == "1000" and version.startswith("2.13.0")


def _image_size(image: str) -> int:
    """Bytes, as `buildah images` reports them (uncompressed layers, decimal units, 3-4 digits)."""
    number, unit = _buildah("images", "--format", "{{.Size}}", image).split("\n")[0].split()
    return int(float(number) * {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}[unit])
