"""`python -m finetune_operator`: run the operator (Kopf) for all namespaces or the listed ones."""

from __future__ import annotations

import argparse
import logging
import sys
import time

import kopf

from . import memory_profile


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="finetune-operator", description=__doc__)
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="watch FineTuneJobs in every namespace (default)"
    )
    scope.add_argument("-n", "--namespace", action="append", default=[], help="watch only this namespace (repeatable)")
    parser.add_argument(
        "--liveness", default="http://0.0.0.0:8080/healthz", help="Kopf liveness endpoint URL ('' to disable)"
    )
    peering = parser.add_mutually_exclusive_group()
    peering.add_argument("--standalone", action="store_true", help="no peering with other operator replicas")
    peering.add_argument(
        "--peering",
        metavar="NAME",
        default=None,
        help="Kopf peering object to coordinate replicas through: the replica with the highest "
        "priority acts, the others pause until it is gone (created if absent)",
    )
    parser.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority (default: derived from the start time, so the oldest replica stays active)",
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def start_time_priority(started: float) -> int:
    """Older replicas get higher priorities, so a replica that starts later (a rollout, a reschedule)
    waits instead of taking over. Kopf pauses *every* replica when two share a priority, so the
    default must differ between replicas: microseconds make a tie practically impossible."""
    return -int(started * 1_000_000)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Deliberately late (the one function-local import in the package, allowed by
    # tests/operator/test_operator_import_structure.py): importing handlers registers the Kopf handlers, a side effect
    # on Kopf's global registry, and loads the whole operator, Optuna included. Doing it only once the
    # arguments are parsed keeps --help cheap, and importing this module (tests do) free of that side effect.
    from . import handlers  # noqa: F401  (registers the handlers)

    memory_profile.install()

    peering: dict[str, object] = {}
    if args.peering:
        priority = args.priority if args.priority is not None else start_time_priority(time.time())
        peering = {"peering_name": args.peering, "priority": priority}
    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        standalone=args.standalone or None,
        liveness_endpoint=args.liveness or None,
        # The start-up handler makes sure the peering object exists (Kopf would wait for it forever).
        memo=kopf.Memo(peering_name=args.peering, peering_namespaces=list(args.namespace)),
        **peering,  # type: ignore[arg-type]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
