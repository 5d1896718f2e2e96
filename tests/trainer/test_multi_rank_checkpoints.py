"""Checkpoints of multi-rank jobs (issue 16, item 4), through the processes of real pods: one `python -m
finetune_trainer` per node, torchrun under it, gloo on CPU.

One job runs to its end in five attempts, each resuming from the checkpoint the one before saved when it was
stopped with SIGTERM, on 2 nodes, 2 nodes, 1 node with 1 process, 1 node with 2 processes, and 2 nodes:

- saving is consistent: rank 0 writes each checkpoint once, every rank adds only its rng_state_RANK.pth, and
  no rank leaves a save before the folder holds every rank's part and the COMPLETE marker;
- SIGTERM to every pod (a deleted or suspended Job), to the one pod of a node with two processes, or to rank
  0's pod alone saves one checkpoint at the step where the ranks stopped, and every pod exits 143 saying why
  (Stopped, or StoppedByPeer for a rank that stopped with another);
- each attempt continues from the step where the last one stopped, with the same global batch, and its
  losses and gradient norms are those of an uninterrupted run; a resume on other ranks keeps the
  global batch by accumulating, and is refused where no accumulation can.

Every attempt holds its ranks at one step end until the test has signalled them (a `sitecustomize` on the
workers' PYTHONPATH adds that callback): a tiny model trains hundreds of steps a second, so a signal sent
"mid-run" would otherwise land at a step of chance, or after the end. Once a pod has failed (exited 143), the
test sends SIGTERM to the others, as the Job controller does to a gang.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from finetune_trainer import main
from finetune_trainer.checkpoints import checkpoint_steps, complete_checkpoints
from finetune_trainer.data_parallel import accumulation_keeping, global_batch_change
from finetune_trainer.errors import EXIT_INVALID_DATA, EXIT_OK, EXIT_PREEMPTED, STOPPED, STOPPED_BY_PEER
from trainer_data import sentiment_rows, write_csv

TOLERANCE = 0.05  # the bound; with dropout off the attempts agree with one run to about 1e-4
WAIT_SECONDS = 300  # generous: the machine may be shared; nothing here measures time

# Loaded by every Python process of an attempt through PYTHONPATH; it acts only in the processes that train (not
# in a pod's launcher or torchrun's agent), and only where the test set PROBE_DIR.
SITECUSTOMIZE = """
import os

if os.environ.get("PROBE_DIR"):
    from finetune_trainer.launcher import needs_launcher

    if not needs_launcher():
        import json
        import time

        from finetune_trainer import checkpoints, run
        from transformers import Trainer, TrainerCallback

        probe = os.environ["PROBE_DIR"]
        rank = int(os.environ.get("RANK", "0"))
        hold_at = int(os.environ.get("PROBE_HOLD_AT_STEP", "0"))
        slow = float(os.environ.get("PROBE_SLOW_SAVE_SECONDS", "0"))

        class Hold(TrainerCallback):
            # First in the list: GracefulStop, later in it, sees the test's SIGTERM at this step's end.
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == hold_at:
                    open(os.path.join(probe, f"held-{rank}"), "w").close()
                    while not os.path.exists(os.path.join(probe, "release")):
                        time.sleep(0.05)

        class RecordSaves(TrainerCallback):
            # Last in the list: what the checkpoint folder holds when this rank leaves a save.
            def on_save(self, args, state, control, **kwargs):
                folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
                with open(os.path.join(probe, f"saves-{rank}.jsonl"), "a") as f:
                    f.write(json.dumps({"step": state.global_step, "files": sorted(os.listdir(folder))}) + "\\n")

        assembled = run.assemble_callbacks
        run.assemble_callbacks = lambda *a: [Hold()] + assembled(*a) + [RecordSaves()]

        if slow:
            # Rank 1 writes its RNG file late (after rank 0 could have marked the checkpoint), and rank 0 writes
            # the marker late (after rank 1 could have left the save).
            save_rng_state, mark_complete = Trainer._save_rng_state, checkpoints.mark_complete

            def slow_save_rng_state(self, output_dir):
                if rank == 1:
                    time.sleep(2 * slow)
                save_rng_state(self, output_dir)

            def slow_mark_complete(*args, **kwargs):
                time.sleep(slow)
                mark_complete(*args, **kwargs)

            Trainer._save_rng_state, checkpoints.mark_complete = slow_save_rng_state, slow_mark_complete
