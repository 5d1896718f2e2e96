"""Checkpoints streamed to an object store (s3:// outputs), and a resume from the newest complete one there.

A pod's local disk is gone when it is preempted, so with an s3:// output a checkpoint counts only once it is in
the store. The store mirrors the local layout: OUTPUT/checkpoints/checkpoint-STEP/ with its COMPLETE marker.

- Upload (rank 0, a background thread, so training goes on): every file of a checkpoint first, then a check
  that the store holds them all, then COMPLETE. A reader never sees a marker without its files. One upload at a
  time, in step order; when uploads fall behind, the waiting one is replaced by the newer checkpoint.
- Prune: after a marker is uploaded, the store keeps what the local rotation keeps (the newest
  checkpoints_to_keep and the best); markers are deleted before their files, the mirror image of an upload.
- Resume (every rank, at start): the newest checkpoint of the local disk and the store wins; a newer one in
  the store is downloaded, marker last, so a fresh pod on an empty disk resumes from it.
- Stop: the run waits for the upload in progress and the one queued, within the pod's grace period.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from finetune_trainer import storage
from finetune_trainer.checkpoints import COMPLETE_MARKER, complete_checkpoints, is_complete, step_of, steps_to_delete
from finetune_trainer.errors import StorageFailure

logger = logging.getLogger("finetune_trainer")

CHECKPOINTS = "checkpoints"  # the folder of checkpoints under an output, locally and in the store
# What the operator's spec gives a pod by default (runPolicy.terminationGracePeriodSeconds); the operator can
# pass the job's own value in GRACE_ENV.
DEFAULT_GRACE_SECONDS = 120.0
GRACE_ENV = "FINETUNE_TERMINATION_GRACE_SECONDS"
# Kept from the grace period for what follows the wait: the termination message, closing the process group.
EXIT_MARGIN_SECONDS = 5.0
# How long rank 0 waits for another node's part of a checkpoint (its rng_state_RANK.pth) before marking it
# complete without it: the other rank uploads that small file before it trains on.
PARTS_WAIT_SECONDS = 60.0
# The output files that say a model is complete: uploaded after all others.
FINAL_FILES = ("metrics.json", "README.md")


@dataclass(frozen=True)
class StoreCheckpoints:
    """What the store's checkpoints folder holds: files by step, and the files beside the checkpoints."""

    files: dict[int, frozenset[str]]  # step -> paths relative to checkpoint-STEP/
    side_files: frozenset[str]  # e.g. baseline-metrics.json

    @property
    def complete(self) -> list[int]:
        return sorted(step for step, names in self.files.items() if COMPLETE_MARKER in names)

    @property
    def partial(self) -> list[int]:
        return sorted(step for step, names in self.files.items() if COMPLETE_MARKER not in names)


def read_listing(paths: Iterable[str]) -> StoreCheckpoints:
    """Group the paths of the objects in the store's checkpoints folder (relative to it) by checkpoint. Pure."""
    files: dict[int, set[str]] = {}
    side = set()
    for path in paths:
        head, _, rest = path.partition("/")
        step = step_of(head)
        if step is not None and rest:
            files.setdefault(step, set()).add(rest)
        elif not rest and step is None:
            side.add(head)
    return StoreCheckpoints({s: frozenset(n) for s, n in files.items()}, frozenset(side))


def prune_plan(listing: StoreCheckpoints, keep: int, best_step: int | None) -> list[int]:
    """Steps whose folders to delete from the store. Pure.

    Complete ones by the local rotation rule (never the newest); partial ones older than the newest complete
    one, which are uploads a killed pod left (a newer partial one may be an upload still under way)."""
    complete = listing.complete
    if not complete:
        return []
    stale = [step for step in listing.partial if step < complete[-1]]
    rotated = steps_to_delete(complete, keep, {best_step} if best_step is not None else set())
    return sorted(stale + rotated)


def upload_deadline(requested_at: float | None, grace_seconds: float) -> float | None:
    """The monotonic time by which waiting for uploads must end: unbounded until a stop is requested, then the
    grace period from the request, less the margin for exiting. Pure."""
    if requested_at is None:
        return None
    return requested_at + max(0.0, grace_seconds - EXIT_MARGIN_SECONDS)


def grace_seconds(environ=os.environ) -> float:
    try:
        return float(environ.get(GRACE_ENV) or DEFAULT_GRACE_SECONDS)
    except ValueError:
        return DEFAULT_GRACE_SECONDS


def _relative_files(folder: str) -> list[str]:
    found = []
    for parent, _, names in os.walk(folder):
        found += [os.path.relpath(os.path.join(parent, name), folder) for name in names]
    return sorted(found)


