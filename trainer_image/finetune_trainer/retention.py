"""Catastrophic forgetting: the retention set evaluated before and after fine-tuning (pure)."""

from __future__ import annotations

from finetune_trainer.eval_metrics import perplexity


def retention_report(before: dict, after: dict, *, language_model: bool) -> dict:
    """retention_loss_before/_after/_delta (after - before: positive means forgetting), perplexity for LMs,
    and every other retention_* metric before and after."""
    report = {}
    for key, value in before.items():
        if (
            not key.startswith("retention_")
            or not isinstance(value, (int, float))
            or key.endswith(("_runtime", "_per_second"))
        ):
            continue
        name = key.removeprefix("retention_")
        report[f"retention_{name}_before"] = value
        if key in after:
            report[f"retention_{name}_after"] = after[key]
    if "retention_loss" in before and "retention_loss" in after:
        report["retention_loss_delta"] = after["retention_loss"] - before["retention_loss"]
        if language_model:
            report["retention_perplexity_before"] = perplexity(before["retention_loss"])
            report["retention_perplexity_after"] = perplexity(after["retention_loss"])
            report["retention_perplexity_delta"] = (
                report["retention_perplexity_after"] - report["retention_perplexity_before"]
            )
    return report
