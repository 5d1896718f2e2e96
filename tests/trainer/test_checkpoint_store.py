"""Checkpoints streamed to an object store (issue 17, item 2), against a real S3 API: the moto server on loopback.

The trainer runs in-process through `finetune_trainer.main` with an s3:// output and a tiny BERT. The order in
which the store received requests comes from the server's own request log (one line per request, written as
it answers), so "COMPLETE last" is checked where a reader would see it, not in our code.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import finetune_trainer.run as run
import psutil
import pytest
from finetune_trainer import main
from finetune_trainer.checkpoint_store import (
    EXIT_MARGIN_SECONDS,
    CheckpointStore,
    CheckpointUploader,
    StoreCheckpoints,
    prune_plan,
    read_listing,
    resume_point,
    upload_deadline,
)
from finetune_trainer.checkpoints import checkpoints_to_delete, complete_checkpoints, mark_complete
from finetune_trainer.errors import EXIT_OK, EXIT_PREEMPTED, EXIT_STORAGE_ACCESS_DENIED
from s3_server import free_port, s3_server, use_only
from transformers import TrainerCallback

# What every checkpoint of a full fine-tune holds; its marker must come after all of them.
CHECKPOINT_FILES = {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"}
WAIT_SECONDS = 120  # generous: the machine may be shared; nothing here measures time
_REQUEST = re.compile(r'"(?:\x1b\[[0-9;]*m)*(PUT|DELETE) /([^ ?]+) HTTP')


# --- pure parts -------------------------------------------------------------------------------------


def _listing(**steps: set[str]) -> StoreCheckpoints:
    return StoreCheckpoints({int(k[1:]): frozenset(v) for k, v in steps.items()}, frozenset())


def test_a_listing_groups_objects_by_checkpoint_and_only_marked_ones_are_complete():
    paths = [
        "baseline-metrics.json",
        "checkpoint-10/model.safetensors",
        "checkpoint-10/COMPLETE",
        "checkpoint-20/model.safetensors",  # an upload killed before its marker
        "checkpoint-30/sub/adapter.bin",
        "checkpoint-30/COMPLETE",
        "checkpoint-x/COMPLETE",  # not a checkpoint name
    ]
    listing = read_listing(paths)
    assert listing.complete == [10, 30] and listing.partial == [20]
    assert listing.files[30] == {"sub/adapter.bin", "COMPLETE"}
    assert listing.side_files == {"baseline-metrics.json"}


@pytest.mark.parametrize(
    ("steps", "keep", "best", "doomed"),
    [
        (dict(c2={"COMPLETE"}, c4={"COMPLETE"}, c6={"COMPLETE"}), 2, None, [2]),
        (dict(c2={"COMPLETE"}, c4={"COMPLETE"}, c6={"COMPLETE"}), 2, 2, []),  # the best is spared
        (dict(c2={"COMPLETE"}, c4={"COMPLETE"}, c6={"COMPLETE"}), 0, None, [2, 4]),  # never the newest
        (dict(c2={"COMPLETE"}, c3={"a"}, c4={"COMPLETE"}), 2, None, [3]),  # a killed upload's leftover
        (dict(c4={"COMPLETE"}, c6={"a"}), 1, None, []),  # a newer partial one may be an upload under way
        (dict(c2={"a"}), 1, None, []),  # nothing complete: nothing goes
    ],
)
def test_the_store_is_pruned_by_the_local_rotation_rule(steps, keep, best, doomed):
    assert prune_plan(_listing(**steps), keep, best) == doomed


def test_the_local_rotation_spares_the_checkpoint_being_uploaded(tmp_path):
    complete = [(s, str(tmp_path / f"checkpoint-{s}")) for s in (10, 20, 30)]
    assert checkpoints_to_delete(complete, 1, None, uploading=complete[0][1]) == [complete[1][1]]
    assert checkpoints_to_delete(complete, 1, complete[1][1], uploading=complete[0][1]) == []


def test_waiting_for_uploads_is_unbounded_until_a_stop_then_ends_within_the_grace_period():
    assert upload_deadline(None, 120) is None
    assert upload_deadline(1000.0, 120) == 1000.0 + 120 - EXIT_MARGIN_SECONDS
    assert upload_deadline(1000.0, 2) == 1000.0  # a grace period shorter than the margin: no wait


# --- against the moto server --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with s3_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture
def bucket(s3, monkeypatch, request, tmp_path) -> str:
    """A bucket of this test's own, and the trainer's environment as a job's s3Credentials Secret makes it."""
    use_only(s3, monkeypatch, tmp_path)
    return s3.make_bucket(re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:50].strip("-"))


