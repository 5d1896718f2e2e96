"""The `ftjob` subcommands (I/O: the Kubernetes API, the terminal, the sandbox)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from finetune_operator import clock
from finetune_operator.builders.env import COMPLETION_INDEX_ANNOTATION
from finetune_operator.names import GROUP, LABEL_JOB_NAME, PLURAL, TRAINER_CONTAINER, VERSION

from . import display, interrupt, ranks, sandbox_record


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


# (connect, read) seconds for a list: a server that stops answering fails the call instead of hanging it.
LIST_TIMEOUT = (10, 30)


def _list(custom: Any, namespace: str | None) -> list[dict[str, Any]]:
    if namespace is None:
        listed = custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, _request_timeout=LIST_TIMEOUT)
    else:
        listed = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _request_timeout=LIST_TIMEOUT)
    return listed["items"]


def _get_table(args: argparse.Namespace) -> str:
    custom, _, default_ns = _clients(args)
    namespace = None if args.all_namespaces else (args.namespace or default_ns)
    # Close the client here, not in a finalizer when it is dropped (see interrupt.py).
    with custom.api_client:
        listed = _list(custom, namespace)
    items = sorted(listed, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
    if not items:
        return f"No FineTuneJobs found in {'any namespace' if namespace is None else namespace}."
    now = clock.now()
    return display.table([display.row(item, now) for item in items])


def get(args: argparse.Namespace) -> int:
    print(_get_table(args))
    return 0


def watch(args: argparse.Namespace) -> int:
    # Ctrl-C raises KeyboardInterrupt (main() exits 130); when a finalizer swallowed it, the flag ends the loop.
    with interrupt.ctrl_c() as interrupted:
        while not interrupted():
            try:
                text = _get_table(args)
            except Exception:
                # Ctrl-C can come out as another error: pydantic reports a KeyboardInterrupt raised while it reads
                # a response's headers (the kubernetes client's ApiResponse) as a ValidationError.
                if interrupted():
                    break
                raise
            if interrupted():
                break
            print("\x1b[2J\x1b[H" + text, flush=True)
            interrupt.sleep(args.interval, interrupted)
    return 130


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
    pod, per_node = _pod_of_rank(core, namespace, args.name, args.rank)
    shared = per_node > 1
    if shared:
        first = args.rank - args.rank % per_node
        print(
            f"ftjob: ranks {first}-{first + per_node - 1} write to one log, pod {pod.metadata.name}'s; "
            f"left out: the lines torchrun marked as another rank's ([rankN]:)",
            file=sys.stderr,
            flush=True,
        )
    stream = core.read_namespaced_pod_log(
        pod.metadata.name,
        namespace,
        container=TRAINER_CONTAINER,
        follow=args.follow,
        # A rank's last lines are counted among its own, except while following (the server cuts the pod's log).
        tail_lines=args.tail if not shared or args.follow else None,
        _preload_content=False,
    )
    if not shared:
        for chunk in stream.stream():
            os.write(1, chunk)
        return 0
    lines = ranks.RankLines(args.rank)
    if args.follow:
        for chunk in stream.stream():
            os.write(1, lines.feed(chunk))
        os.write(1, lines.finish())
        return 0
    kept = b"".join(lines.feed(chunk) for chunk in stream.stream()) + lines.finish()
    os.write(1, ranks.last_lines(kept, args.tail))
    return 0


def _pod_of_rank(core: Any, namespace: str, name: str, rank: int) -> tuple[Any, int]:
    """(the newest pod that runs process `rank` of job `name`, how many processes each pod runs)."""
    not_yet = f"{name} has no trainer pod for rank {rank} yet; see `ftjob describe {name}`"
    pods = core.list_namespaced_pod(namespace, label_selector=f"{LABEL_JOB_NAME}={name}").items
    if not pods:
        raise UserError(not_yet)
    # The newest pod says how the job is laid out: its spec cannot change while the job runs.
    nodes, per_node = ranks.pod_shape(_trainer_env(max(pods, key=_created)))
    try:
        node = ranks.node_of(rank, nodes, per_node)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    on_node = [pod for pod in pods if _completion_index(pod) == str(node)]
    if not on_node:
        raise UserError(not_yet)
    return max(on_node, key=_created), per_node  # a retry's pod, not the one it replaced


def _created(pod: Any) -> Any:
    return pod.metadata.creation_timestamp


def _completion_index(pod: Any) -> str | None:
    """The pod's node rank: the Job controller writes it as a label and as an annotation."""
    for found in (pod.metadata.labels, pod.metadata.annotations):
        if (found or {}).get(COMPLETION_INDEX_ANNOTATION):
            return found[COMPLETION_INDEX_ANNOTATION]
    return None


