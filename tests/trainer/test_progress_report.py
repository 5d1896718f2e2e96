"""The progress report body (pure) and GPU sampling (NVML faked, and the real import path)."""

from __future__ import annotations

import json
import math
import sys
from types import SimpleNamespace

import pytest
from finetune_trainer.reporting.gpu import DeviceReading, GpuSample, GpuSampler, summarize, visible_devices
from finetune_trainer.reporting.report import ProgressSnapshot, build_report, eval_metrics_from, finite_number, rfc3339
from test_progress_helpers import validate_report

AT = 1767323045.678  # 2026-01-02T03:04:05.678Z


def full_snapshot(**changes) -> ProgressSnapshot:
    values = dict(
        step=40,
        total_steps=100,
        epoch=1.25,
        loss=0.61,
        learning_rate=2e-5,
        eval_metrics={"eval_loss": 0.5, "eval_accuracy": 0.9},
        samples_per_second=123.4,
        tokens_per_second=5000.0,
        checkpoint=(40, "/output/checkpoints/checkpoint-40"),
        first_step_time=AT - 60,
        pod="job-worker-0-abcde",
    )
    values.update(changes)
    return ProgressSnapshot(**values)


def test_full_report_has_every_protocol_key_in_protocol_shape():
    gpu = GpuSample(count=2, utilization_ratio=0.75, memory_used_bytes=10, memory_total_bytes=80)
    report = build_report("save", full_snapshot(), at=AT, gpu=gpu)
    validate_report(report)
    assert report == {
        "time": "2026-01-02T03:04:05.678Z",
        "event": "save",
        "step": 40,
        "totalSteps": 100,
        "epoch": 1.25,
        "loss": 0.61,
        "learningRate": 2e-5,
        "evalMetrics": {"eval_loss": 0.5, "eval_accuracy": 0.9},
        "samplesPerSecond": 123.4,
        "tokensPerSecond": 5000.0,
        "checkpoint": {"step": 40, "path": "/output/checkpoints/checkpoint-40"},
        "gpu": {"count": 2, "utilizationRatio": 0.75, "memoryUsedBytes": 10, "memoryTotalBytes": 80},
        "firstStepTime": "2026-01-02T03:03:05.678Z",
        "pod": "job-worker-0-abcde",
    }


def test_fresh_report_has_only_the_required_keys():
    report = build_report("begin", ProgressSnapshot(), at=AT)
    validate_report(report)
    assert report == {"time": "2026-01-02T03:04:05.678Z", "event": "begin", "step": 0, "totalSteps": 0}


def test_non_finite_and_negative_numbers_are_left_out_not_sent():
    report = build_report(
        "log", full_snapshot(loss=math.nan, learning_rate=-1.0, epoch=math.inf, samples_per_second=None), at=AT
    )
    validate_report(report)
    json.dumps(report, allow_nan=False)
    assert {"loss", "learningRate", "epoch", "samplesPerSecond"}.isdisjoint(report)


def test_overlong_checkpoint_path_is_omitted_and_long_pod_name_cut():
    report = build_report("save", full_snapshot(checkpoint=(1, "/x" * 600), pod="p" * 300), at=AT)
    validate_report(report)
    assert "checkpoint" not in report
    assert report["pod"] == "p" * 253


def test_unknown_event_is_a_programming_error():
    with pytest.raises(ValueError, match="tick"):
        build_report("tick", ProgressSnapshot(), at=AT)


def test_eval_metrics_keep_numeric_schema_names_eval_loss_first_and_at_most_32():
    metrics = {
        "eval_accuracy": 0.8,
        "epoch": 2.0,
        "eval_loss": 0.3,
        "eval_label": "cat",
        "eval runtime": 1.0,
        "eval_nan": math.nan,
        "eval_flag": True,
    }
    metrics.update({f"eval_m{i}": float(i) for i in range(40)})
    picked = eval_metrics_from(metrics)
    assert list(picked)[:2] == ["eval_loss", "eval_accuracy"]
    assert len(picked) == 32
    assert {"epoch", "eval_label", "eval runtime", "eval_nan", "eval_flag"}.isdisjoint(picked)


def test_eval_metrics_leave_out_the_evaluations_timings():
    timings = {"eval_runtime": 0.26, "eval_samples_per_second": 61.1, "eval_steps_per_second": 7.6}
    timings["eval_model_preparation_time"] = 0.0009
    assert eval_metrics_from({"eval_loss": 0.69, "eval_accuracy": 0.44, **timings}) == {
        "eval_loss": 0.69,
        "eval_accuracy": 0.44,
    }