@pytest.fixture
def disk(tmp_path, monkeypatch):
    """Switch the pod's local disk (where an s3:// output is staged) to a new, empty folder."""

    def fresh(name: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        monkeypatch.setattr(tempfile, "tempdir", str(folder))
        return folder

    return fresh


def _requests(s3, bucket: str) -> list[tuple[str, str]]:
    """(method, key) of every PUT and DELETE of an object in `bucket`, in the order the server answered them."""
    found = []
    for line in s3.log_path.read_text(errors="replace").splitlines():
        match = _REQUEST.search(line)
        if match and match.group(2).startswith(bucket + "/"):
            found.append((match.group(1), match.group(2)[len(bucket) + 1 :]))
    return found


def _last(requests: list[tuple[str, str]], request: tuple[str, str]) -> int:
    """Where `request` was answered last (an upload deletes a marker that may stand before it puts files)."""
    return len(requests) - 1 - requests[::-1].index(request)


def _marker_order_offences(requests: list[tuple[str, str]]) -> list[str]:
    """Markers put before every file of their checkpoint, or files put under a marker that stands."""
    offences, put_since_marker, marked = [], {}, set()
    for method, key in requests:
        folder, _, name = key.rpartition("/")
        if "/checkpoint-" not in f"/{folder}":
            continue
        if name == "COMPLETE" and method == "DELETE":
            marked.discard(folder)
            put_since_marker[folder] = set()
        elif name == "COMPLETE":
            if not CHECKPOINT_FILES <= put_since_marker.get(folder, set()):
                offences.append(f"{key} put before {sorted(CHECKPOINT_FILES - put_since_marker.get(folder, set()))}")
            marked.add(folder)
        elif method == "PUT":
            if folder in marked:
                offences.append(f"{key} put while {folder}/COMPLETE stood")
            put_since_marker.setdefault(folder, set()).add(name)
    return offences


def _store_steps(s3, bucket: str, prefix: str) -> dict[int, set[str]]:
    folder = f"{prefix}/checkpoints/"
    listing = read_listing(key[len(folder) :] for key in s3.keys(bucket, folder))
    return {step: set(names) for step, names in listing.files.items()}


def _checkpoint(folder: Path, step: int, payload: bytes = b"weights") -> str:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    for name in sorted(CHECKPOINT_FILES):
        (path / name).write_bytes(payload + name.encode())
    mark_complete(str(path), global_batch=8)
    return str(path)


def test_resume_prefers_the_newer_of_the_disk_and_the_store_and_downloads_marker_last(s3, bucket, tmp_path):
    store = CheckpointStore(f"s3://{bucket}/job")
    source = tmp_path / "source"
    store.upload(_checkpoint(source, 4), 4)
    (source / "baseline-metrics.json").write_text('{"eval_loss": 0.69}')
    store.upload(_checkpoint(source, 8), 8)
    s3.client().put_object(Bucket=bucket, Key="job/checkpoints/checkpoint-12/model.safetensors", Body=b"cut off")

    # An empty disk: the store's newest complete checkpoint (8, not the partial 12) comes down, with its marker
    # (the global batch a resume keeps) and the baseline metrics beside it.
    empty = tmp_path / "empty"
    empty.mkdir()
    folder = resume_point(str(empty), store)
    assert folder == str(empty / "checkpoint-8")
    assert {p.name for p in (empty / "checkpoint-8").iterdir()} == CHECKPOINT_FILES | {"COMPLETE"}
    assert (empty / "checkpoint-8" / "model.safetensors").read_bytes() == b"weightsmodel.safetensors"
    assert json.loads((empty / "checkpoint-8" / "COMPLETE").read_text()) == {"global_batch": 8}
    assert json.loads((empty / "baseline-metrics.json").read_text()) == {"eval_loss": 0.69}
    assert not [p for p in empty.iterdir() if p.name.startswith(".download")]

    # A disk with a newer checkpoint than the store's keeps it; one with an older one gets the store's.
    newer = tmp_path / "newer"
    _checkpoint(newer, 10, payload=b"local")
    assert resume_point(str(newer), store) == str(newer / "checkpoint-10")
    assert not (newer / "checkpoint-8").exists()
    older = tmp_path / "older"
    _checkpoint(older, 4, payload=b"local")
    assert resume_point(str(older), store) == str(older / "checkpoint-8")

    # A store without checkpoints: the disk's, or none.
    nothing = CheckpointStore(f"s3://{bucket}/other-job")
    assert resume_point(str(newer), nothing) == str(newer / "checkpoint-10")
    bare = tmp_path / "bare"
    bare.mkdir()
    assert resume_point(str(bare), nothing) is None


class _HeldStore(CheckpointStore):
    """The real store, whose first upload waits for the test: uploads that fall behind, on demand."""

    def __init__(self, uri: str):
        super().__init__(uri)
        self.release = threading.Event()
        self.started = threading.Event()
        self._held = False

    def upload(self, local_folder, step, expected_parts=frozenset()):
        if not self._held:
            self._held = True
            self.started.set()
            self.release.wait(WAIT_SECONDS)
        return super().upload(local_folder, step, expected_parts)


def test_uploads_that_fall_behind_skip_to_the_newest_checkpoint_and_the_store_is_pruned(s3, bucket, tmp_path):
    store = _HeldStore(f"s3://{bucket}/job")
    uploader = CheckpointUploader(store, keep=2)
    folders = {step: _checkpoint(tmp_path, step) for step in (2, 4, 6, 8)}
    uploader.submit(folders[2])
    assert store.started.wait(WAIT_SECONDS)
    assert uploader.uploading == folders[2]
    for step in (4, 6, 8):
        uploader.submit(folders[step])
    store.release.set()
    assert uploader.finish(lambda: None) == []

    assert uploader.skipped == [4, 6]
    assert [r.step for r in uploader.history] == [2, 8] and not any(r.error for r in uploader.history)
    assert sorted(_store_steps(s3, bucket, "job")) == [2, 8]
    # Then a third upload: 2 goes (keep 2), marker first, and never before 10's marker is in.
    uploader = CheckpointUploader(CheckpointStore(f"s3://{bucket}/job"), keep=2)
    uploader.submit(_checkpoint(tmp_path, 10))
    uploader.finish(lambda: None)
    assert sorted(_store_steps(s3, bucket, "job")) == [8, 10]
    requests = _requests(s3, bucket)
    assert requests.index(("PUT", "job/checkpoints/checkpoint-10/COMPLETE")) < _last(
        requests, ("DELETE", "job/checkpoints/checkpoint-2/COMPLETE")
    )
    assert _marker_order_offences(requests) == []


def test_the_wait_for_uploads_ends_at_the_deadline_and_names_what_was_not_uploaded(s3, bucket, tmp_path, caplog):
    store = _HeldStore(f"s3://{bucket}/job")
    uploader = CheckpointUploader(store, keep=2)
    uploader.submit(_checkpoint(tmp_path, 2))
    assert store.started.wait(WAIT_SECONDS)
    uploader.submit(_checkpoint(tmp_path, 4))
    try:
        with caplog.at_level(logging.WARNING, logger="finetune_trainer"):
            logging.getLogger("finetune_trainer").propagate = True
            assert uploader.finish(lambda: time.monotonic()) == [2, 4]
    finally:
        logging.getLogger("finetune_trainer").propagate = False
        store.release.set()
    assert "checkpoint-2, checkpoint-4 not in s3://" in caplog.text
    assert _store_steps(s3, bucket, "job") == {}


# --- through the trainer --------------------------------------------------------------------------------


class _UploadsKeepUp(TrainerCallback):
    """Before each save, wait for the last checkpoint's upload: no upload is skipped for a newer one, so the
    store should hold exactly what the disk holds (the skipping has a test of its own)."""

    def __init__(self, uploader, checkpoint_steps: int):
        self.uploader, self.checkpoint_steps = uploader, checkpoint_steps

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.checkpoint_steps == 0:
            deadline = time.monotonic() + WAIT_SECONDS
            while self.uploader.busy and time.monotonic() < deadline:
                time.sleep(0.02)


class _SigtermAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def _config(write_config, tiny_bert, sentiment_files, output_uri: str, **overrides) -> str:
    train, _ = sentiment_files
    fields = dict(
        task="text-classification",
        model_uri=tiny_bert,
        train_uri=train,
        output_uri=output_uri,
        max_steps=8,
        batch_size=8,
        learning_rate=5e-3,
        checkpoint_steps=2,
        checkpoints_to_keep=2,
        eval_strategy="no",
        max_seq_length=16,
        logging_steps=1,
    )
    return write_config(**{**fields, **overrides})


def test_checkpoints_stream_to_the_store_marker_last_pruned_as_on_disk_and_the_outputs_follow(
    s3, bucket, disk, tiny_bert, sentiment_files, write_config, monkeypatch
):
    local = disk("pod")
    assembled = run.assemble_callbacks
    monkeypatch.setattr(
        run, "assemble_callbacks", lambda *a: assembled(*a) + [_UploadsKeepUp(a[3], a[0].checkpoint_steps)]
    )
    assert main(_config(write_config, tiny_bert, sentiment_files, f"s3://{bucket}/job")) == EXIT_OK

    on_disk = local / "finetune-output" / bucket / "job"
    kept = [step for step, _ in complete_checkpoints(str(on_disk / "checkpoints"))]
    assert kept == [6, 8]
    stored = _store_steps(s3, bucket, "job")
    assert sorted(stored) == kept
    for step in kept:
        assert stored[step] == {p.name for p in (on_disk / "checkpoints" / f"checkpoint-{step}").iterdir()}

    requests = _requests(s3, bucket)
    assert _marker_order_offences(requests) == []
    markers = [key for method, key in requests if method == "PUT" and key.endswith("/COMPLETE")]
    assert markers == [f"job/checkpoints/checkpoint-{step}/COMPLETE" for step in (2, 4, 6, 8)]
    # Pruned as they aged, each only after a newer marker was in.
    for old, newer in ((2, 6), (4, 8)):
        assert _last(requests, ("DELETE", f"job/checkpoints/checkpoint-{old}/COMPLETE")) > requests.index(
            ("PUT", f"job/checkpoints/checkpoint-{newer}/COMPLETE")
        )
    # The final upload adds the model, card and metrics without putting the checkpoints again.
    keys = set(s3.keys(bucket, "job/"))
    assert {"job/model.safetensors", "job/config.json", "job/README.md", "job/metrics.json"} <= keys
    assert json.loads(s3.read(bucket, "job/metrics.json"))["global_step"] == 8
    puts = [key for method, key in requests if method == "PUT"]
    assert puts.count("job/checkpoints/checkpoint-8/model.safetensors") == 1
    assert puts.count("job/checkpoints/baseline-metrics.json") == 1


def test_a_job_stopped_by_sigterm_resumes_from_the_store_on_an_empty_disk(
    s3, bucket, disk, tiny_bert, sentiment_files, write_config, monkeypatch
):
    config = _config(write_config, tiny_bert, sentiment_files, f"s3://{bucket}/job")
    assembled = run.assemble_callbacks
    monkeypatch.setattr(run, "assemble_callbacks", lambda *a: [_SigtermAt(3)] + assembled(*a))
    disk("first-pod")
    assert main(config) == EXIT_PREEMPTED
    # The checkpoint saved at the stop is in the store before the process ends.
    assert 3 in [step for step, names in _store_steps(s3, bucket, "job").items() if "COMPLETE" in names]
    # A later upload killed before its marker: ignored by the resume, and pruned once older than a marker.
    s3.client().put_object(Bucket=bucket, Key="job/checkpoints/checkpoint-5/optimizer.pt", Body=b"cut off")

    monkeypatch.setattr(
        run, "assemble_callbacks", lambda *a: assembled(*a) + [_UploadsKeepUp(a[3], a[0].checkpoint_steps)]
    )
    second = disk("second-pod")
    assert main(config) == EXIT_OK
    metrics = json.loads(s3.read(bucket, "job/metrics.json"))
    assert metrics["resumed_from_step"] == 3 and metrics["global_step"] == 8  # nothing trained twice
    state = json.loads(
        (
            second / "finetune-output" / bucket / "job" / "checkpoints" / "checkpoint-8" / "trainer_state.json"
        ).read_text()
    )
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry] == list(range(1, 9))
    assert sorted(_store_steps(s3, bucket, "job")) == [6, 8]
    assert _marker_order_offences(_requests(s3, bucket)) == []


