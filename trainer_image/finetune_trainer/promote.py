"""Promote a hyperparameter search's best trial: its model becomes the job's output; the other trials go.

Run by the operator's `<job>-promote` Job after the last trial:

    python -m finetune_trainer.promote --best URI --output URI [--remove URI ...]

Every entry of the best trial's folder except `checkpoints/` is moved into the output folder (a rename
on one filesystem, so a multi-GB model costs nothing), replacing an older entry of the same name; then
each --remove folder is deleted. Every step is safe to repeat, so a Job retry after a crash half-way
converges: a missing best folder is fine as long as the output already holds a model.

pvc:// and file:// URIs are resolved through FINETUNE_VOLUME_MOUNTS like the trainer's. s3:// URIs go
through the trainer's storage layer (storage.py: the job's AWS_* variables, bounded retries, failures with
the store's error code): each object is copied server-side, metrics.json and README.md last, and only then
are the copied objects deleted from the trial, so a crash never loses an object and a retry copies again
what is left. A bucket has no renames and no atomic folder replace: objects of an older model under the
output that the new one does not have stay (as with the trainer's own uploads, S3 outputs are only added
to and replaced, never pruned), and nothing is deleted that was not copied first, except the --remove
folders the operator names.

Exit codes follow docs/pod-contract.md: 0 done, 3 invalid input, 6-9 the storage failures (8 retried by
the Job, the others final), 1 anything else; the termination message says which.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import posixpath
import shutil
import sys
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlparse

from finetune_trainer import storage
from finetune_trainer.errors import (
    EXIT_CRASH,
    EXIT_OK,
    InvalidData,
    StorageNotFound,
    TrainerFailure,
    write_termination_message,
)
from finetune_trainer.sources import resolve_local_path, uri_scheme, volume_mounts

logger = logging.getLogger("finetune_trainer.promote")

KEPT_IN_TRIAL = "checkpoints"  # resumable state of the trial, not part of the model
# Any of these in the output means a model was promoted there (the trainer always writes metrics.json).
MODEL_MARKERS = ("metrics.json", "config.json", "adapter_config.json")
FAILED_REASON = "PromoteFailed"
SCHEMES = ("", "file", "pvc", "s3")  # "": a plain path


class Store(Protocol):
    """The few filesystem operations promotion needs; paths are the store's own (local or bucket/key)."""

    def exists(self, path: str) -> bool: ...
    def is_dir(self, path: str) -> bool: ...
    def names(self, folder: str) -> list[str]: ...
    def move(self, source: str, target: str) -> None: ...
    def remove(self, path: str) -> None: ...


class LocalStore:
    """A mounted filesystem (pvc:// and file:// URIs): moves are renames."""

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def names(self, folder: str) -> list[str]:
        return sorted(os.listdir(folder))

    def move(self, source: str, target: str) -> None:
        self.remove(target)  # os.replace cannot replace a non-empty folder
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        try:
            os.replace(source, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            # Another filesystem after all (e.g. two claims): copy, then delete; a crash leaves the source.
            shutil.move(source, target)

    def remove(self, path: str) -> None:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)


@dataclass
class PromoteResult:
    moved: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def _inside(path: str, folder: str) -> bool:
    """True when `path` is `folder` or below it (plain path arithmetic; both in one store)."""
    path, folder = posixpath.normpath(path), posixpath.normpath(folder)
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _has_model(store: Store, folder: str) -> bool:
    return any(store.exists(posixpath.join(folder, marker)) for marker in MODEL_MARKERS)


def check_folders(best: str, output: str, remove: list[str]) -> None:
    """InvalidData when a move or a removal would destroy the output (paths of one store)."""
    if _inside(output, best):
        raise InvalidData(
            f"--output {output} is the best trial's folder {best} or inside it; give the job's output folder"
        )
    for folder in remove:
        if _inside(output, folder):
            raise InvalidData(f"--remove {folder} would delete the output {output}; give only trial folders")


