"""A sandbox API server with one kubelet on it, and waiting for its pods: shared by the process runtime's tests
(tests/sandbox/test_kubelet_pods.py) and the image runtime's (tests/e2e/test_image_mode.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from finetune_sandbox.apiserver import ApiServer
from finetune_sandbox.client import ApiError, SandboxClient
from finetune_sandbox.kubelet import ProcessKubelet

NS = "default"


@contextlib.asynccontextmanager
async def running_kubelet(data_dir: Path, **options: Any) -> AsyncIterator[tuple[SandboxClient, ProcessKubelet]]:
    """An API server that deletes pods gracefully and a kubelet (with `options`) watching it, until the end."""
    server = ApiServer(host="127.0.0.1", port=0, graceful_pod_deletion=True)
    url = await server.start()
    client = SandboxClient(url)
    kubelet = ProcessKubelet(client, data_dir, register_log=server.set_log_path, **options)
    task = asyncio.create_task(kubelet.run())
    try:
        yield client, kubelet
    finally:
        await kubelet.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
        await server.stop()


async def wait_pod(
    client: SandboxClient, name: str, check: Callable[[Any], Any], timeout: float = 15.0, namespace: str = NS
) -> Any:
    """Poll the pod until `check` (given the pod, None once it is gone) is truthy; return the pod."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            current = await client.get("v1", "pods", namespace, name)
        except ApiError as error:
            current = None if error.status == 404 else error
        if check(current):
            return current
        if time.monotonic() > deadline:
            raise AssertionError(f"pod {name}: timed out; last seen {json.dumps(current, default=str)[:2000]}")
        await asyncio.sleep(0.05)


def phase_is(*phases: str) -> Callable[[Any], bool]:
    return lambda pod: pod is not None and pod.get("status", {}).get("phase") in phases