def test_an_upload_the_store_refuses_fails_the_job_at_the_next_checkpoint_not_at_the_end(
    s3, bucket, disk, tiny_bert, sentiment_files, write_config, monkeypatch, termination_log
):
    local = disk("pod")
    admin = s3.require_auth()
    try:
        # May read (the resume looks for checkpoints) but not write. (moto checks a listing as s3:ListObjectsV2,
        # AWS as s3:ListBucket.)
        reader = s3.user(admin, ("s3:ListBucket", "s3:ListObjectsV2", "s3:GetObject"))
        for name, value in reader.env().items():
            monkeypatch.setenv(name, value)
        assembled = run.assemble_callbacks
        monkeypatch.setattr(
            run, "assemble_callbacks", lambda *a: assembled(*a) + [_UploadsKeepUp(a[3], a[0].checkpoint_steps)]
        )
        code = main(_config(write_config, tiny_bert, sentiment_files, f"s3://{bucket}/job"))
    finally:
        s3.allow_anyone()
    assert code == EXIT_STORAGE_ACCESS_DENIED
    reported = json.loads(termination_log.read_text())
    assert reported["reason"] == "StorageAccessDenied"
    assert f"s3://{bucket}/job/checkpoints/" in reported["message"]
    assert "while uploading (AccessDenied" in reported["message"]
    # Checkpoint 2's upload was refused; the save at 4 ended training (an upload had been tried for it).
    checkpoints = local / "finetune-output" / bucket / "job" / "checkpoints"
    assert (checkpoints / "checkpoint-4").exists() and not (checkpoints / "checkpoint-6").exists()
    assert s3.keys(bucket) == []