def test_eval_metrics_accept_numpy_scalars():
    np = pytest.importorskip("numpy")
    assert eval_metrics_from({"eval_f1": np.float32(0.5)}) == {"eval_f1": 0.5}


def test_rfc3339_is_utc_with_z():
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"


def test_only_finite_numbers_are_reported():
    assert finite_number(2) == 2.0 and finite_number("0.5") == 0.5
    for value in (None, True, math.nan, math.inf, "loss", [1.0]):
        assert finite_number(value) is None, value


# ---- GPU ----


def test_summarize_averages_utilization_and_sums_memory():
    sample = summarize([DeviceReading(50.0, 1, 10), DeviceReading(100.0, 3, 10), DeviceReading(None, 2, 10)])
    assert sample == GpuSample(count=3, utilization_ratio=0.75, memory_used_bytes=6, memory_total_bytes=30)
    assert summarize([]) is None


def test_visible_devices_reads_indices_and_uuids():
    assert visible_devices({}) is None
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "0, 2"}) == ["0", "2"]
    assert visible_devices({"CUDA_VISIBLE_DEVICES": "GPU-abc"}) == ["GPU-abc"]
    assert visible_devices({"CUDA_VISIBLE_DEVICES": ""}) == []


class FakeNvml:
    """The part of pynvml's API the sampler uses, over a list of (utilization %, used, total)."""

    class NVMLError(Exception):
        pass

    def __init__(self, devices, fail_init=False):
        self.devices = devices
        self.fail_init = fail_init
        self.inits = 0

    def nvmlInit(self):
        self.inits += 1
        if self.fail_init:
            raise self.NVMLError("Driver Not Loaded")

    def nvmlDeviceGetCount(self):
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index):
        return self.devices[index]

    def nvmlDeviceGetHandleByUUID(self, uuid):
        return self.devices[int(uuid.removeprefix("GPU-"))]

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(used=handle[1], total=handle[2], free=handle[2] - handle[1])

    def nvmlDeviceGetUtilizationRates(self, handle):
        if handle[0] is None:
            raise self.NVMLError("Not Supported")
        return SimpleNamespace(gpu=handle[0], memory=0)


def test_sampler_reads_every_device_through_nvml():
    nvml = FakeNvml([(20, 1 << 30, 80 << 30), (40, 2 << 30, 80 << 30)])
    sample = GpuSampler(nvml, environ={}).sample()
    assert sample == GpuSample(
        count=2, utilization_ratio=pytest.approx(0.3), memory_used_bytes=3 << 30, memory_total_bytes=160 << 30
    )


def test_sampler_honours_cuda_visible_devices():
    nvml = FakeNvml([(10, 1, 8), (90, 2, 8), (50, 4, 8)])
    assert GpuSampler(nvml, environ={"CUDA_VISIBLE_DEVICES": "1"}).sample() == GpuSample(1, 0.9, 2, 8)
    assert GpuSampler(nvml, environ={"CUDA_VISIBLE_DEVICES": "GPU-2,GPU-0"}).sample() == GpuSample(2, 0.3, 5, 16)


def test_mig_device_without_utilization_still_reports_memory():
    assert GpuSampler(FakeNvml([(None, 5, 10)]), environ={}).sample() == GpuSample(1, 0.0, 5, 10)


def test_sampler_without_driver_returns_none_and_stops_trying():
    nvml = FakeNvml([(1, 1, 1)], fail_init=True)
    sampler = GpuSampler(nvml, environ={})
    assert sampler.sample() is None
    assert sampler.sample() is None
    assert nvml.inits == 1


def test_sampler_with_zero_devices_returns_none():
    assert GpuSampler(FakeNvml([]), environ={}).sample() is None


def test_sampler_without_pynvml_package_returns_none(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    assert GpuSampler(environ={}).sample() is None


def test_sampler_with_real_pynvml_on_this_machine_never_raises():
    # Here: None (no driver). On a GPU node: a sample that fits the report schema.
    sample = GpuSampler(environ={}).sample()
    if sample is not None:
        validate_report(
            {"time": "2026-01-01T00:00:00Z", "event": "log", "step": 0, "totalSteps": 0, "gpu": sample.as_report()}
        )
