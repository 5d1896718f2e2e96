"""The kubelet's process runtime: a container becomes a process of this Python environment.

`python` in `command` means sys.executable; the container's paths (volume mounts, the termination-message
file, its working dir) are rewritten to the folders that stand for them on this machine. Images are recorded,
never pulled: image names starting with `invalid/` or ending with `:does-not-exist` fail to "pull" so tests
can exercise ErrImagePull/ImagePullBackOff.
"""

from __future__ import annotations

import os
from pathlib import Path

from .env import expand_references
from .status import DEFAULT_TERMINATION_MESSAGE_PATH
from .volumes import Mount, VolumeError, path_rewriter

# Host variables a process needs to run at all; everything else comes from the pod spec, as in a container.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH", "SYSTEMROOT")


def is_bad_image(image: str) -> bool:
    return image.startswith("invalid/") or image.endswith(":does-not-exist")


def is_python(executable: str) -> bool:
    name = executable.rsplit("/", 1)[-1]
    return name == "python" or (name.startswith("python3") and all(c.isdigit() or c == "." for c in name[7:]))


def process_launch(
    pod: dict,
    spec: dict,
    mounts: list[Mount],
    env: dict[str, str],
    message_file: Path,
    *,
    pod_dir: Path,
    python: str,
    extra_env: dict[str, str],
) -> tuple[list[str], dict[str, str], str]:
    """(argv, env, cwd) of one start of container `spec` of `pod`; makes its working folder.

    `env` is the container's resolved env, `mounts` its volume mounts with their folders on this machine,
    `message_file` the file that stands for its terminationMessagePath, `pod_dir` the pod's folder, `python`
    the interpreter that runs `python`, `extra_env` the kubelet's variables (applied last).
    """
    message_path = spec.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH
    mapping = {mount.mount_path: str(mount.local_path) for mount in mounts}
    mapping[message_path] = str(message_file)
    rewrite = path_rewriter(mapping)
    env = {key: rewrite(value) for key, value in env.items()}
    command = [expand_references(part, env) for part in spec.get("command") or []]
    args = [expand_references(part, env) for part in spec.get("args") or []]
    if not command:
        raise VolumeError(
            f"container {spec['name']!r} has no command: the sandbox does not pull images, so it cannot know "
            f'the image\'s entrypoint; set command, e.g. ["python", "-m", "finetune_trainer"] (or run '
            f"the kubelet with the image runtime, FINETUNE_SANDBOX_RUNTIME=image)"
        )
    argv = [rewrite(part) for part in command + args]
    if is_python(argv[0]):
        argv[0] = python
    base = {key: os.environ[key] for key in INHERITED_ENV if key in os.environ}
    hostname = (pod.get("spec") or {}).get("hostname") or pod["metadata"]["name"]
    process_env = {**base, "HOSTNAME": hostname, "PYTHONUNBUFFERED": "1", **env, **extra_env}
    if "TMPDIR" not in env:
        # In a container /tmp is its own (an emptyDir, or the image's); tempfile would otherwise use this
        # machine's, shared by every pod: a replacement pod found its predecessor's staged files there.
        tmp = Path(mapping.get("/tmp") or pod_dir / "rootfs" / "tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        process_env["TMPDIR"] = str(tmp)
    working_dir = spec.get("workingDir")
    if working_dir:
        mapped = rewrite(working_dir)
        cwd = Path(mapped) if mapped != working_dir else pod_dir / "rootfs" / working_dir.lstrip("/")
    else:
        cwd = pod_dir / "workdir"
    cwd.mkdir(parents=True, exist_ok=True)
    return argv, process_env, str(cwd)
