"""Names of the images `make images` builds, and the rule for tests that need one."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

VERSION = "0.1.0"
OPERATOR_IMAGE = os.environ.get("OPERATOR_IMAGE", f"localhost/finetune-operator:{VERSION}")
TRAINER_IMAGE = os.environ.get("TRAINER_IMAGE", f"localhost/finetune-trainer:{VERSION}-cpu")


def image_exists(image: str) -> bool:
    if shutil.which("buildah") is None:
        return False
    done = subprocess.run(["buildah", "inspect", "--type", "image", image], capture_output=True, timeout=60)
    return done.returncode == 0


def require_image(image: str) -> None:
    """Skip when `image` was not built, unless FINETUNE_REQUIRE_IMAGES=1 (CI), where that is a failure."""
    if image_exists(image):
        return
    message = f"image {image} is not built here (run `make images`; it needs buildah or Docker)"
    if os.environ.get("FINETUNE_REQUIRE_IMAGES") == "1":
        pytest.fail(message)
    pytest.skip(message)
