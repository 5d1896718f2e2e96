"""GPU usage of this node from NVML (`nvidia-ml-py`, imported as `pynvml`), or None without GPUs.

Never fails: a machine without the package, without the driver library or without GPUs simply has no
sample. NVML sees the GPUs mounted into the container (the device plugin mounts only the allocated
ones); CUDA_VISIBLE_DEVICES narrows that further when a launcher set it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

logger = logging.getLogger("finetune_trainer")


@dataclass(frozen=True)
class DeviceReading:
    utilization_percent: float | None  # None where NVML cannot say (MIG instances)
    memory_used_bytes: int
    memory_total_bytes: int


@dataclass(frozen=True)
class GpuSample:
    count: int
    utilization_ratio: float
    memory_used_bytes: int
    memory_total_bytes: int

    def as_report(self) -> dict:
        """The `gpu` object of a progress report (docs/progress.md)."""
        return {
            "count": self.count,
            "utilizationRatio": self.utilization_ratio,
            "memoryUsedBytes": self.memory_used_bytes,
            "memoryTotalBytes": self.memory_total_bytes,
        }


def summarize(readings: Sequence[DeviceReading]) -> GpuSample | None:
    """One node-wide sample: mean utilization over the devices that report it, summed memory. Pure."""
    if not readings:
        return None
    percents = [r.utilization_percent for r in readings if r.utilization_percent is not None]
    ratio = sum(percents) / len(percents) / 100.0 if percents else 0.0
    return GpuSample(
        count=len(readings),
        utilization_ratio=min(1.0, max(0.0, ratio)),
        memory_used_bytes=sum(r.memory_used_bytes for r in readings),
        memory_total_bytes=sum(r.memory_total_bytes for r in readings),
    )


def visible_devices(environ: Mapping[str, str]) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES as a list of indices or UUIDs; None when unset (all devices). Pure."""
    value = environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


class GpuSampler:
    """Reads NVML on demand. NVML is initialised on the first sample; if that fails, never again."""

    def __init__(self, nvml=None, environ: Mapping[str, str] | None = None):
        self._nvml = nvml  # injectable for tests; the real `pynvml` module otherwise
        self._environ = os.environ if environ is None else environ
        self._state = "new"  # new -> ready | unavailable
        self._lock = threading.Lock()  # the progress thread and the /metrics server both sample

    def sample(self) -> GpuSample | None:
        with self._lock:
            if self._state == "new":
                self._state = "ready" if self._init() else "unavailable"
            if self._state != "ready":
                return None
            try:
                return summarize([self._read(handle) for handle in self._handles()])
            except Exception as error:  # noqa: BLE001 - a driver hiccup must not reach training; try again next time
                logger.debug("NVML read failed: %s", error)
                return None

    def _init(self) -> bool:
        if self._nvml is None:
            try:  # optional: without nvidia-ml-py there is simply no GPU sample
                import pynvml
            except ImportError:
                return False
            self._nvml = pynvml
        try:
            self._nvml.nvmlInit()
            return self._nvml.nvmlDeviceGetCount() > 0
        except Exception as error:  # noqa: BLE001 - NVMLError_LibraryNotFound / DriverNotLoaded on GPU-less nodes
            logger.debug("no GPU sampling: %s", error)
            return False

    def _handles(self) -> list:
        nvml = self._nvml
        selectors = visible_devices(self._environ)
        if selectors is None:
            return [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
        handles = []
        for selector in selectors:
            if selector.isdigit():
                handles.append(nvml.nvmlDeviceGetHandleByIndex(int(selector)))
            else:
                handles.append(nvml.nvmlDeviceGetHandleByUUID(selector))
        return handles

    def _read(self, handle) -> DeviceReading:
        nvml = self._nvml
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        try:
            percent = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except Exception:  # noqa: BLE001 - NVMLError_NotSupported on MIG instances: memory is still meaningful
            percent = None
        return DeviceReading(percent, int(memory.used), int(memory.total))
