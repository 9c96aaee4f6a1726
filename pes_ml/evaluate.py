"""Metrics for probability models: ranking, calibration, lift, and per-segment tables.

Every function takes true labels ``y`` (0/1) and predicted probabilities ``p``
and returns plain floats or frames, so the same code scores the model, every
baseline and the champion on the challenger's test snapshots.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

logger = logging.getLogger(__name__)

EPS = 1e-15
METRICS_HIGHER_IS_BETTER = {"roc_auc": True, "pr_auc": True, "log_loss": False, "brier": False, "ece": False}


def _arrays(y: object, p: object) -> tuple[np.ndarray, np.ndarray]:
    y_arr = np.asarray(y, dtype=float)
    p_arr = np.clip(np.asarray(p, dtype=float), EPS, 1 - EPS)
    if y_arr.shape != p_arr.shape:
        raise ValueError(f"y and p must have the same shape. Got {y_arr.shape} and {p_arr.shape} instead.")
    return y_arr, p_arr


def expected_calibration_error(y: object, p: object, n_bins: int = 10) -> float:
    """ECE with equal-frequency bins: the size-weighted mean |observed rate − mean prediction|.

    Equal-frequency bins keep every bin populated when probabilities are
    concentrated near a small base rate, where equal-width bins would put almost
    all rows in the first bin.
    """
    y_arr, p_arr = _arrays(y, p)
    if len(y_arr) == 0:
        return float("nan")
    order = np.argsort(p_arr, kind="stable")
    bins = np.array_split(order, min(n_bins, len(order)))
    total = len(y_arr)
    return float(sum(len(b) / total * abs(y_arr[b].mean() - p_arr[b].mean()) for b in bins if len(b)))


def calibration_table(y: object, p: object, n_bins: int = 10) -> pd.DataFrame:
    """Equal-frequency bins: mean prediction, observed rate and count per bin."""
    y_arr, p_arr = _arrays(y, p)
    order = np.argsort(p_arr, kind="stable")
    rows = [
        {"bin": i, "mean_predicted": p_arr[b].mean(), "observed_rate": y_arr[b].mean(), "count": len(b)}
        for i, b in enumerate(np.array_split(order, min(n_bins, max(len(order), 1))))
        if len(b)
    ]
    return pd.DataFrame(rows)


def lift_table(y: object, score: object, n_bins: int = 10) -> pd.DataFrame:
    """Deciles by descending score: rate, lift over the base rate, and cumulative capture of positives."""
    y_arr = np.asarray(y, dtype=float)
    s_arr = np.asarray(score, dtype=float)
    order = np.argsort(-s_arr, kind="stable")
    base = y_arr.mean() if len(y_arr) else float("nan")
    positives = y_arr.sum()
    rows, captured = [], 0.0
    for i, chunk in enumerate(np.array_split(order, min(n_bins, max(len(order), 1)))):
        if not len(chunk):
            continue
        rate = y_arr[chunk].mean()
        captured += y_arr[chunk].sum()
        rows.append(
            {
                "decile": i + 1,
                "count": len(chunk),
                "rate": rate,
                "lift": rate / base if base > 0 else float("nan"),
                "cumulative_capture": captured / positives if positives > 0 else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def top_decile(y: object, score: object) -> tuple[float, float]:
    """(lift, capture) of the 10% highest scores."""
    table = lift_table(y, score)
    if table.empty:
        return float("nan"), float("nan")
    return float(table["lift"].iloc[0]), float(table["cumulative_capture"].iloc[0])


def bootstrap_auc(y: object, p: object, rounds: int, rng: np.random.Generator) -> tuple[float, float]:
    """95% percentile interval of ROC AUC over bootstrap resamples of rows."""
    y_arr, p_arr = _arrays(y, p)
    n = len(y_arr)
    values = []
    for _ in range(rounds):
        idx = rng.integers(0, n, n)
        sample = y_arr[idx]
        if 0 < sample.sum() < n:
            values.append(roc_auc_score(sample, p_arr[idx]))
    if not values:
        return float("nan"), float("nan")
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def binary_metrics(
    y: object,
    p: object,
    *,
    bootstrap_rounds: int = 0,
    rng: np.random.Generator | None = None,
) -> dict[str, float]:
    """All headline metrics of one probability vector.

    Parameters
    ----------
    y
        True labels, 0/1.
    p
        Predicted probabilities of the positive class.
    bootstrap_rounds
        When > 0, adds ``roc_auc_low`` / ``roc_auc_high`` (95% bootstrap interval).
    rng
        Random generator for the bootstrap; ``np.random.default_rng(0)`` when omitted.

    Returns
    -------
    dict
        n, positives, base_rate, roc_auc, pr_auc, log_loss, base_log_loss (predicting the
        base rate for everyone), brier, ece, top_decile_lift, top_decile_capture.
    """
    y_arr, p_arr = _arrays(y, p)
    n, positives = len(y_arr), float(y_arr.sum())
    base = positives / n if n else float("nan")
    both = 0 < positives < n
    metrics = {
        "n": float(n),
        "positives": positives,
        "base_rate": base,
        "roc_auc": float(roc_auc_score(y_arr, p_arr)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y_arr, p_arr)) if both else float("nan"),
        "log_loss": float(log_loss(y_arr, p_arr, labels=[0, 1])) if n else float("nan"),
        "base_log_loss": float(log_loss(y_arr, np.full(n, np.clip(base, EPS, 1 - EPS)), labels=[0, 1]))
        if n
        else float("nan"),
        "brier": float(brier_score_loss(y_arr, p_arr)) if n else float("nan"),
        "ece": expected_calibration_error(y_arr, p_arr),
    }
    metrics["top_decile_lift"], metrics["top_decile_capture"] = top_decile(y_arr, p_arr)
    if bootstrap_rounds and both:
        low, high = bootstrap_auc(y_arr, p_arr, bootstrap_rounds, rng or np.random.default_rng(0))
        metrics["roc_auc_low"], metrics["roc_auc_high"] = low, high
    return metrics


def size_band(values: pd.Series) -> pd.Series:
    """Seats (or users) as bands a CS team recognises: 1, 2–9, 10–49, 50–249, 250+."""
    bins = [-np.inf, 1, 9, 49, 249, np.inf]
    names = ["1", "2-9", "10-49", "50-249", "250+"]
    return pd.cut(pd.to_numeric(values, errors="coerce"), bins=bins, labels=names).astype(str)


def tenure_band(days: pd.Series) -> pd.Series:
    """Account age as bands: <90 d, 90–179 d, 180–364 d, 1–2 y, 2 y+."""
    bins = [-np.inf, 89, 179, 364, 729, np.inf]
    names = ["<90d", "90-179d", "180-364d", "1-2y", "2y+"]
    return pd.cut(pd.to_numeric(days, errors="coerce"), bins=bins, labels=names).astype(str)


def segment_columns(
    frame: pd.DataFrame, wanted: list[str], size_feature: str, tenure_feature: str
) -> dict[str, pd.Series]:
    """The segment series available in ``frame``: raw columns, plus derived size and tenure bands."""
    segments: dict[str, pd.Series] = {}
    for name in wanted:
        if name == "size_band" and size_feature in frame:
            segments[name] = size_band(frame[size_feature])
        elif name == "tenure_band" and tenure_feature in frame:
            segments[name] = tenure_band(frame[tenure_feature])
        elif name in frame:
            segments[name] = frame[name].astype(str)
    return segments


def segment_metrics(
    y: object, predictions: Mapping[str, object], segments: Mapping[str, pd.Series], min_rows: int = 30
) -> pd.DataFrame:
    """Metrics per segment value for each scorer (model and baselines), segments with ≥ ``min_rows``."""
    y_arr = np.asarray(y, dtype=float)
    rows = []
    for segment, values in segments.items():
        labels = np.asarray(values, dtype=object)
        for level in pd.unique(labels):
            mask = labels == level
            if mask.sum() < min_rows:
                continue
            for scorer, p in predictions.items():
                metrics = binary_metrics(y_arr[mask], np.asarray(p, dtype=float)[mask])
                rows.append({"segment": segment, "value": str(level), "scorer": scorer, **metrics})
    return pd.DataFrame(rows)


def comparison_table(metrics: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """Model and baselines side by side, one row per scorer, best AUC first."""
    columns = [
        "roc_auc",
        "roc_auc_low",
        "roc_auc_high",
        "pr_auc",
        "log_loss",
        "base_log_loss",
        "brier",
        "ece",
        "top_decile_lift",
        "top_decile_capture",
    ]
    table = pd.DataFrame.from_dict({k: dict(v) for k, v in metrics.items()}, orient="index")
    table = table.reindex(columns=[c for c in columns if c in table.columns])
    return table.sort_values("roc_auc", ascending=False)
