"""`ftjob`: the project's command line.

ftjob demo                      the sandbox, the operator and a real CPU fine-tuning, with live progress
ftjob sandbox up | down         a local cluster for kubectl and the operator
ftjob get | watch               FineTuneJobs as a table (any cluster, via kubeconfig)
ftjob describe NAME             conditions, events, progress and why a job is not running
ftjob logs NAME                 the trainer's log (rank 0 unless --rank)
ftjob train job.yaml            run a FineTuneJob locally, no cluster (check a spec on a data sample)
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ftjob", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="run the sample fine-tuning job in a fresh sandbox with a live progress bar"
    )
    demo.add_argument("--data-dir", default=".sandbox/demo", help="where the sandbox keeps its files (wiped first)")
    demo.add_argument(
        "--sample", default=None, help="FineTuneJob YAML to run (default: manifests/samples/sentiment-minilm.yaml)"
    )
    demo.add_argument("--timeout", type=float, default=1800, help="give up after this many seconds")
    demo.add_argument(
        "--keep", action="store_true", help="keep the sandbox running after the job ends (Ctrl-C stops it)"
    )
    demo.add_argument(
        "--images",
        action="store_true",
        help="run the operator and the trainer pods from the images built by `make images` (the "
        "kubelet's image runtime, buildah; the operator as the pod of its Deployment)",
    )
    demo.add_argument(
        "--trainer-image",
        default=None,
        help="with --images: the trainer image (default: localhost/finetune-trainer:0.1.0-cpu)",
    )
    demo.add_argument(
        "--operator-image",
        default=None,
        help="with --images: the operator image (default: localhost/finetune-operator:0.1.0)",
    )

    sandbox = commands.add_parser("sandbox", help="start or stop a local sandbox cluster")
    sandbox_commands = sandbox.add_subparsers(dest="action", required=True)
    up = sandbox_commands.add_parser(
        "up", help="start the sandbox in the foreground (Ctrl-C or `ftjob sandbox down` stops it)"
    )
    up.add_argument("--data-dir", default=".sandbox/cluster")
    up.add_argument("--port", type=int, default=0, help="API server port (0: any free port)")
    up.add_argument("--gpus", type=int, default=0, help="fake GPUs the sandbox node offers (nvidia.com/gpu)")
    up.add_argument(
        "--no-operator", action="store_true", help="do not start the operator (run your own against the kubeconfig)"
    )
    down = sandbox_commands.add_parser(
        "down",
        help="stop a sandbox started with `ftjob sandbox up` (the one it recorded, from any folder)",
    )
    down.add_argument(
        "--data-dir",
        default=None,
        help="the sandbox to stop, by its --data-dir (default: the running one `up` recorded, else .sandbox/cluster)",
    )

    get = commands.add_parser("get", help="list FineTuneJobs")
    get.add_argument("-n", "--namespace", default=None)
    get.add_argument("-A", "--all-namespaces", action="store_true")

    watch = commands.add_parser("watch", help="list FineTuneJobs and refresh until Ctrl-C")
    watch.add_argument("-n", "--namespace", default=None)
    watch.add_argument("-A", "--all-namespaces", action="store_true")
    watch.add_argument("--interval", type=float, default=2.0)

    describe = commands.add_parser("describe", help="show a FineTuneJob's conditions, events and progress")
    describe.add_argument("name")
    describe.add_argument("-n", "--namespace", default=None)

    logs = commands.add_parser("logs", help="print the trainer's log")
    logs.add_argument("name")
    logs.add_argument("-n", "--namespace", default=None)
    logs.add_argument(
        "--rank",
        type=int,
        default=0,
        help="which training process: its global rank (torchrun's RANK), 0 to nodes x processes per node - 1; "
        "rank R runs in the pod of node R // processes per node. With several processes per node "
        "(gpusPerNode > 1) they write to their pod's one log: you get that log without the lines torchrun marked "
        "as another rank's ([rankN]:); lines without a mark may be any of the pod's processes'",
    )
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("--tail", type=int, default=None, help="only the last N lines (of the rank's lines)")

    train = commands.add_parser("train", help="run a FineTuneJob YAML locally, without a cluster")
    train.add_argument("file", help="a FineTuneJob manifest (or just its spec)")
    train.add_argument("--pvc-root", default=".", help="pvc://CLAIM/path resolves to PVC_ROOT/CLAIM/path")
    train.add_argument("--max-steps", type=int, default=None, help="override hyperparameters.maxSteps (a quick check)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from urllib3.exceptions import MaxRetryError

    from . import commands

    handler = {
        "demo": commands.demo,
        "sandbox": commands.sandbox,
        "get": commands.get,
        "watch": commands.watch,
        "describe": commands.describe,
        "logs": commands.logs,
        "train": commands.train,
    }[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except commands.UserError as exc:
        print(f"ftjob: {exc}", file=sys.stderr)
        return 2
    except MaxRetryError as exc:
        # The kubernetes client's retries are spent: the server is down or the kubeconfig points elsewhere.
        server = f"{exc.pool.scheme}://{exc.pool.host}:{exc.pool.port}" if exc.pool else "the API server"
        print(
            f"ftjob: cannot reach the Kubernetes API server at {server} ({exc.reason}); check --kubeconfig or "
            "$KUBECONFIG, or start a local cluster with `ftjob sandbox up`",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