class CheckpointStore:
    """The checkpoints folder of one s3:// output. Every request goes through storage.py: its endpoint and
    credentials, its retries with backoff, and its failure classes (StorageAccessDenied, ...)."""

    def __init__(self, output_uri: str):
        self.uri = output_uri.rstrip("/")
        self.root = storage.S3Location.parse(self.uri, "output_uri").child(CHECKPOINTS)
        self.fs = storage.filesystem()  # one client for the run's uploads, rather than one per request
        self._side_uploaded: dict[str, tuple[int, float]] = {}  # name -> (size, mtime) last put

    def folder(self, step: int) -> storage.S3Location:
        return self.root.child(f"checkpoint-{step}")

    def _request(self, location: storage.S3Location, action: str, call: Callable[[], object]) -> None:
        storage.with_retries(call, location, what="checkpoint", action=action)

    def read(self) -> StoreCheckpoints:
        return read_listing(storage.list_files(str(self.root), what="checkpoints"))

    def upload(self, local_folder: str, step: int, expected_parts: frozenset[str] = frozenset()) -> int:
        """Put checkpoint `step` from `local_folder`, COMPLETE last; returns the bytes put.

        `expected_parts` are files other ranks put into the store folder themselves (rng states of ranks on
        other nodes); the marker waits for them, for PARTS_WAIT_SECONDS at most."""
        remote = self.folder(step)
        marker = remote.child(COMPLETE_MARKER)
        # A marker already there (this step trained again) must not stand over a mix of old and new files.
        # Looked for first: a policy without s3:DeleteObject still uploads.
        if COMPLETE_MARKER in storage.list_files(str(remote), what="checkpoint"):
            self._request(marker, "deleting", lambda: self.fs.rm_file(marker.path))
        self._put_side_files(os.path.dirname(local_folder))
        names = [name for name in _relative_files(local_folder) if name != COMPLETE_MARKER]
        sources = [os.path.join(local_folder, name) for name in names]
        self._request(remote, "uploading", lambda: self.fs.put(sources, [remote.child(n).path for n in names]))
        self._await_files(remote, local_folder, names, expected_parts - set(names))
        self._request(
            marker, "uploading", lambda: self.fs.put_file(os.path.join(local_folder, COMPLETE_MARKER), marker.path)
        )
        return sum(os.path.getsize(path) for path in sources)

    def put_part(self, local_folder: str, step: int, name: str) -> None:
        """Put one file of a checkpoint whose other files (and marker) rank 0 puts: a rank on another node's
        rng_state_RANK.pth."""
        storage.upload_file(os.path.join(local_folder, name), str(self.folder(step).child(name)), what="checkpoint")

    def _await_files(self, remote: storage.S3Location, local_folder: str, names: list[str], parts: set[str]) -> None:
        """Check the store holds every file at its local size (and the other ranks' parts) before the marker."""
        deadline = time.monotonic() + PARTS_WAIT_SECONDS
        while True:
            held = storage.list_files(str(remote), what="checkpoint")
            wrong = [n for n in names if held.get(n) != os.path.getsize(os.path.join(local_folder, n))]
            if wrong:
                raise OSError(f"checkpoint {remote}: after the upload the store lacks or has other sizes of {wrong}")
            missing = sorted(parts - set(held))
            if not missing:
                return
            if time.monotonic() > deadline:
                logger.warning(
                    "checkpoint %s: no %s from the other ranks after %.0f s; marking it complete without them (a "
                    "resume restores those ranks' random state afresh)",
                    remote,
                    ", ".join(missing),
                    PARTS_WAIT_SECONDS,
                )
                return
            time.sleep(0.5)

    def _put_side_files(self, checkpoints_dir: str) -> None:
        """Files beside the checkpoints (the baseline metrics a resume reads), when new or changed."""
        for name in sorted(os.listdir(checkpoints_dir)):
            path = os.path.join(checkpoints_dir, name)
            if not os.path.isfile(path) or name.startswith("."):
                continue
            stamp = (os.path.getsize(path), os.path.getmtime(path))
            if self._side_uploaded.get(name) != stamp:
                target = self.root.child(name)
                self._request(target, "uploading", lambda path=path, target=target: self.fs.put_file(path, target.path))
                self._side_uploaded[name] = stamp

    def prune(self, keep: int, best_step: int | None) -> list[int]:
        """Delete what prune_plan names; returns those steps."""
        doomed = prune_plan(self.read(), keep, best_step)
        for step in doomed:
            folder = self.folder(step)
            marker = folder.child(COMPLETE_MARKER)
            # Marker first: a reader between the two deletes sees a partial folder, which it ignores.
            self._request(marker, "deleting", lambda marker=marker: self.fs.rm_file(marker.path))
            storage.delete_tree(str(folder), what="checkpoint")
        return doomed

    def download(self, listing: StoreCheckpoints, step: int, checkpoints_dir: str) -> str:
        """Get checkpoint `step` (complete in `listing`) into checkpoints_dir/checkpoint-STEP, marker last,
        and the side files that are not here yet; returns the local folder."""
        remote = self.folder(step)
        target = os.path.join(checkpoints_dir, f"checkpoint-{step}")
        # Not a checkpoint-STEP name: a kill mid-download leaves nothing that looks like a checkpoint.
        partial = os.path.join(checkpoints_dir, f".download-checkpoint-{step}")
        shutil.rmtree(partial, ignore_errors=True)
        names = sorted(name for name in listing.files[step] if name != COMPLETE_MARKER)
        paths = [os.path.join(partial, *name.split("/")) for name in names]
        self._request(remote, "downloading", lambda: self.fs.get([remote.child(n).path for n in names], paths))
        marker = remote.child(COMPLETE_MARKER)
        self._request(
            marker, "downloading", lambda: self.fs.get_file(marker.path, os.path.join(partial, COMPLETE_MARKER))
        )
        shutil.rmtree(target, ignore_errors=True)  # an unmarked leftover of this step
        os.rename(partial, target)
        for name in sorted(listing.side_files):
            local = os.path.join(checkpoints_dir, name)
            if not os.path.exists(local):
                source = self.root.child(name)
                self._request(source, "downloading", lambda s=source, local=local: self.fs.get_file(s.path, local))
        return target


