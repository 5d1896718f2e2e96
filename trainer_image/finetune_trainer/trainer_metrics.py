"""Moved to `finetune_trainer.reporting.prometheus`; this name stays only for tests/test_monitoring.py.

Delete this module once that test imports `finetune_trainer.reporting.prometheus` (issue 13).
"""

from finetune_trainer.reporting.prometheus import DEFAULT_METRICS_PORT, GAUGES, TrainerMetrics, serve

__all__ = ["DEFAULT_METRICS_PORT", "GAUGES", "TrainerMetrics", "serve"]