def _nothing_to_promote(best: str, output: str, best_state: str) -> InvalidData:
    return InvalidData(
        f"nothing to promote: the best trial's folder {best} {best_state} "
        f"and the output {output} has no model yet (none of {', '.join(MODEL_MARKERS)})"
    )


def promote(store: Store, best: str, output: str, remove: list[str]) -> PromoteResult:
    """Move the best trial's entries (not checkpoints/) into `output`, then delete each `remove` folder."""
    check_folders(best, output, remove)
    result = PromoteResult()
    if store.is_dir(best):
        for name in store.names(best):
            target = posixpath.join(output, name)
            if name == KEPT_IN_TRIAL:
                continue
            if _inside(best, target):
                # e.g. an entry named "trials" would replace the folder the trials live in.
                logger.warning("not moving %s: %s holds the best trial itself", name, target)
                continue
            store.move(posixpath.join(best, name), target)
            logger.info("moved %s to %s", name, target)
            result.moved.append(name)
    elif store.exists(best):
        raise InvalidData(f"--best {best} is a file; give the best trial's output folder")
    if not _has_model(store, output):
        raise _nothing_to_promote(
            best, output, "holds no model" if result.moved or store.exists(best) else "does not exist"
        )
    for folder in remove:
        if store.exists(folder):
            store.remove(folder)
            logger.info("removed %s", folder)
            result.removed.append(folder)
    return result


# Written after every other object, as the trainer uploads them: a model marker in the output means the
# model's other files are there already.
WRITTEN_LAST = ("README.md", "metrics.json")


def promote_s3(best_uri: str, output_uri: str, remove_uris: list[str]) -> PromoteResult:
    """promote() for s3:// URIs: copy the best trial's objects (not checkpoints/) into the output, then
    delete the copied objects from the trial, then each `remove` folder."""
    best = storage.S3Location.parse(best_uri, "--best")
    output = storage.S3Location.parse(output_uri, "--output")
    removes = [storage.S3Location.parse(uri, "--remove") for uri in remove_uris]
    check_folders(best.path, output.path, [folder.path for folder in removes])
    fs = storage.filesystem()
    result = PromoteResult()
    moving = []
    for relative in storage.list_files(str(best), what="best trial"):
        name = relative.split("/", 1)[0]
        if name == KEPT_IN_TRIAL:
            continue
        if _inside(best.path, output.child(name).path):
            logger.warning("not moving %s: %s holds the best trial itself", name, output.child(name))
            continue
        moving.append(relative)
    moving.sort(key=_copy_order)
    for relative in moving:
        source, target = best.child(relative), output.child(relative)
        storage.with_retries(
            lambda source=source, target=target: fs.cp_file(source.path, target.path),
            target,
            what="promoted model",
            action="uploading",
        )
    _delete_objects(fs, best, [best.child(relative).key for relative in moving])
    result.moved = sorted({relative.split("/", 1)[0] for relative in moving})
    for name in result.moved:
        logger.info("moved %s to %s", name, output.child(name))
    if not any(marker in moving for marker in MODEL_MARKERS) and not _s3_has_model(fs, output):
        raise _nothing_to_promote(str(best), str(output), "holds no model")
    for folder in removes:
        if storage.delete_tree(str(folder), what="trial folder"):
            logger.info("removed %s", folder)
            result.removed.append(str(folder))
    return result


def _copy_order(relative: str) -> tuple[int, str]:
    return (WRITTEN_LAST.index(relative) + 1 if relative in WRITTEN_LAST else 0, relative)


def _s3_has_model(fs, output: storage.S3Location) -> bool:
    for marker in MODEL_MARKERS:
        location = output.child(marker)
        try:
            storage.with_retries(
                lambda location=location: fs.call_s3("head_object", Bucket=location.bucket, Key=location.key),
                location,
                what="output",
                action="listing",
            )
        except StorageNotFound:
            continue
        return True
    return False