# --- two nodes, each with its own disk ------------------------------------------------------------------


def _start_pods(config: str, folder: Path, attempt: str) -> list[tuple[subprocess.Popen, Path]]:
    """The two pods of a 2-node job (one process each, torchrun under the pod's launcher, gloo), each with a
    disk of its own (TMPDIR, where an s3:// output is staged), as on two machines."""
    port = str(free_port())
    pods = []
    for node in range(2):
        disk = folder / f"{attempt}-disk-{node}"
        disk.mkdir()
        env = {
            **os.environ,
            "PET_NNODES": "2",
            "PET_NPROC_PER_NODE": "1",
            "PET_NODE_RANK": str(node),
            "PET_MASTER_ADDR": "127.0.0.1",
            "PET_MASTER_PORT": port,
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
            "TMPDIR": str(disk),
            "FINETUNE_TERMINATION_LOG": str(folder / f"{attempt}-termination-log-{node}"),
        }
        with open(folder / f"{attempt}-pod-{node}.log", "w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "finetune_trainer", config], stdout=log, stderr=subprocess.STDOUT, env=env
            )
        pods.append((process, disk))
    return pods


def _logs(folder: Path, attempt: str) -> str:
    return "\n".join(
        f"--- pod {node}:\n{(folder / f'{attempt}-pod-{node}.log').read_text(errors='replace')[-3000:]}"
        for node in range(2)
    )