def _trainer_env(pod: Any) -> dict[str, str]:
    for container in pod.spec.containers or []:
        if container.name == TRAINER_CONTAINER:
            return {var.name: var.value for var in container.env or [] if var.value is not None}
    return {}


# -- the sandbox ---------------------------------------------------------------------------------------


DEFAULT_DATA_DIR = ".sandbox/cluster"
NO_SANDBOX = "no sandbox is running; if you started one with --data-dir DIR, run `ftjob sandbox down --data-dir DIR`"


def sandbox(args: argparse.Namespace) -> int:
    if args.action == "down":
        return _sandbox_down(args)
    return _sandbox_up(args)


def _sandbox_up(args: argparse.Namespace) -> int:
    from finetune_sandbox.cluster import Sandbox, SandboxThread

    data_dir = Path(args.data_dir).resolve()
    pid_file = data_dir / sandbox_record.PID_FILE
    already = sandbox_record.lookup(data_dir)
    if already is not None and already.running():
        raise UserError(
            f"a sandbox is already running from {data_dir} (pid {already.pid}); "
            f"`ftjob sandbox down --data-dir {data_dir}` stops it"
        )
    runner = SandboxThread(Sandbox(data_dir, port=args.port, gpus=args.gpus, run_operator=not args.no_operator))
    url = runner.start()
    pid_file.write_text(str(os.getpid()))
    down = "ftjob sandbox down"
    try:
        sandbox_record.write(data_dir, os.getpid(), url)
    except OSError as exc:
        # `down` cannot find this one without its folder; say so rather than fail.
        down = f"ftjob sandbox down --data-dir {data_dir}"
        print(f"ftjob: could not record the sandbox in {sandbox_record.records_dir()} ({exc})", file=sys.stderr)
    print(f"sandbox API server: {url}")
    print(f"kubeconfig:         {runner.sandbox.kubeconfig}")
    if not args.no_operator:
        print(f"operator log:       {runner.sandbox.operator_log}")
    print(
        f"\n  export KUBECONFIG={runner.sandbox.kubeconfig}\n  kubectl apply -f manifests/samples/sentiment-minilm.yaml\n"
        f"  ftjob watch\n\nCtrl-C or `{down}` stops it.",
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
        sandbox_record.remove(data_dir)
    return 0


def _sandbox_down(args: argparse.Namespace) -> int:
    """Stop the sandbox in --data-dir, else the one `up` recorded, else the one in the default folder."""
    if args.data_dir is not None:
        data_dir = Path(args.data_dir).resolve()
        record = sandbox_record.lookup(data_dir)
        if record is None:
            others = [r for r in sandbox_record.read_all() if r.data_dir != data_dir and r.running()]
            hint = "".join(f"; running: `ftjob sandbox down --data-dir {r.data_dir}`" for r in others)
            raise UserError(f"no sandbox is running from {data_dir}{hint}")
        return _stop(record)

    running, stale = [], []
    for record in sandbox_record.read_all():
        (running if record.running() else stale).append(record)
    for record in stale:
        sandbox_record.forget(record)
        print(f"the sandbox from {record.data_dir} (pid {record.pid}) is no longer running; removed its record")
    if len(running) > 1:
        choices = "".join(f"\n  ftjob sandbox down --data-dir {r.data_dir}" for r in running)
        raise UserError(f"{len(running)} sandboxes are running; say which one to stop:{choices}")
    if running:
        return _stop(running[0])
    # No record: a sandbox in the default folder (one that could not write its record, or an older ftjob's).
    record = sandbox_record.lookup(Path(DEFAULT_DATA_DIR).resolve())
    if record is not None:
        return _stop(record)
    if stale:
        return 0
    raise UserError(NO_SANDBOX)


def _stop(record: sandbox_record.Record) -> int:
    """SIGTERM the `ftjob sandbox up` process: it stops the sandbox and removes its pid file and record."""
    try:
        if not record.running():  # gone, or its pid now names another process
            raise ProcessLookupError
        os.kill(record.pid, signal.SIGTERM)
    except ProcessLookupError:
        sandbox_record.forget(record)
        print(f"the sandbox from {record.data_dir} (pid {record.pid}) had already stopped")
        return 0
    print(f"stopping the sandbox from {record.data_dir} (pid {record.pid})")
    return 0


def demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args)


def train(args: argparse.Namespace) -> int:
    from .local_train import run_local

    return run_local(args)