def _delete_objects(fs, folder: storage.S3Location, keys: list[str]) -> None:
    """Delete exactly `keys` (the objects just copied), never a listing made later: an object that
    appeared since was not copied, so it stays."""
    for start in range(0, len(keys), storage.DELETE_BATCH):
        batch = {"Objects": [{"Key": key} for key in keys[start : start + storage.DELETE_BATCH]], "Quiet": True}
        answer = storage.with_retries(
            lambda batch=batch: fs.call_s3("delete_objects", Bucket=folder.bucket, Delete=batch),
            folder,
            what="best trial",
            action="deleting",
        )
        # DeleteObjects answers 200 and lists the keys it could not delete: those are failures too.
        errors = answer.get("Errors") or []
        if errors:
            first = errors[0]
            failed = storage.S3Location(folder.bucket, first.get("Key", ""))
            raise storage.failure_class(first.get("Code"), None)(
                f"best trial {failed}: the store refused to delete it after copying it "
                f"({first.get('Code')}: {first.get('Message', '')}) and {len(errors) - 1} other object(s); "
                "the output already holds the copies",
                uri=str(failed),
                code=first.get("Code"),
            )


def check_schemes(uris: list[str]) -> str:
    """ "s3" when every URI is s3://, "mounted" when none is; InvalidData for a mix or another scheme."""
    for uri in uris:
        if urlparse(uri).scheme not in SCHEMES:
            raise InvalidData(
                f"{uri}: cannot promote {urlparse(uri).scheme}:// URIs; give pvc://, s3://, file:// or a path"
            )
    schemes = {uri_scheme(uri) for uri in uris}
    if schemes == {"s3"}:
        return "s3"
    if "s3" in schemes:
        raise InvalidData(
            f"--best, --output and --remove mix s3:// with mounted paths ({', '.join(uris)}); "
            "trials live under the job's output, so give URIs of one kind"
        )
    return "mounted"


def open_store(best: str, output: str, remove: list[str], environ=os.environ) -> tuple[Store, str, str, list[str]]:
    """The mounted filesystem pvc:// and file:// URIs live in, and their paths in it."""
    if check_schemes([best, output, *remove]) == "s3":
        raise InvalidData("s3:// URIs are promoted by promote_s3, not through a mounted filesystem")
    mounts = volume_mounts(environ)
    paths = [os.path.abspath(resolve_local_path(uri, mounts)) for uri in [best, output, *remove]]
    return LocalStore(), paths[0], paths[1], paths[2:]


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str):
        # Bad arguments are invalid input (exit 3, in the termination message), not argparse's exit 2.
        raise InvalidData(f"{message}; usage: {self.format_usage().strip()}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _ArgumentParser(prog="python -m finetune_trainer.promote", description=__doc__.split("\n\n")[0])
    parser.add_argument("--best", required=True, help="the best trial's output folder (pvc://, s3:// or file://)")
    parser.add_argument("--output", required=True, help="the FineTuneJob's output folder")
    parser.add_argument("--remove", action="append", default=[], help="a folder to delete afterwards (repeatable)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, environ=os.environ) -> int:
    """Promote per the arguments; return the exit code (never calls sys.exit)."""
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        args = parse_args(argv)
        if check_schemes([args.best, args.output, *args.remove]) == "s3":
            result = promote_s3(args.best, args.output, args.remove)
        else:
            store, best, output, remove = open_store(args.best, args.output, args.remove, environ)
            result = promote(store, best, output, remove)
    except TrainerFailure as exc:
        # InvalidData (3) and the storage failures (6-9), each with its own exit code for the podFailurePolicy.
        logger.error("%s: %s", exc.reason, exc)
        write_termination_message(exc.reason, str(exc), environ)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - every failure must become an exit code and a message
        logger.exception("promotion failed")
        write_termination_message(FAILED_REASON, f"{type(exc).__name__}: {exc}", environ)
        return EXIT_CRASH
    summary = (
        f"promoted {args.best} to {args.output}: moved {len(result.moved)} entries, "
        f"removed {len(result.removed)} folders"
    )
    logger.info("%s", summary)
    write_termination_message("Completed", summary, environ)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
