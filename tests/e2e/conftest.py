"""End-to-end fixtures: one sandbox cluster per session with the real operator process inside it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from finetune_sandbox.cluster import Sandbox, SandboxThread
from sandbox_support import Cluster, write_sentiment_csv, write_tiny_text_classifier


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    data_dir = tmp_path_factory.mktemp("sandbox")
    sandbox = Sandbox(data_dir, gpus=2)
    runner = SandboxThread(sandbox)
    runner.start()
    try:
        yield Cluster(sandbox, runner)
    finally:
        runner.stop()


@pytest.fixture(scope="session")
def tiny_model_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-model")
    write_tiny_text_classifier(path)
    return path


@pytest.fixture()
def team(cluster: Cluster, tiny_model_source: Path) -> str:
    """A fresh namespace whose PVCs hold the tiny model and a small labelled dataset."""
    namespace = cluster.namespace()
    shutil.copytree(tiny_model_source, cluster.pvc_dir(namespace, "models") / "tiny-bert")
    write_sentiment_csv(cluster.pvc_dir(namespace, "datasets") / "sentiment" / "train.csv")
    return namespace