"""

STEPS = 16
CHECKPOINT_STEPS = 4
KEEP = 2
GLOBAL_BATCH = 16  # 8 a rank: 2 ranks, or 1 rank with 2 accumulation steps
ROWS = 96  # an epoch is 6 steps, so the attempts start inside epochs, and in later ones
CONFIG = dict(
    task="text-classification",
    max_steps=STEPS,
    checkpoint_steps=CHECKPOINT_STEPS,
    checkpoints_to_keep=KEEP,
    logging_steps=1,
    eval_strategy="no",
    learning_rate=5e-3,
    max_seq_length=16,
    # Dropout draws from each rank's RNG stream, which no other number of ranks can reproduce: without it every
    # attempt computes the same function of the same batches as one uninterrupted run.
    dropout=0.0,
    seed=7,
    batch_size=8,
)


@dataclass(frozen=True)
class Plan:
    nodes: int
    procs_per_node: int
    stop_at: int | None  # the step end at which the ranks are held and the pods `signalled` get SIGTERM
    signalled: tuple[int, ...] = ()
    slow_saves: bool = False

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs_per_node


BOTH_NODES = "2 nodes, SIGTERM to both pods"
RANK_0 = "2 nodes, SIGTERM to rank 0's pod"
ONE_PROCESS = "1 node, 1 process"
ONE_POD = "1 node, 2 processes, SIGTERM to its pod"
TO_THE_END = "2 nodes, to the end"
ATTEMPTS = {
    BOTH_NODES: Plan(2, 1, stop_at=10, signalled=(0, 1), slow_saves=True),  # after the saves at 4 and 8
    RANK_0: Plan(2, 1, stop_at=11, signalled=(0,)),
    ONE_PROCESS: Plan(1, 1, stop_at=13, signalled=(0,)),  # saves at 12 and 13
    ONE_POD: Plan(1, 2, stop_at=14, signalled=(0,)),
    TO_THE_END: Plan(2, 1, stop_at=None),
}


@dataclass
class Pod:
    process: subprocess.Popen
    log: Path
    termination_log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class Attempt:
    """One attempt of the job: one pod process per node, started with the environment the operator gives a pod
    (builders/env.py), and the probe's folder."""

    def __init__(self, config: str, plan: Plan, folder: Path, sitecustomize_dir: str):
        self.plan = plan
        self.probe = folder / "probe"
        self.probe.mkdir(parents=True)
        port = str(_free_port())
        self.pods = []
        for node in range(plan.nodes):
            env = {
                **os.environ,
                "PET_NNODES": str(plan.nodes),
                "PET_NPROC_PER_NODE": str(plan.procs_per_node),
                "PET_NODE_RANK": str(node),
                "PET_MASTER_ADDR": "127.0.0.1",
                "PET_MASTER_PORT": port,
                "OMP_NUM_THREADS": "1",
                "PYTHONUNBUFFERED": "1",
                "FINETUNE_TERMINATION_LOG": str(folder / f"termination-log-{node}"),
                "PYTHONPATH": os.pathsep.join(filter(None, [sitecustomize_dir, os.environ.get("PYTHONPATH")])),
                "PROBE_DIR": str(self.probe),
                "PROBE_HOLD_AT_STEP": str(plan.stop_at or 0),
                "PROBE_SLOW_SAVE_SECONDS": "0.5" if plan.slow_saves else "0",
            }
            log = folder / f"pod-{node}.log"
            with open(log, "w") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", "finetune_trainer", config], stdout=out, stderr=subprocess.STDOUT, env=env
                )
            self.pods.append(Pod(process, log, folder / f"termination-log-{node}"))

    def run(self) -> list[int]:
        """The pods' exit codes, after stopping them at the planned step when there is one."""
        if self.plan.stop_at is not None:
            self._wait_until(
                lambda: len(list(self.probe.glob("held-*"))) == self.plan.world_size, "every rank at the hold"
            )
            for index in self.plan.signalled:
                self.pods[index].process.send_signal(signal.SIGTERM)
            # Released once every signalled worker has its SIGTERM, so the ranks stop at the held step's end.
            self._wait_until(
                lambda: all(
                    self.pods[i].output().count("SIGTERM received") == self.plan.procs_per_node
                    for i in self.plan.signalled
                ),
                "the SIGTERM in every signalled worker",
            )
            (self.probe / "release").touch()
        self._wait_as_the_job_controller()
        return [pod.process.returncode for pod in self.pods]

    def _wait_as_the_job_controller(self) -> None:
        """Wait for every pod; once one has failed, SIGTERM the others, as the Job controller does to a gang
        (builders/job.py: FailJob at the first failed pod). Each only once it has written its termination
        message: the controller takes seconds to react, and a rank signalled before it stopped would stop
        on its own SIGTERM instead of with its peer."""
        signalled = set(self.plan.signalled)
        deadline = time.monotonic() + WAIT_SECONDS
        while any(pod.process.poll() is None for pod in self.pods):
            if time.monotonic() > deadline:
                pytest.fail(f"a pod did not exit within {WAIT_SECONDS} s:\n{self.tails()}")
            if any(pod.process.returncode not in (None, EXIT_OK) for pod in self.pods):
                for index, pod in enumerate(self.pods):
                    if index not in signalled and pod.termination_log.exists() and pod.process.poll() is None:
                        pod.process.send_signal(signal.SIGTERM)
                        signalled.add(index)
            time.sleep(0.1)

    def _wait_until(self, condition, what: str) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while not condition():
            if any(pod.process.poll() is not None for pod in self.pods):
                pytest.fail(f"a pod exited while the test waited for {what}:\n{self.tails()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} within {WAIT_SECONDS} s:\n{self.tails()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """End what is left after a failure: each pod's process with its torchrun agent and workers (torchrun
        starts every worker in a session of its own, so the pod's process group would miss them)."""
        for pod in self.pods:
            if pod.process.poll() is not None:
                continue  # reaped: its pid may be another process's by now
            try:
                root = psutil.Process(pod.process.pid)
                processes = [*root.children(recursive=True), root]
            except psutil.NoSuchProcess:
                continue
            for process in processes:
                try:
                    process.kill()
                except psutil.NoSuchProcess:
                    pass
            pod.process.wait()

    def tails(self) -> str:
        return "\n".join(f"--- pod {i}:\n{pod.output()[-3000:]}" for i, pod in enumerate(self.pods))


@dataclass
class Result:
    """What an attempt left: exit codes, termination messages and logs by pod, each rank's saves as the rank
    left them ({"step", "files"}), and the checkpoint folders after it."""

    plan: Plan
    codes: list[int]
    messages: list[dict | None]
    outputs: list[str]
    saves: dict[int, list[dict]]
    checkpoints: list[int]
    complete: list[int]
    stop_state: dict | None  # trainer_state.json of the checkpoint at plan.stop_at, before a later attempt rotates it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def _job_config(folder: Path, model: str, data: str, out: Path, world_size: int) -> str:
    path = folder / "config.json"
    config = dict(CONFIG, model_uri=model, train_uri=data, output_uri=str(out))
    config["gradient_accumulation_steps"] = GLOBAL_BATCH // (CONFIG["batch_size"] * world_size)
    path.write_text(json.dumps(config))
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    return write_csv(tmp_path_factory.mktemp("data") / "train.csv", sentiment_rows(ROWS, seed=1))


@pytest.fixture(scope="module")
def job(tiny_bert, data, tmp_path_factory) -> tuple[Path, dict[str, Result]]:
    """The job's output folder and every attempt's result, by name."""
    root = tmp_path_factory.mktemp("job")
    (root / "probe-site").mkdir()
    (root / "probe-site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    out, results = root / "out", {}
    for name, plan in ATTEMPTS.items():
        folder = root / name.replace(" ", "-").replace(",", "").replace("'", "")
        folder.mkdir()
        attempt = Attempt(
            _job_config(folder, tiny_bert, data, out, plan.world_size), plan, folder, str(root / "probe-site")
        )
        try:
            codes = attempt.run()
        finally:
            attempt.kill()
        results[name] = Result(
            plan=plan,
            codes=codes,
            messages=[_read_json(pod.termination_log) for pod in attempt.pods],
            outputs=[pod.output() for pod in attempt.pods],
            saves={
                rank: [json.loads(line) for line in (attempt.probe / f"saves-{rank}.jsonl").read_text().splitlines()]
                for rank in range(plan.world_size)
                if (attempt.probe / f"saves-{rank}.jsonl").exists()
            },
            checkpoints=sorted(checkpoint_steps(str(out / "checkpoints"))),
            complete=[step for step, _ in complete_checkpoints(str(out / "checkpoints"))],
            stop_state=_read_json(out / "checkpoints" / f"checkpoint-{plan.stop_at}" / "trainer_state.json"),
        )
    return out, results


@pytest.fixture(scope="module")
def uninterrupted(tiny_bert, data, tmp_path_factory) -> list[dict]:
    """The log history of the same job run at once, in this process, on one rank with the same global batch."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FINETUNE_TERMINATION_LOG", str(folder / "termination-log"))
        assert main(_job_config(folder, tiny_bert, data, folder / "out", world_size=1)) == EXIT_OK
    state = json.loads((folder / "out" / "checkpoints" / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    return state["log_history"]


def _assert_stopped_once_where_held(result: Result, resumed_from: int | None) -> None:
    """One checkpoint at the held step, complete, from every rank's one save there; no step trained after it."""
    stop = result.plan.stop_at
    periodic = [s for s in range(CHECKPOINT_STEPS, stop, CHECKPOINT_STEPS) if s > (resumed_from or 0)]
    for rank in range(result.plan.world_size):
        assert [save["step"] for save in result.saves[rank]] == [*periodic, stop], (rank, result.saves[rank])
    kept = sorted({*periodic, stop, *([resumed_from] if resumed_from else [])})[-KEEP:]
    assert result.checkpoints == result.complete == kept, result
    assert result.stop_state["global_step"] == stop
    assert max(entry["step"] for entry in result.stop_state["log_history"]) == stop


@pytest.mark.slow
def test_two_ranks_write_each_checkpoint_once_and_leave_it_only_when_complete(job):
    _, results = job
    one_rank = {tuple(save["files"]) for save in results[ONE_PROCESS].saves[0]}
    assert len(one_rank) == 1, one_rank  # the same files at every save
    one_rank_files = set(next(iter(one_rank)))
    assert {"COMPLETE", "model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"} <= one_rank_files
    # Rank 0's files once, as in a one-rank checkpoint; per rank only the RNG state Trainer keeps by rank.
    two_ranks_files = one_rank_files - {"rng_state.pth"} | {"rng_state_0.pth", "rng_state_1.pth"}
    # In the first attempt rank 1 wrote its RNG file late, and rank 0 its marker late: had the ranks not waited
    # for each other, rank 0's records would lack rng_state_1.pth, and rank 1's the marker.
    for name in (BOTH_NODES, RANK_0, ONE_POD):
        for rank, saves in results[name].saves.items():
            for save in saves:
                assert set(save["files"]) == two_ranks_files, (name, rank, save)
    # Rotation ran once the 10th step's checkpoint was complete: the 4th went, the newest KEEP remain.
    assert results[BOTH_NODES].checkpoints == [8, 10]


@pytest.mark.slow
def test_sigterm_to_both_nodes_saves_one_checkpoint_where_they_stopped(job):
    _, results = job
    both = results[BOTH_NODES]
    assert both.codes == [EXIT_PREEMPTED, EXIT_PREEMPTED], both.outputs
    assert [message["reason"] for message in both.messages] == [STOPPED, STOPPED]
    _assert_stopped_once_where_held(both, resumed_from=None)


@pytest.mark.slow
def test_sigterm_to_rank_0_alone_stops_rank_1_with_it(job):
    _, results = job
    rank_0 = results[RANK_0]
    assert rank_0.codes == [EXIT_PREEMPTED, EXIT_PREEMPTED], rank_0.outputs
    assert [message["reason"] for message in rank_0.messages] == [STOPPED, STOPPED_BY_PEER]
    assert "SIGTERM received" not in rank_0.outputs[1]
    _assert_stopped_once_where_held(rank_0, resumed_from=10)


@pytest.mark.slow
def test_sigterm_to_the_pod_of_a_node_with_two_processes_stops_both(job):
    _, results = job
    one_pod = results[ONE_POD]
    assert one_pod.codes == [EXIT_PREEMPTED], one_pod.outputs
    assert one_pod.messages[0]["reason"] == STOPPED  # both workers got it from torchrun; the last one wrote
    _assert_stopped_once_where_held(one_pod, resumed_from=13)


@pytest.mark.slow
def test_a_job_resumes_on_another_number_of_nodes_as_if_never_stopped(job, uninterrupted):
    out, results = job
    previous = None
    for name, result in results.items():
        if previous is not None:
            resumed = f"resuming from {out / 'checkpoints' / f'checkpoint-{previous}'}\n"
            assert all(resumed in output for output in result.outputs), (name, resumed, result.outputs)
        if result.plan.stop_at is not None:
            assert set(result.codes) == {EXIT_PREEMPTED}, (name, result.outputs)
        previous = result.plan.stop_at
    _assert_stopped_once_where_held(results[ONE_PROCESS], resumed_from=11)
    assert results[TO_THE_END].codes == [EXIT_OK, EXIT_OK], results[TO_THE_END].outputs

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == ATTEMPTS[ONE_POD].stop_at
    assert metrics["global_step"] == STEPS
    assert metrics["epoch"] == pytest.approx(STEPS * GLOBAL_BATCH / ROWS)  # the same global batch throughout
    # Every step trained once across the five attempts, on the batch and from the weights, optimizer and
    # schedule of an uninterrupted run: the gradient norm of a step tells its batch from another.
    state = json.loads((out / "checkpoints" / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    resumed = [entry for entry in state["log_history"] if "loss" in entry]
    reference = [entry for entry in uninterrupted if "loss" in entry]
    assert [entry["step"] for entry in resumed] == [entry["step"] for entry in reference] == list(range(1, STEPS + 1))
    for got, want in zip(resumed, reference):
        assert got["epoch"] == pytest.approx(want["epoch"]), (got, want)
        assert got["learning_rate"] == pytest.approx(want["learning_rate"]), (got, want)
        for key in ("loss", "grad_norm"):
            assert got[key] == pytest.approx(want[key], rel=TOLERANCE), (key, got, want)


@pytest.mark.slow
def test_a_resume_on_other_ranks_keeps_the_global_batch_or_is_refused(
    job, tiny_bert, data, tmp_path, termination_log, caplog
):
    out, _ = job
    # The checkpoint two ranks of 8 saved when stopped, resumed on one rank of 8 (a job recreated on one node
    # with the same spec). Left alone, Trainer would skip 14 of its global batches of 8 and count the epochs
    # back from 2.33 to 1.25; the resume accumulates 2 micro-batches instead, keeping the global batch of 16.
    stopped = f"checkpoint-{ATTEMPTS[ONE_POD].stop_at}"
    for case in ("kept", "refused"):
        shutil.copytree(out / "checkpoints" / stopped, tmp_path / case / "checkpoints" / stopped)
    kept = dict(CONFIG, model_uri=tiny_bert, train_uri=data, output_uri=str(tmp_path / "kept"))
    (tmp_path / "kept.json").write_text(json.dumps(kept))
    # The trainer's logger does not propagate (it has its own stderr handler): listen to it directly.
    trainer_logger = logging.getLogger("finetune_trainer")
    trainer_logger.addHandler(caplog.handler)
    try:
        assert main(str(tmp_path / "kept.json")) == EXIT_OK
    finally:
        trainer_logger.removeHandler(caplog.handler)
    assert "gradient accumulation 2 (not 1) keeps it" in caplog.text
    metrics = json.loads((tmp_path / "kept" / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == ATTEMPTS[ONE_POD].stop_at and metrics["global_step"] == STEPS
    assert metrics["epoch"] == pytest.approx(STEPS * GLOBAL_BATCH / ROWS)

    # A batch of 5 cannot make 16 on one rank: refused before training, the checkpoint untouched.
    refused = dict(kept, output_uri=str(tmp_path / "refused"), batch_size=5)
    (tmp_path / "refused.json").write_text(json.dumps(refused))
    assert main(str(tmp_path / "refused.json")) == EXIT_INVALID_DATA
    message = json.loads(termination_log.read_text())
    assert message["reason"] == "InvalidData"
    assert "global batch of 16" in message["message"] and "whose product is 16" in message["message"]
    assert sorted(checkpoint_steps(str(tmp_path / "refused" / "checkpoints"))) == [ATTEMPTS[ONE_POD].stop_at]


def test_the_global_batch_change_names_the_accumulation_that_keeps_it():
    assert global_batch_change(16, batch_size=8, accumulation=2, ranks=1) is None
    assert global_batch_change(None, batch_size=8, accumulation=1, ranks=1) is None  # an older trainer's marker
    assert "set hyperparameters.gradientAccumulationSteps to 2" in global_batch_change(
        16, batch_size=8, accumulation=1, ranks=1
    )
    assert "set hyperparameters.gradientAccumulationSteps to 1" in global_batch_change(
        16, batch_size=8, accumulation=2, ranks=2
    )
    assert "whose product is 4" in global_batch_change(16, batch_size=8, accumulation=1, ranks=4)
    assert "(nodes x processes per node) that divides 16" in global_batch_change(
        16, batch_size=8, accumulation=1, ranks=3
    )


def test_a_resume_accumulates_to_keep_the_checkpoints_global_batch():
    assert accumulation_keeping(16, batch_size=8, accumulation=1, ranks=1) == 2  # 2 ranks -> 1
    assert accumulation_keeping(16, batch_size=8, accumulation=2, ranks=2) == 1  # 1 rank -> 2
    assert accumulation_keeping(16, batch_size=8, accumulation=2, ranks=1) is None  # already kept
    assert accumulation_keeping(16, batch_size=5, accumulation=1, ranks=1) is None  # impossible: refused in train()
    assert accumulation_keeping(None, batch_size=8, accumulation=1, ranks=3) is None  # an older trainer's marker
