"""Promote a hyperparameter search's best trial: its model becomes the job's output; the other trials go.

Run by the operator's `<job>-promote` Job after the last trial:

    python -m finetune_trainer.promote --best URI --output URI [--remove URI ...]

Every entry of the best trial's folder except `checkpoints/` is moved into the output folder (a rename
on one filesystem, so a multi-GB model costs nothing), replacing an older entry of the same name; then
each --remove folder is deleted. Every step is safe to repeat, so a Job retry after a crash half-way
converges: a missing best folder is fine as long as the output already holds a model.

pvc:// and file:// URIs are resolved through FINETUNE_VOLUME_MOUNTS like the trainer's; s3:// URIs go
through fsspec (copy, then delete). Exit codes follow docs/pod-contract.md: 0 done, 3 invalid input,
1 anything else; the termination message says which.
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

import fsspec

from finetune_trainer.errors import EXIT_CRASH, EXIT_INVALID_DATA, EXIT_OK, InvalidData, write_termination_message
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


class FsspecStore:
    """An object store through fsspec (s3://): moves are copies then deletes."""

    def __init__(self, fs) -> None:
        self.fs = fs

    def exists(self, path: str) -> bool:
        self.fs.invalidate_cache()  # listings are cached, and we change them as we go
        return self.fs.exists(path)

    def is_dir(self, path: str) -> bool:
        self.fs.invalidate_cache()
        return self.fs.isdir(path)

    def names(self, folder: str) -> list[str]:
        self.fs.invalidate_cache()
        return sorted(posixpath.basename(entry.rstrip("/")) for entry in self.fs.ls(folder, detail=False))

    def move(self, source: str, target: str) -> None:
        self.remove(target)
        if self.fs.isdir(source):
            self.fs.copy(source.rstrip("/") + "/", target.rstrip("/") + "/", recursive=True)
        else:
            self.fs.copy(source, target)
        self.remove(source)

    def remove(self, path: str) -> None:
        if self.exists(path):
            self.fs.rm(path, recursive=True)


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


def promote(store: Store, best: str, output: str, remove: list[str]) -> PromoteResult:
    """Move the best trial's entries (not checkpoints/) into `output`, then delete each `remove` folder."""
    if _inside(output, best):
        raise InvalidData(
            f"--output {output} is the best trial's folder {best} or inside it; give the job's output folder"
        )
    for folder in remove:
        if _inside(output, folder):
            raise InvalidData(f"--remove {folder} would delete the output {output}; give only trial folders")
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
        raise InvalidData(
            f"nothing to promote: the best trial's folder {best} "
            f"{'holds no model' if result.moved or store.exists(best) else 'does not exist'} "
            f"and the output {output} has no model yet (none of {', '.join(MODEL_MARKERS)})"
        )
    for folder in remove:
        if store.exists(folder):
            store.remove(folder)
            logger.info("removed %s", folder)
            result.removed.append(folder)
    return result


def s3_filesystem():
    """s3fs, configured by the AWS_* variables (the job's s3Credentials Secret); its own seam for tests."""
    return fsspec.filesystem("s3")


def _bucket_path(uri: str) -> str:
    """s3://BUCKET/KEY -> BUCKET/KEY, the path s3fs works with."""
    parsed = urlparse(uri)
    return f"{parsed.netloc}{parsed.path}".rstrip("/")


def open_store(best: str, output: str, remove: list[str], environ=os.environ) -> tuple[Store, str, str, list[str]]:
    """The store the URIs live in and their paths in it; all URIs must share one kind of storage."""
    uris = [best, output, *remove]
    for uri in uris:
        if urlparse(uri).scheme not in SCHEMES:
            raise InvalidData(
                f"{uri}: cannot promote {urlparse(uri).scheme}:// URIs; give pvc://, s3://, file:// or a path"
            )
    schemes = {uri_scheme(uri) for uri in uris}
    if schemes == {"s3"}:
        paths = [_bucket_path(uri) for uri in uris]
        return FsspecStore(s3_filesystem()), paths[0], paths[1], paths[2:]
    if "s3" in schemes:
        raise InvalidData(
            f"--best, --output and --remove mix s3:// with mounted paths ({', '.join(uris)}); "
            "trials live under the job's output, so give URIs of one kind"
        )
    mounts = volume_mounts(environ)
    paths = [os.path.abspath(resolve_local_path(uri, mounts)) for uri in uris]
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
        store, best, output, remove = open_store(args.best, args.output, args.remove, environ)
        result = promote(store, best, output, remove)
    except InvalidData as exc:
        logger.error("invalid input: %s", exc)
        write_termination_message("InvalidData", str(exc), environ)
        return EXIT_INVALID_DATA
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
