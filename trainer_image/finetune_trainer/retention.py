"""Catastrophic forgetting: the retention set evaluated before and after fine-tuning (pure)."""

from __future__ import annotations

import numpy as np

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


# --- General-language retention of a sentence encoder -----------------------------------------------
# A classifier's retention set has no labels of its task (general sentences are neither positive nor
# negative), so its loss on them says nothing. What a sentence encoder like all-MiniLM-L6-v2 is for is its
# embeddings; forgetting is measured there, against the base model's embeddings of the same sentences.


def mean_pooled(hidden, attention_mask):
    """Sentence embeddings: the mean of each sentence's token vectors over its real (unpadded) tokens.

    hidden is (sentences, tokens, width), attention_mask (sentences, tokens); numpy arrays or anything
    numpy converts (CPU tensors). This is the pooling all-MiniLM-L6-v2 was trained with."""
    hidden = np.asarray(hidden, dtype=np.float64)
    mask = np.asarray(attention_mask, dtype=np.float64)[..., None]
    return (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)


def embedding_retention(base, tuned) -> dict:
    """How much of the base encoder's behaviour on general sentences a fine-tuned encoder kept.

    base and tuned are (sentences, width) embeddings of the same sentences. Returns
    - retention_embedding_cosine: the mean cosine similarity of each sentence's tuned embedding to its base
      embedding (1.0: unchanged; it drops as fine-tuning moves the representation);
    - retention_similarity_spearman: the Spearman rank correlation between the base and the tuned model's
      pairwise cosine similarities of the sentences (1.0: the tuned model ranks which sentences are alike
      exactly as the base did). A rotation of the whole space leaves it at 1.0: it measures the geometry
      the encoder is used for (search, clustering), not the coordinates.
    """
    base, tuned = _unit_rows(base), _unit_rows(tuned)
    if base.shape != tuned.shape or base.ndim != 2:
        raise ValueError(
            f"embeddings must be two (sentences, width) arrays of one shape; got {base.shape} and {tuned.shape}"
        )
    if len(base) < 3:
        raise ValueError(f"at least 3 sentences are needed for a rank correlation of their pairs; got {len(base)}")
    upper = np.triu_indices(len(base), k=1)
    return {
        "retention_embedding_cosine": float(np.mean(np.sum(base * tuned, axis=1))),
        "retention_similarity_spearman": spearman((base @ base.T)[upper], (tuned @ tuned.T)[upper]),
    }


def spearman(x, y) -> float:
    """Spearman's rank correlation (ties share their average rank); NaN when either side is constant."""
    rx, ry = _average_ranks(np.asarray(x, dtype=np.float64)), _average_ranks(np.asarray(y, dtype=np.float64))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    scale = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / scale) if scale > 0 else float("nan")


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values))
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2  # 1-based ranks start+1..end, averaged
    return ranks


def _unit_rows(embeddings) -> np.ndarray:
    rows = np.asarray(embeddings, dtype=np.float64)
    return rows / np.clip(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-12, None)
