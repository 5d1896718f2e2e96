"""What end-to-end tests use to drive a sandbox cluster the way users do: `kubectl` with its
kubeconfig, and the official `kubernetes` client for assertions."""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import yaml
from finetune_sandbox.cluster import Sandbox, SandboxThread, wait_for
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

# The operator's log line once its startup handlers ran and it starts watching (Kopf).
OPERATOR_READY = b"Initial authentication has finished"
WORDS_POSITIVE = ["great", "good", "excellent", "love", "wonderful", "fine", "happy", "superb"]
WORDS_NEGATIVE = ["bad", "awful", "terrible", "hate", "poor", "sad", "boring", "broken"]


def kubectl_binary() -> str:
    found = shutil.which("kubectl") or str(Path(sys.executable).with_name("kubectl"))
    return found


class Cluster:
    """What a test sees of the sandbox: kubectl, a typed client, and the sandbox's folders."""

    def __init__(self, sandbox: Sandbox, runner: SandboxThread) -> None:
        self.sandbox = sandbox
        self.runner = runner
        self.kubeconfig = sandbox.kubeconfig
        api = k8s_config.new_client_from_config(config_file=str(self.kubeconfig))
        self.core = k8s.CoreV1Api(api)
        self.batch = k8s.BatchV1Api(api)
        self.custom = k8s.CustomObjectsApi(api)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [kubectl_binary(), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def apply(self, manifest: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))

    def namespace(self) -> str:
        name = f"e2e-{uuid.uuid4().hex[:6]}"
        self.core.create_namespace({"metadata": {"name": name}})
        return name

    def pvc_dir(self, namespace: str, claim: str) -> Path:
        path = self.sandbox.data_dir / "pvcs" / namespace / claim
        path.mkdir(parents=True, exist_ok=True)
        return path

    def ftj(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object("finetune.dev", "v1alpha1", namespace, "finetunejobs", name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def status(self, namespace: str, name: str) -> dict[str, Any]:
        return (self.ftj(namespace, name) or {}).get("status") or {}

    def wait_phase(self, namespace: str, name: str, *phases: str, timeout: float = 120) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            status = self.status(namespace, name)
            return status if status.get("phase") in phases else None

        try:
            return wait_for(reached, timeout, message=f"{namespace}/{name} to reach {phases}")
        except TimeoutError as exc:
            raise AssertionError(
                f"{exc}; status: {json.dumps(self.status(namespace, name), indent=1)}\n"
                f"operator log tail:\n{self.operator_log_tail()}"
            ) from None

    def pods(self, namespace: str, name: str) -> list[Any]:
        return self.core.list_namespaced_pod(namespace, label_selector=f"finetune.dev/job-name={name}").items

    def events(self, namespace: str, name: str) -> list[Any]:
        return [e for e in self.core.list_namespaced_event(namespace).items if e.involved_object.name == name]

    def operator_log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.sandbox.operator_log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no operator log)"


def progress_endpoint(cluster: Cluster, namespace: str, name: str) -> tuple[str, ssl.SSLContext, str]:
    """What a trainer of job NAME is given: its progress URL, a TLS context trusting the CA bundle of its progress
    Secret (ca.crt) and verifying the host, and its token (the Secret's token)."""
    secret = cluster.core.read_namespaced_secret(f"{name}-progress", namespace)
    context = ssl.create_default_context(cadata=base64.b64decode(secret.data["ca.crt"]).decode())
    url = f"https://127.0.0.1:{cluster.sandbox.progress_port}/progress/v1/namespaces/{namespace}/finetunejobs/{name}"
    return url, context, base64.b64decode(secret.data["token"]).decode()


def write_tiny_text_classifier(model_dir: Path) -> None:
    """A 2-layer BERT with a word-level vocabulary covering the test sentences."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    model_dir.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "was", "is", "very", "it", "a", "film"]
    vocab += WORDS_POSITIVE + WORDS_NEGATIVE
    (model_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(model_dir / "vocab.txt")).save_pretrained(model_dir)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        num_labels=2,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    BertForSequenceClassification(config).save_pretrained(model_dir)


def write_sentiment_csv(path: Path, rows: int = 64, *, label_column: str = "label") -> None:
    import random

    rng = random.Random(7)
    lines = [f"sentence,{label_column}"]
    for i in range(rows):
        positive = i % 2 == 0
        word = rng.choice(WORDS_POSITIVE if positive else WORDS_NEGATIVE)
        lines.append(f"the movie was very {word},{'positive' if positive else 'negative'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def finetunejob(name: str, namespace: str, **spec_overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "task": "text-classification",
        "model": {"source": "pvc://models/tiny-bert"},
        "dataset": {
            "train": "pvc://datasets/sentiment/train.csv",
            "validationSplit": 0.25,
            "columns": {"text": "sentence", "label": "label"},
        },
        "hyperparameters": {
            "maxSteps": 6,
            "batchSize": 8,
            "learningRate": 1.0e-3,
            "maxSeqLength": 16,
            "evalStrategy": "no",
        },
        "resources": {"nodes": 1, "gpusPerNode": 0, "cpu": "1", "memory": "2Gi"},
        "output": {"uri": f"pvc://models/out-{name}", "checkpointSteps": 3},
        "runPolicy": {"startupDeadlineSeconds": 600},
    }
    for key, value in spec_overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return {
        "apiVersion": "finetune.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def wait_operator_ready(cluster: Cluster, log_offset: int, timeout: float = 60) -> None:
    def ready() -> bool:
        with open(cluster.sandbox.operator_log, "rb") as log:
            log.seek(log_offset)
            return OPERATOR_READY in log.read()

    wait_for(ready, timeout, interval=0.05, message="the restarted operator to start watching")


def kill_operator(cluster: Cluster) -> None:
    process = cluster.sandbox.operator
    assert process is not None and process.poll() is None, (
        f"the operator died on its own (exit {process and process.returncode}):\n{cluster.operator_log_tail()}"
    )
    process.kill()  # SIGKILL: no cleanup, no graceful end of in-flight API calls
    process.wait()
    cluster.sandbox.operator = None


def restart_operator(cluster: Cluster) -> None:
    offset = cluster.sandbox.operator_log.stat().st_size if cluster.sandbox.operator_log.exists() else 0
    cluster.sandbox.start_operator()
    wait_operator_ready(cluster, offset)