@contextlib.contextmanager
def _one_process_at_a_time(checkpoints_dir: str) -> Iterator[None]:
    """The ranks of one node share its disk: one downloads, the others then find the checkpoint there."""
    with open(os.path.join(checkpoints_dir, ".store.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def resume_point(checkpoints_dir: str, store: CheckpointStore) -> str | None:
    """The local folder of the newest complete checkpoint on this disk or in the store (downloaded if the
    store's is newer); None when neither has one."""
    with _one_process_at_a_time(checkpoints_dir):
        local = complete_checkpoints(checkpoints_dir)
        listing = store.read()
        remote = listing.complete[-1] if listing.complete else None
        if remote is None or (local and local[-1][0] >= remote):
            return local[-1][1] if local else None
        started = time.monotonic()
        folder = store.download(listing, remote, checkpoints_dir)
        logger.info(
            "downloaded checkpoint-%d from %s in %.1f s (newest on this disk: %s)",
            remote,
            store.uri,
            time.monotonic() - started,
            f"checkpoint-{local[-1][0]}" if local else "none",
        )
        return folder


@dataclass
class UploadRecord:
    step: int
    started: float  # time.monotonic()
    finished: float
    bytes: int
    error: str | None = None


@dataclass
class _Request:
    folder: str
    step: int
    best_step: int | None
    expected_parts: frozenset[str]


@dataclass
class CheckpointUploader:
    """Rank 0's background uploads of marked checkpoints (see the module docstring); on the other ranks, the
    upload of their own part of a checkpoint where rank 0 cannot read it (another node's disk)."""

    store: CheckpointStore
    keep: int
    world_size: int = 1
    history: list[UploadRecord] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    # An upload's failure that no retry can change (denied, no bucket): it ends training at the next checkpoint
    # rather than after hours of checkpoints that never reach the store.
    failure: StorageFailure | None = None

    def __post_init__(self):
        self._changed = threading.Condition()
        self._pending: _Request | None = None
        self._current: _Request | None = None
        self._closing = False
        self._thread: threading.Thread | None = None

    @property
    def uploading(self) -> str | None:
        """The local folder being read by the upload now (the local rotation spares it)."""
        with self._changed:
            return self._current.folder if self._current else None

    @property
    def busy(self) -> bool:
        """An upload is under way or waiting."""
        with self._changed:
            return self._current is not None or self._pending is not None

    def submit(self, folder: str, best_checkpoint: str | None = None) -> None:
        """Upload checkpoint `folder` (marked complete) after the upload under way, replacing one that waits.
        Raises the failure of an earlier upload that no retry can change."""
        if self.failure is not None:
            raise self.failure
        names = set(_relative_files(folder))
        # With several ranks each writes rng_state_RANK.pth; those on another node's disk come through the store.
        parts = {f"rng_state_{rank}.pth" for rank in range(self.world_size)} if self.world_size > 1 else set()
        request = _Request(
            folder,
            step_of(folder),
            step_of(best_checkpoint) if best_checkpoint else None,
            frozenset(parts - names),
        )
        with self._changed:
            if self._pending is not None:
                self.skipped.append(self._pending.step)
                logger.warning(
                    "checkpoint-%d not uploaded: checkpoint-%d is newer and the upload of checkpoint-%d is "
                    "still under way (uploads are slower than checkpoint_steps)",
                    self._pending.step,
                    request.step,
                    self._current.step if self._current else -1,
                )
            self._pending = request
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="checkpoint-upload", daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def put_own_part(self, folder: str, process_index: int) -> None:
        """On a rank other than 0, after the checkpoint's save: put this rank's rng_state_RANK.pth into the
        store unless rank 0 sees it (its marker here means this disk is rank 0's). Synchronous: a small file,
        and rank 0 marks the checkpoint complete in the store only once it is there."""
        name = f"rng_state_{process_index}.pth"
        if is_complete(folder) or not os.path.isfile(os.path.join(folder, name)):
            return
        try:
            self.store.put_part(folder, step_of(folder), name)
        except Exception as exc:  # noqa: BLE001 - the checkpoint stays usable without it; training goes on
            logger.warning("could not put %s of %s into %s: %s", name, folder, self.store.uri, exc)

    def _work(self) -> None:
        while True:
            with self._changed:
                while self._pending is None and not self._closing:
                    self._changed.wait()
                if self._pending is None:
                    return
                self._current, self._pending = self._pending, None
            request = self._current
            started = time.monotonic()
            record = UploadRecord(request.step, started, started, 0)
            logger.info("uploading checkpoint-%d to %s", request.step, self.store.uri)
            try:
                record.bytes = self.store.upload(request.folder, request.step, request.expected_parts)
                record.finished = time.monotonic()
                logger.info(
                    "uploaded checkpoint-%d (%.1f MB in %.1f s)",
                    request.step,
                    record.bytes / 1e6,
                    record.finished - started,
                )
            except Exception as exc:  # noqa: BLE001 - logged, and ends training only when no retry can help
                record.finished, record.error = time.monotonic(), f"{type(exc).__name__}: {exc}"
                logger.warning("upload of checkpoint-%d to %s failed: %s", request.step, self.store.uri, record.error)
                if isinstance(exc, StorageFailure) and exc.final:
                    self.failure = exc  # raised in the training loop at the next checkpoint (submit)
            if record.error is None:
                self._prune(request)
            with self._changed:
                self.history.append(record)
                self._current = None
                self._changed.notify_all()

    def _prune(self, request: _Request) -> None:
        try:
            pruned = self.store.prune(self.keep, request.best_step)
        except Exception as exc:  # noqa: BLE001 - a store that keeps too much still resumes; the job goes on
            logger.warning("pruning %s after checkpoint-%d failed: %s", self.store.uri, request.step, exc)
            return
        if pruned:
            logger.info("pruned from %s: %s", self.store.uri, ", ".join(f"checkpoint-{s}" for s in pruned))

    def finish(self, deadline: Callable[[], float | None]) -> list[int]:
        """Wait for the upload under way and the one waiting, until `deadline()` (re-read while waiting, as a
        SIGTERM can come meanwhile; None: no bound). Returns the steps left not uploaded, and logs them."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        thread = self._thread
        # Short joins: the main thread must run the SIGTERM handler that may set the deadline.
        while thread is not None and thread.is_alive():
            limit = deadline()
            if limit is not None and time.monotonic() >= limit:
                break
            thread.join(0.2)
        with self._changed:
            left = [r.step for r in (self._current, self._pending) if r is not None]
        if left:
            logger.warning(
                "checkpoint upload not finished within the grace period: %s not in %s (a restart resumes from "
                "the newest complete checkpoint there)",
                ", ".join(f"checkpoint-{s}" for s in left),
                self.store.uri,
            )
        return left


def upload_outputs(output_dir: str, output_uri: str) -> None:
    """Put the output folder into the store, except the checkpoints, which are there already (streamed):
    metrics.json and the model card last, the files that say a model is complete (as sources.upload)."""
    names = sorted(name for name in os.listdir(output_dir) if name != CHECKPOINTS)
    last = [name for name in FINAL_FILES if name in names]
    for name in [n for n in names if n not in last] + last:
        path, uri = os.path.join(output_dir, name), f"{output_uri.rstrip('/')}/{name}"
        if os.path.isdir(path):
            storage.upload_tree(path, uri, what="output")
        else:
            storage.upload_file(path, uri, what="output")
