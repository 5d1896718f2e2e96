"""The `ftjob` subcommands (I/O: the Kubernetes API, the terminal, the sandbox)."""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path
from typing import Any

import yaml
from finetune_operator import clock
from finetune_operator.names import GROUP, LABEL_JOB_NAME, PLURAL, TRAINER_CONTAINER, VERSION

from . import display


class UserError(Exception):
    """Something the user can fix; printed without a traceback."""


# -- any cluster, through a kubeconfig ----------------------------------------------------------------


def _clients(args: argparse.Namespace) -> tuple[Any, Any, str]:
    from kubernetes import client, config

    try:
        api = config.new_client_from_config(config_file=args.kubeconfig)
        _, context = config.list_kube_config_contexts(config_file=args.kubeconfig)
    except (config.ConfigException, yaml.YAMLError, TypeError, AttributeError) as exc:
        # A file that is not YAML, or YAML that is not a kubeconfig, fails inside the client with these.
        where = args.kubeconfig or "$KUBECONFIG or ~/.kube/config"
        raise UserError(
            f"no usable kubeconfig in {where} ({exc}); start one with `ftjob sandbox up` or pass --kubeconfig"
        ) from None
    namespace = (context or {}).get("context", {}).get("namespace") or "default"
    return client.CustomObjectsApi(api), client.CoreV1Api(api), namespace


def _list(custom: Any, namespace: str | None) -> list[dict[str, Any]]:
    if namespace is None:
        return custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
    return custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]


def _get_table(args: argparse.Namespace) -> str:
    custom, _, default_ns = _clients(args)
    namespace = None if args.all_namespaces else (args.namespace or default_ns)
    items = sorted(_list(custom, namespace), key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
    if not items:
        return f"No FineTuneJobs found in {'any namespace' if namespace is None else namespace}."
    now = clock.now()
    return display.table([display.row(item, now) for item in items])


def get(args: argparse.Namespace) -> int:
    print(_get_table(args))
    return 0


def watch(args: argparse.Namespace) -> int:
    while True:
        text = _get_table(args)
        print("\x1b[2J\x1b[H" + text, flush=True)
        time.sleep(args.interval)


def _read(custom: Any, namespace: str, name: str) -> dict[str, Any]:
    from kubernetes.client.exceptions import ApiException

    try:
        return custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as exc:
        if exc.status == 404:
            raise UserError(f"FineTuneJob {namespace}/{name} not found") from None
        raise


def describe(args: argparse.Namespace) -> int:
    custom, core, default_ns = _clients(args)
    namespace = args.namespace or default_ns
    ftj = _read(custom, namespace, args.name)
    events = [
        core.api_client.sanitize_for_serialization(e)
        for e in core.list_namespaced_event(namespace).items
        if e.involved_object.uid == ftj["metadata"].get("uid") or e.involved_object.name == args.name
    ]
    events.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    print(display.describe(ftj, events, clock.now()))
    return 0


def logs(args: argparse.Namespace) -> int:
    custom, core, default_ns = _clients(args)
    namespace = args.namespace or default_ns
    _read(custom, namespace, args.name)
    pods = core.list_namespaced_pod(
        namespace, label_selector=f"{LABEL_JOB_NAME}={args.name},batch.kubernetes.io/job-completion-index={args.rank}"
    ).items
    if not pods:
        raise UserError(f"{args.name} has no trainer pod for rank {args.rank} yet; see `ftjob describe {args.name}`")
    pod = max(pods, key=lambda p: p.metadata.creation_timestamp)
    stream = core.read_namespaced_pod_log(
        pod.metadata.name,
        namespace,
        container=TRAINER_CONTAINER,
        follow=args.follow,
        tail_lines=args.tail,
        _preload_content=False,
    )
    for chunk in stream.stream():
        os.write(1, chunk)
    return 0


# -- the sandbox ---------------------------------------------------------------------------------------


def sandbox(args: argparse.Namespace) -> int:
    from finetune_sandbox.cluster import Sandbox, SandboxThread

    data_dir = Path(args.data_dir).resolve()
    pid_file = data_dir / "sandbox.pid"
    if args.action == "down":
        if not pid_file.exists():
            raise UserError(f"no sandbox is running from {data_dir}")
        pid = int(pid_file.read_text())
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            print(f"the sandbox (pid {pid}) had already stopped")
        pid_file.unlink(missing_ok=True)
        return 0

    runner = SandboxThread(Sandbox(data_dir, port=args.port, gpus=args.gpus, run_operator=not args.no_operator))
    url = runner.start()
    pid_file.write_text(str(os.getpid()))
    print(f"sandbox API server: {url}")
    print(f"kubeconfig:         {runner.sandbox.kubeconfig}")
    if not args.no_operator:
        print(f"operator log:       {runner.sandbox.operator_log}")
    print(
        f"\n  export KUBECONFIG={runner.sandbox.kubeconfig}\n  kubectl apply -f manifests/samples/sentiment-minilm.yaml\n"
        "  ftjob watch\n\nCtrl-C or `ftjob sandbox down` stops it.",
        flush=True,
    )
    stopping = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stopping.update(now=True))
    try:
        while not stopping["now"]:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        runner.stop()
        pid_file.unlink(missing_ok=True)
    return 0


def demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args)


def train(args: argparse.Namespace) -> int:
    from .local_train import run_local

    return run_local(args)
