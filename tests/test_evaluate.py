"""Evaluation metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pes_ml.evaluate import (
    binary_metrics,
    calibration_table,
    comparison_table,
    expected_calibration_error,
    lift_table,
    segment_metrics,
    size_band,
    tenure_band,
)


def test_ece_is_zero_for_perfect_calibration_and_grows_with_bias(seed):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.01, 0.3, 50_000)
    y = (rng.random(50_000) < p).astype(float)
    assert expected_calibration_error(y, p) < 0.01
    np.testing.assert_allclose(expected_calibration_error(y, np.clip(p + 0.1, 0, 1)), 0.1, atol=0.01)


def test_lift_table_top_decile_on_a_perfect_ranking():
    y = np.array([1] * 10 + [0] * 90, dtype=float)
    score = np.linspace(1, 0, 100)
    table = lift_table(y, score)
    np.testing.assert_allclose(table["lift"].iloc[0], 10.0)
    np.testing.assert_allclose(table["cumulative_capture"].iloc[0], 1.0)
    np.testing.assert_allclose(table["cumulative_capture"].iloc[-1], 1.0)


def test_binary_metrics_base_rate_log_loss_and_bootstrap_interval(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(2000) < 0.2).astype(float)
    p = np.clip(0.2 + 0.1 * (y - 0.2) + rng.normal(0, 0.08, 2000), 0.01, 0.99)
    metrics = binary_metrics(y, p, bootstrap_rounds=50, rng=rng)
    base = y.mean()
    expected = -(base * np.log(base) + (1 - base) * np.log(1 - base))
    np.testing.assert_allclose(metrics["base_log_loss"], expected, rtol=1e-9)
    assert metrics["roc_auc_low"] < metrics["roc_auc"] < metrics["roc_auc_high"] < 1.0
    assert metrics["log_loss"] < metrics["base_log_loss"]


def test_binary_metrics_with_one_class_gives_nan_auc():
    metrics = binary_metrics(np.zeros(10), np.full(10, 0.1))
    assert np.isnan(metrics["roc_auc"])
    assert metrics["positives"] == 0


def test_calibration_table_has_equal_frequency_bins():
    table = calibration_table(np.zeros(100), np.linspace(0, 1, 100), n_bins=10)
    assert table["count"].tolist() == [10] * 10


def test_segment_metrics_skip_small_segments():
    y = np.array([0, 1] * 50, dtype=float)
    p = np.linspace(0, 1, 100)
    segments = {"plan": pd.Series(["big"] * 90 + ["tiny"] * 10)}
    table = segment_metrics(y, {"model": p}, segments)
    assert table["value"].tolist() == ["big"]


def test_bands_cover_boundaries():
    assert size_band(pd.Series([1, 2, 9, 10, 250])).tolist() == ["1", "2-9", "2-9", "10-49", "250+"]
    assert tenure_band(pd.Series([0, 89, 90, 365, 730])).tolist() == [
        "<90d",
        "<90d",
        "90-179d",
        "1-2y",
        "2y+",
    ]


def test_comparison_table_orders_by_auc():
    table = comparison_table({"a": {"roc_auc": 0.6}, "b": {"roc_auc": 0.8}})
    assert table.index.tolist() == ["b", "a"]


def test_metrics_reject_mismatched_lengths():
    with pytest.raises(ValueError, match="same shape"):
        binary_metrics(np.zeros(3), np.zeros(4))