def _wait_for(condition, pods, folder: Path, attempt: str, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if any(process.poll() is not None for process, _ in pods) and what != "both pods to exit":
            pytest.fail(f"a pod exited while waiting for {what}:\n{_logs(folder, attempt)}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {WAIT_SECONDS} s:\n{_logs(folder, attempt)}")
        time.sleep(0.2)


def _end(pods) -> None:
    """Kill what a failed test left: each pod's process with its torchrun agent and workers."""
    for process, _ in pods:
        if process.poll() is None:
            for child in [*psutil.Process(process.pid).children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()
            process.kill()
            process.wait()


@pytest.mark.slow
def test_a_two_node_job_resumes_from_the_store_on_new_disks_with_every_rank_s_part(
    s3, bucket, tiny_bert, sentiment_files, write_config, tmp_path
):
    def complete_steps() -> list[int]:
        return sorted(s for s, names in _store_steps(s3, bucket, "job").items() if "COMPLETE" in names)

    fields = dict(checkpoint_steps=10, checkpoints_to_keep=2, batch_size=4)
    pods = _start_pods(
        _config(write_config, tiny_bert, sentiment_files, f"s3://{bucket}/job", max_steps=100000, **fields),
        tmp_path,
        "first",
    )
    try:
        _wait_for(lambda: complete_steps(), pods, tmp_path, "first", "complete checkpoint in the store")
        for process, _ in pods:
            process.send_signal(signal.SIGTERM)
        _wait_for(lambda: all(p.poll() is not None for p, _ in pods), pods, tmp_path, "first", "both pods to exit")
    finally:
        _end(pods)
    assert [process.returncode for process, _ in pods] == [EXIT_PREEMPTED, EXIT_PREEMPTED], _logs(tmp_path, "first")
    stopped = complete_steps()[-1]
    # Rank 1's RNG state was on its own disk only: it put that file into the store, and rank 0 put the marker
    # after it.
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= _store_steps(s3, bucket, "job")[stopped]
    requests = _requests(s3, bucket)
    folder = f"job/checkpoints/checkpoint-{stopped}"
    assert _last(requests, ("PUT", f"{folder}/rng_state_1.pth")) < _last(requests, ("PUT", f"{folder}/COMPLETE"))

    config = _config(write_config, tiny_bert, sentiment_files, f"s3://{bucket}/job", max_steps=stopped + 2, **fields)
    pods = _start_pods(config, tmp_path, "second")
    try:
        _wait_for(lambda: all(p.poll() is not None for p, _ in pods), pods, tmp_path, "second", "both pods to exit")
    finally:
        _end(pods)
    assert [process.returncode for process, _ in pods] == [EXIT_OK, EXIT_OK], _logs(tmp_path, "second")
    metrics = json.loads(s3.read(bucket, "job/metrics.json"))
    assert metrics["resumed_from_step"] == stopped and metrics["global_step"] == stopped + 2
    # Each rank got the checkpoint onto its own new disk, its RNG state with it.
    for node, (_, disk) in enumerate(pods):
        checkpoint = disk / "finetune-output" / bucket / "job" / "checkpoints" / f"checkpoint-{stopped}"
        assert (checkpoint / "COMPLETE").exists() and (checkpoint / f"rng_state_{node}.pth").exists(), node
