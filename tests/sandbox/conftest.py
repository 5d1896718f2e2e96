"""Fixtures for the sandbox tests."""

from __future__ import annotations

import pytest
from finetune_sandbox.apiserver import ApiServer


@pytest.fixture
async def apiserver():
    """A started in-process API server; pods are deleted at once (there is no kubelet here)."""
    server = ApiServer(host="127.0.0.1", port=0, graceful_pod_deletion=False, bookmark_interval=0.2, gc_interval=0.1)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
