"""Moved to `finetune_trainer.reporting.gpu`; this name stays only for tests/test_monitoring.py.

Delete this module once that test imports `finetune_trainer.reporting.gpu` (issue 13).
"""

from finetune_trainer.reporting.gpu import GpuSample, GpuSampler

__all__ = ["GpuSample", "GpuSampler"]
