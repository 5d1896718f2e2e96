"""Evaluation metrics computed locally with numpy (no `evaluate` hub downloads)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np


def accuracy(predictions: np.ndarray, references: np.ndarray) -> float:
    predictions, references = np.asarray(predictions), np.asarray(references)
    return float((predictions == references).mean()) if references.size else 0.0


def macro_f1(predictions: np.ndarray, references: np.ndarray, num_labels: int | None = None) -> float:
    """Unweighted mean of per-class F1 over the classes present in references or predictions."""
    predictions, references = np.asarray(predictions), np.asarray(references)
    classes = range(num_labels) if num_labels else np.union1d(predictions, references)
    scores = []
    for c in classes:
        tp = np.sum((predictions == c) & (references == c))
        fp = np.sum((predictions == c) & (references != c))
        fn = np.sum((predictions != c) & (references == c))
        if tp + fp + fn == 0:
            continue  # a class absent from both sides says nothing about this evaluation
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def perplexity(mean_loss: float) -> float:
    """exp(loss), capped so a diverged model reports a huge number instead of overflowing."""
    return float(math.exp(min(mean_loss, 50.0)))


def bio_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """Entity spans (type, start, end-exclusive) of a BIO/IOB2 tag sequence, the way seqeval reads them."""
    spans, kind, start = set(), None, 0
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, label = tag.partition("-") if "-" in tag else (tag, "", "")
        begins = prefix == "B" or (prefix == "I" and label != kind)
        if kind is not None and (prefix == "O" or begins):
            spans.add((kind, start, i))
            kind = None
        if begins:
            kind, start = label, i
    return spans


def entity_f1(predicted: Sequence[Sequence[str]], reference: Sequence[Sequence[str]]) -> dict[str, float]:
    """Micro precision/recall/F1 over exact entity spans, as seqeval's default report."""
    tp = n_pred = n_ref = 0
    for i, (p, r) in enumerate(zip(predicted, reference)):
        ps = {(i,) + s for s in bio_spans(p)}
        rs = {(i,) + s for s in bio_spans(r)}
        tp += len(ps & rs)
        n_pred += len(ps)
        n_ref += len(rs)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_ref if n_ref else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def _char_ngrams(text: str, n: int) -> Counter:
    text = text.replace(" ", "")
    return Counter(text[i : i + n] for i in range(len(text) - n + 1))


def chrf(hypotheses: Sequence[str], references: Sequence[str], max_order: int = 6, beta: float = 2.0) -> float:
    """Corpus chrF (character n-gram F-beta, 0-100), the sacreBLEU definition without word n-grams."""
    precisions, recalls = [], []
    for n in range(1, max_order + 1):
        match = hyp_total = ref_total = 0
        for h, r in zip(hypotheses, references):
            hc, rc = _char_ngrams(h, n), _char_ngrams(r, n)
            match += sum((hc & rc).values())
            hyp_total += sum(hc.values())
            ref_total += sum(rc.values())
        if hyp_total and ref_total:
            precisions.append(match / hyp_total)
            recalls.append(match / ref_total)
    if not precisions:
        return 0.0
    p, r = float(np.mean(precisions)), float(np.mean(recalls))
    if p + r == 0:
        return 0.0
    return 100.0 * (1 + beta**2) * p * r / (beta**2 * p + r)


def _edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, start=1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def word_error_rate(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus WER: word edits over reference words."""
    edits = words = 0
    for h, r in zip(hypotheses, references):
        edits += _edit_distance(h.split(), r.split())
        words += len(r.split())
    return edits / words if words else 0.0


def lower_is_better(metric: str) -> bool:
    """Whether smaller values of an eval metric are better (to infer greater_is_better)."""
    name = metric.removeprefix("eval_")
    return any(k in name for k in ("loss", "perplexity", "wer", "error"))
