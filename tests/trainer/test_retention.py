"""Retention of a sentence encoder: its general-sentence embeddings against the base model's (pure)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from finetune_trainer.retention import embedding_retention, mean_pooled, spearman

RNG = np.random.default_rng(0)
BASE = RNG.normal(size=(12, 8))


def test_an_unchanged_encoder_retains_everything():
    assert embedding_retention(BASE, BASE.copy()) == pytest.approx(
        {"retention_embedding_cosine": 1.0, "retention_similarity_spearman": 1.0}
    )


def test_a_rotated_or_rescaled_space_keeps_its_geometry_but_not_its_coordinates():
    rotation, _ = np.linalg.qr(RNG.normal(size=(8, 8)))
    report = embedding_retention(BASE, 3.0 * BASE @ rotation)
    assert report["retention_similarity_spearman"] == pytest.approx(1.0)
    assert report["retention_embedding_cosine"] < 0.9


def test_an_encoder_that_forgot_its_geometry_scores_near_zero():
    report = embedding_retention(BASE, RNG.normal(size=BASE.shape))
    assert abs(report["retention_similarity_spearman"]) < 0.3
    assert abs(report["retention_embedding_cosine"]) < 0.3


def test_a_little_drift_costs_a_little():
    report = embedding_retention(BASE, BASE + 0.3 * RNG.normal(size=BASE.shape))
    assert 0.8 < report["retention_embedding_cosine"] < 1.0
    assert 0.6 < report["retention_similarity_spearman"] < 1.0


def test_mean_pooling_ignores_padding():
    hidden = np.array([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert mean_pooled(hidden, np.array([[1, 1, 0]])).tolist() == [[2.0, 3.0]]


def test_spearman_gives_ties_their_average_rank_and_nan_for_a_constant_side():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # Ties share their average rank: [1, 2.5, 2.5, 4] against [1, 2, 3, 4].
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_mismatched_or_too_few_embeddings_are_refused_with_their_shapes():
    with pytest.raises(ValueError, match=r"\(12, 8\) and \(11, 8\)"):
        embedding_retention(BASE, BASE[:11])
    with pytest.raises(ValueError, match="at least 3 sentences"):
        embedding_retention(BASE[:2], BASE[:2])
