"""The benchmarks cannot rot: each operator benchmark runs at its smallest size, the GPU script with
--smoke on CPU, and their pure helpers are pinned down. Targets are not asserted here (a loaded CI
machine is no place to judge speed): a script passes when it finishes and prints its summary line."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

from checkpoint_upload import split_steps  # noqa: E402
from gang_restart import steps_redone, verdict  # noqa: E402
from gpu_trainer import gpu_list, peak_bf16_tflops, train_flops_per_token  # noqa: E402
from operator_progress_path import step_in_metrics  # noqa: E402
from operator_reconcile import rounds_for  # noqa: E402
from operator_sandbox import (  # noqa: E402
    BenchSandbox,
    KubeletPlay,
    classify_request,
    container_running,
    failed_mount_message,
    mounted_sources,
    percentile,
    without_cel_rules,
)
from operator_scale import per_job_breakdown  # noqa: E402
from search_quality import early_stopping_savings, smoke_variant, validation_loss, with_epochs  # noqa: E402
from trainer_data_parallel import RunResult, loss_ratio, steady_samples_per_second, threads_per_rank  # noqa: E402
from trainer_forgetting import METHODS, REGULARISATION, budget, forgetting  # noqa: E402


def run_bench_output(
    script: str, *args: str, timeout: float = 240, exit_codes: tuple[int, ...] = (0, 1)
) -> tuple[str, list[str]]:
    """Run a benchmark; return its stdout and summary lines. Exit 1 means "target missed", so by default
    only a crash fails; a correctness check that exits 1 passes exit_codes=(0,)."""
    result = subprocess.run(
        [sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=timeout, cwd=BENCH.parent
    )
    output = result.stdout + result.stderr
    assert result.returncode in exit_codes and "Traceback" not in output, (
        f"{script} exited {result.returncode}:\n{output[-4000:]}"
    )
    lines = [line for line in result.stdout.splitlines() if re.search(r"ratio [^:]+: [0-9.]+", line)]
    assert lines, f"{script} printed no summary line:\n{output[-4000:]}"
    for line in lines:
        assert re.search(r"ratio [^:]+: [0-9.]+( \([^)]*\))?$", line), f"the ratio is not last in: {line}"
    return result.stdout, lines


def run_bench(script: str, *args: str, timeout: float = 240) -> list[str]:
    return run_bench_output(script, *args, timeout=timeout)[1]


def test_reconcile_benchmark_runs_both_operators_and_the_job_first_baseline() -> None:
    ours, job_first = run_bench(
        "operator_reconcile.py", "--sizes", "2", "--rounds", "1", "--timeout", "90", "--baseline-job-first"
    )
    assert ours.startswith("time to running N=2 (1 round): created->started p50") and "baseline p50" in ours
    assert "failed mounts 0 (baseline 0)" in ours and "pod Running->status Running" in ours
    assert ours.endswith("(target <= 1.3)")
    # Created before its ConfigMap, a Job's pod meets the kubelet first: every one backs off at least once.
    assert job_first.startswith("baseline job-first N=2 (1 round):") and "met a missing ConfigMap 2 of 2" in job_first


def test_reconcile_rounds_give_ten_samples_and_five_bursts_up_to_100() -> None:
    assert [rounds_for(n) for n in (1, 2, 3, 20, 100, 101, 1000)] == [10, 5, 5, 5, 5, 1, 1]


def test_mounted_sources_are_the_configmaps_and_secrets_a_pod_needs() -> None:
    pod = {
        "spec": {
            "volumes": [
                {"name": "config", "configMap": {"name": "a-config"}},
                {"name": "token", "secret": {"secretName": "a-progress"}},
                {"name": "maybe", "configMap": {"name": "x", "optional": True}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "datasets"}},
                {"name": "scratch", "emptyDir": {}},
                {"name": "both", "projected": {"sources": [{"configMap": {"name": "b"}}, {"secret": {"name": "c"}}]}},
            ]
        }
    }
    assert mounted_sources(pod) == {
        "config": [("configmaps", "a-config")],
        "token": [("secrets", "a-progress")],
        "both": [("configmaps", "b"), ("secrets", "c")],
    }
    assert mounted_sources({"spec": {}}) == {}
    assert failed_mount_message("config", ("configmaps", "a-config")) == (
        'MountVolume.SetUp failed for volume "config" : configmap "a-config" not found'
    )


def job_mounting(name: str, config_map: str, secret: str) -> dict:
    container = {"name": "trainer", "image": "trainer", "command": ["true"]}
    volumes = [
        {"name": "config", "configMap": {"name": config_map}},
        {"name": "token", "secret": {"secretName": secret}},
    ]
    template = {"spec": {"restartPolicy": "Never", "containers": [container], "volumes": volumes}}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"template": template},
    }


def source(kind: str, name: str) -> dict:
    return {"apiVersion": "v1", "kind": kind, "metadata": {"name": name, "namespace": "default"}, "data": {}}


async def test_kubelet_play_starts_a_pod_once_its_sources_exist_with_the_mount_back_off(tmp_path: Path) -> None:
    async with BenchSandbox(tmp_path) as bench:
        play = KubeletPlay(bench)
        started = bench.first_time("", "pods", container_running)
        try:
            # Everything first: the pod starts at its first attempt.
            bench.create("v1", "configmaps", source("ConfigMap", "c1"))
            bench.create("v1", "secrets", source("Secret", "s1"))
            bench.create("batch/v1", "jobs", job_mounting("ready", "c1", "s1"))
            await bench.wait_until(lambda: ("default", "ready-0") in started, 10, "the pod that has its sources")
            assert play.failed_mounts == 0

            # The Secret only after the first failed mount (created at once on the FailedMount event): the
            # volume waits out its 0.5 s back-off, the ConfigMap volume stays mounted meanwhile.
            failed_at: list[float] = []

            def on_event(event) -> None:
                if event.key[:2] == ("", "events") and event.type == "ADDED" and not failed_at:
                    failed_at.append(time.perf_counter())
                    asyncio.get_running_loop().call_soon(bench.create, "v1", "secrets", source("Secret", "s2"))

            bench.server.store.listeners.append(on_event)
            bench.create("v1", "configmaps", source("ConfigMap", "c2"))
            bench.create("batch/v1", "jobs", job_mounting("late", "c2", "s2"))
            await bench.wait_until(lambda: ("default", "late-0") in started, 10, "the pod whose Secret came late")
            waited = started[("default", "late-0")] - failed_at[0]
            assert 0.5 <= waited < 3.0, waited
            assert play.failed_mounts == 1 and play.delayed_pods == {("default", "late-0")}
            event = bench.get("", "events", ("default", "late-0.failedmount-token"))
            assert (
                event is not None and event["reason"] == "FailedMount" and 'secret "s2" not found' in event["message"]
            )
            pod = bench.get("", "pods", ("default", "late-0"))
            assert pod is not None and pod["status"]["phase"] == "Running"
            assert bench.get("batch", "jobs", ("default", "late"))["status"]["active"] == 1
        finally:
            play.close()


def test_scale_benchmark_counts_requests_per_job() -> None:
    lines = run_bench(
        "operator_scale.py",
        *("--sizes", "2", "--duration", "2", "--report-interval", "1", "--timeout", "90"),
        *("--foreign-pods", "300", "--foreign-churn", "50", "--compare-foreign"),
    )
    without, with_foreign, ratio = lines
    assert without.startswith("scale N=2, 0 foreign pods") and "create jobs 1.00" in without and "MiB peak" in without
    assert with_foreign.startswith("scale N=2, 300 foreign pods") and ", 0 foreign;" in with_foreign
    assert ratio.startswith("scale N=2: ratio of peak RSS with 300 foreign pods to without: ")


def test_progress_path_benchmark_times_status_and_metrics() -> None:
    [line] = run_bench("operator_progress_path.py", "--sizes", "2", "--probes", "4", "--timeout", "90")
    assert line.startswith("progress path N=2 (status interval 0 s, 4 reports)")


@pytest.mark.slow
def test_gpu_benchmark_smoke_runs_on_cpu() -> None:
    stdout, lines = run_bench_output("gpu_trainer.py", "--smoke", timeout=600)
    assert [line.split(" on ")[0] for line in lines] == [
        "gpu_trainer classification MiniLM-L6 full",
        "gpu_trainer causal-lm GPT-2-tiny LoRA",
    ]
    assert all("on CPU (fp32" in line and "smoke: target not checked" in line for line in lines)
    assert "gpu_trainer multi-GPU: skipped: 0 GPU(s) visible; the case needs 2 or more" in stdout


def test_the_multi_gpu_case_pins_the_first_visible_gpu_and_launches_on_all() -> None:
    assert gpu_list({}, 4) == ("0", "0,1,2,3")
    assert gpu_list({"CUDA_VISIBLE_DEVICES": "3, 5"}, 2) == ("3", "3,5")
    assert gpu_list({"CUDA_VISIBLE_DEVICES": "GPU-a1,GPU-b2"}, 2) == ("GPU-a1", "GPU-a1,GPU-b2")


@pytest.mark.slow
def test_data_parallel_benchmark_compares_two_ranks_with_one_process_and_their_losses() -> None:
    throughput, loss = run_bench_output("trainer_data_parallel.py", "--smoke", timeout=240, exit_codes=(0,))[1]
    assert throughput.startswith("data parallel tiny BERT on ") and "1 process " in throughput, throughput
    assert "ratio 2-ranks/1-rank: " in throughput and throughput.endswith("(informational, load-dependent)")
    assert loss.startswith("data parallel tiny BERT final train loss: 1 process "), loss
    assert loss.endswith("(agree: must be within 5%)"), loss


def test_threads_are_split_between_the_ranks() -> None:
    assert [threads_per_rank(2, ranks) for ranks in (1, 2, 4)] == [2, 1, 1]
    assert threads_per_rank(16, 8) == 2


def test_steady_throughput_counts_the_steps_after_the_first() -> None:
    report = {"step": 11, "firstStepTime": "2026-12-07T08:00:00.000Z", "time": "2026-12-07T08:00:05.000Z"}
    assert steady_samples_per_second(report, 16) == pytest.approx(10 * 16 / 5.0)


def test_the_loss_ratio_is_the_pair_furthest_from_agreement() -> None:
    def run(loss: float) -> RunResult:
        return RunResult("r", 1, 1, steady=1.0, whole=1.0, loss=loss, train_runtime=1.0, wall=1.0, load_average=0.0)

    assert loss_ratio([run(0.5)], [run(0.5)]) == 1.0
    assert loss_ratio([run(0.5), run(0.4)], [run(0.5)]) == pytest.approx(1.25)
    assert loss_ratio([run(0.5)], [run(0.49), run(0.45)]) == pytest.approx(0.9)


def test_forgetting_benchmark_smoke_prints_both_tables_and_their_ratios() -> None:
    out, [methods, regularisation] = run_bench_output(
        "trainer_forgetting.py", "--smoke", "--regularisation", timeout=540
    )
    for row in ("| base model |", "| full |", "| lora |", "| freeze |", "| none |", "| all of them |"):
        assert row in out, out
    assert methods.startswith("forgetting (1 - pair rho): full ") and "ratio full/lora forgetting: " in methods
    assert regularisation.startswith("best control on test_out_of_domain: ")


def test_forgetting_runs_share_one_budget_and_differ_only_in_their_own_settings() -> None:
    for variant in METHODS:
        config = budget(variant.settings, epochs=2, seed=42, eval_steps=None, smoke=False)
        assert (config["epochs"], config["seed"], config["batch_size"], config["max_seq_length"]) == (2, 42, 16, 64)
        assert config["eval_strategy"] == "epoch" and config["method"] == variant.name
    none = budget(REGULARISATION[0].settings, epochs=3, seed=7, eval_steps=19, smoke=False)
    assert none == budget(METHODS[0].settings, epochs=3, seed=7, eval_steps=None, smoke=False)
    for variant in REGULARISATION[1:]:
        config = budget(variant.settings, epochs=3, seed=7, eval_steps=19, smoke=False)
        changed = {key for key in config.keys() | none.keys() if config.get(key) != none.get(key)}
        own = variant.settings.keys() - REGULARISATION[0].settings.keys()
        if "early_stopping_metric" in own:  # evaluates twice an epoch to have points to stop at
            own |= {"eval_strategy", "eval_steps"}
        assert changed == own, variant.name
    assert budget({}, epochs=2, seed=1, eval_steps=None, smoke=True)["max_steps"] == 2


def test_forgetting_is_what_the_pairwise_similarity_ranking_lost() -> None:
    assert forgetting({"retention_similarity_spearman": 1.0}) == 0.0
    assert forgetting({"retention_similarity_spearman": 0.75}) == pytest.approx(0.25)


def test_search_benchmark_smoke_compares_the_search_with_the_default_job() -> None:
    [line] = run_bench("search_quality.py", "--smoke", "--timeout", "180", timeout=300)
    assert line.startswith("search quality (smoke): wall search ") and "early stopping saved" in line, line
    assert line.endswith("(smoke: target not checked)"), line


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0 and percentile(values, 99) == 99.0 and percentile(values, 100) == 100.0
    assert percentile([3.0], 99) == 3.0 and percentile([2.0, 1.0], 50) == 1.0
    with pytest.raises(ValueError, match="measured nothing"):
        percentile([], 50)


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/apis/batch/v1/namespaces/default/jobs", ("create", "jobs")),
        (
            "PATCH",
            "/apis/finetune.dev/v1alpha1/namespaces/team/finetunejobs/a/status",
            ("patch", "finetunejobs/status"),
        ),
        ("PATCH", "/apis/finetune.dev/v1alpha1/namespaces/team/finetunejobs/a", ("patch", "finetunejobs")),
        ("GET", "/apis/finetune.dev/v1alpha1/finetunejobs?watch=true&resourceVersion=5", ("watch", "finetunejobs")),
        ("GET", "/api/v1/watch/namespaces/default/pods", ("watch", "pods")),
        ("GET", "/api/v1/namespaces/default/pods", ("list", "pods")),
        ("GET", "/api/v1/namespaces/default", ("get", "namespaces")),
        ("PUT", "/api/v1/namespaces/gone/finalize", ("update", "namespaces/finalize")),
        ("GET", "/api/v1/namespaces/default/secrets/x-progress", ("get", "secrets")),
        ("DELETE", "/api/v1/namespaces/default/pods", ("deletecollection", "pods")),
        ("GET", "/apis", ("get", "discovery")),
        ("GET", "/version", ("get", "discovery")),
    ],
)
def test_requests_are_classified_by_rbac_verb_and_resource(method: str, path: str, expected: tuple[str, str]) -> None:
    assert classify_request(method, path) == expected


def test_cel_rules_are_removed_at_every_depth_and_nothing_else() -> None:
    schema = {
        "type": "object",
        "x-kubernetes-validations": [{"rule": "self.a > 0"}],
        "properties": {
            "a": {"type": "integer", "x-kubernetes-validations": [{"rule": "self > 0"}]},
            "b": {"type": "array", "items": [{"type": "string"}]},
        },
    }
    assert without_cel_rules(schema) == {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "array", "items": [{"type": "string"}]}},
    }
    assert "x-kubernetes-validations" in schema  # a copy: the original is untouched


def test_step_is_read_from_the_right_jobs_series() -> None:
    text = (
        'finetune_operator_job_step{namespace="default",name="a"} 3.0\n'
        'finetune_operator_job_step{namespace="default",name="ab"} 7.0\n'
        'finetune_operator_job_steps_total{namespace="default",name="b"} 9.0\n'
    )
    assert step_in_metrics(text, ("default", "ab")) == 7.0
    assert step_in_metrics(text, ("default", "a")) == 3.0
    assert step_in_metrics(text, ("default", "b")) is None


def test_per_job_breakdown_separates_reads_writes_and_watches() -> None:
    requests = {
        ("create", "jobs"): 4,
        ("patch", "finetunejobs/status"): 10,
        ("get", "finetunejobs"): 6,
        ("list", "pods"): 2,
        ("watch", "pods"): 100,
    }
    reads, writes, detail = per_job_breakdown(requests, 2)
    assert (reads, writes) == (4.0, 7.0)
    assert detail == "create jobs 2.00, patch finetunejobs/status 5.00"


def test_flops_and_peaks() -> None:
    assert peak_bf16_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert peak_bf16_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_bf16_tflops("NVIDIA H100 NVL") == 835.0
    assert peak_bf16_tflops("NVIDIA H200") == 989.4
    assert peak_bf16_tflops("Tesla T4") is None
    assert train_flops_per_token(100, 2, 8, 4, lora=False) == 600 + 12 * 2 * 8 * 4
    assert train_flops_per_token(100, 2, 8, 4, lora=True) == 400 + 12 * 2 * 8 * 4


def trial(
    name: str, state: str, batch: int, step: int, total: int, start: str, end: str, train_runtime: float | None = None
) -> dict:
    entry = {
        "name": name,
        "state": state,
        "parameters": {"batchSize": batch},
        "step": step,
        "totalSteps": total,
        "startTime": f"2026-11-28T10:{start}Z",
        "completionTime": f"2026-11-28T10:{end}Z",
    }
    if train_runtime is not None:
        entry["metrics"] = {"train_runtime": train_runtime, "eval_loss": 0.3}
    return entry


def test_early_stopping_savings_use_the_rate_of_succeeded_trials_of_the_same_batch_size() -> None:
    trials = [
        trial("t0", "Succeeded", 8, 100, 100, "00:00", "02:00", train_runtime=100.0),  # 1.0 s/step
        trial("t1", "Succeeded", 8, 100, 100, "00:00", "02:30", train_runtime=140.0),  # 1.4 s/step
        trial("t2", "Succeeded", 8, 100, 100, "00:00", "02:00", train_runtime=120.0),  # 1.2 s/step: the median
        trial("t3", "EarlyStopped", 8, 20, 100, "03:00", "03:40"),  # 80 steps left
        trial("t4", "EarlyStopped", 32, 10, 26, "04:00", "04:30"),  # no peer: 4 x 1.2 s/step
        trial("t5", "Failed", 16, 3, 50, "05:00", "05:10"),
    ]
    savings = early_stopping_savings(trials)
    assert [(s.name, s.step, s.total_steps) for s in savings.stopped] == [("t3", 20, 100), ("t4", 10, 26)]
    assert savings.stopped[0].seconds_per_step == pytest.approx(1.2) and "batchSize 8" in savings.stopped[0].rate_source
    assert savings.stopped[1].seconds_per_step == pytest.approx(4.8) and "per sample" in savings.stopped[1].rate_source
    assert savings.saved_seconds == pytest.approx(80 * 1.2 + 16 * 4.8)
    assert savings.trial_seconds == 120 + 150 + 120 + 40 + 30 + 10
    assert savings.share == pytest.approx(savings.saved_seconds / (savings.trial_seconds + savings.saved_seconds))


def test_without_a_succeeded_trial_a_stopped_one_is_rated_by_its_own_time() -> None:
    [stopped] = early_stopping_savings([trial("t0", "EarlyStopped", 8, 10, 50, "00:00", "00:30")]).stopped
    assert stopped.seconds_per_step == pytest.approx(3.0) and "own" in stopped.rate_source


def test_no_stopped_trial_saves_nothing() -> None:
    savings = early_stopping_savings([trial("t0", "Succeeded", 8, 10, 10, "00:00", "00:20")])
    assert savings.stopped == [] and savings.saved_seconds == 0 and savings.share == 0 and savings.trial_seconds == 20


def test_benchmark_variants_change_only_what_they_say() -> None:
    sample = yaml.safe_load((BENCH.parent / "manifests" / "samples" / "sentiment-minilm-search.yaml").read_text())
    one_epoch = with_epochs(sample, 1)
    assert one_epoch["spec"]["hyperparameters"]["epochs"] == 1 and sample["spec"]["hyperparameters"]["epochs"] == 2
    assert with_epochs(sample, None) == sample
    smoke = smoke_variant(sample)
    assert smoke["spec"]["model"]["source"] == "pvc://models/tiny-bert"
    assert (
        smoke["spec"]["hyperparameterSearch"]["maxTrials"] == 2
        and sample["spec"]["hyperparameterSearch"]["maxTrials"] == 8
    )
    assert smoke["spec"]["dataset"] == sample["spec"]["dataset"]


def test_validation_loss_reads_a_search_or_a_plain_job_status() -> None:
    assert validation_loss({"metrics": {"eval_loss": 0.2}, "progress": {"evalLoss": 0.5}}) == 0.2
    assert validation_loss({"progress": {"evalLoss": 0.5}}) == 0.5
    assert validation_loss({}) is None


def test_gang_restart_benchmark_times_a_restart_against_the_cold_start() -> None:
    stdout, [line] = run_bench_output("gang_restart.py", "--steps", "600", timeout=600)
    assert line.startswith("gang restart ") and "cold start" in stdout
    assert re.search(r"resumed from \d+: \d+ steps redone", stdout), stdout
    assert "restarts 1, last: rank 1 TrainerCrashed" in stdout, stdout


def test_gang_restart_target_is_time_and_steps_redone() -> None:
    assert steps_redone(120, 100) == 20 and steps_redone(100, 100) == 0
    assert verdict(59.0, 50, 50) == ("target (training again <= 60 s, <= 50 steps redone): met", False)
    assert verdict(61.0, 0, 50)[1] and verdict(10.0, 51, 50)[1]


def test_checkpoint_upload_benchmark_times_steps_during_an_upload_against_steps_without() -> None:
    stdout, [line] = run_bench_output(
        "checkpoint_upload.py", "--steps", "60", "--checkpoint-steps", "20", "--hidden", "128", "--layers", "2"
    )
    assert line.startswith("checkpoint upload: mean step time during an upload ")
    assert re.search(r"\d+ uploads of [0-9.]+ MB", stdout), stdout


def test_a_step_is_during_an_upload_only_wholly_inside_one_and_without_only_touching_none() -> None:
    steps = [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0), (3.0, 4.0), (5.0, 6.0), (6.0, 7.0)]
    split = split_steps(steps, [(0.5, 3.5), (6.5, 9.0)], warm_up=0)
    assert split.during == [1.0, 1.0] and split.without == [1.0]  # (0, 1), (3, 4), (6, 7) overlap in part
    assert split_steps(steps, [], warm_up=2).without == [1.0] * 4
