"""Drift between the data a model was trained on and the data it is asked to score.

The Population Stability Index (PSI) compares the share of rows in each bin of
the training reference (decile edges for numbers, levels for categories, plus a
"missing" bin) with the share at scoring time::

    PSI = sum_bins (p_score - p_train) * ln(p_score / p_train)

Common reading: < 0.1 stable, 0.1–0.25 worth a look, > 0.25 the model is
scoring a population it has not seen. Shares are floored at 1e-4 so an empty
bin gives a large but finite PSI.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

_FLOOR = 1e-4
MISSING = "<missing>"


@dataclass(frozen=True)
class DriftReport:
    """PSI per feature (and score), with the features above the warning and error thresholds."""

    psi: dict[str, float]
    warn_threshold: float
    error_threshold: float
    unseen_categories: dict[str, list[str]] = field(default_factory=dict)
    warn_only: frozenset[str] = frozenset()
    """Columns that drift by nature (e.g. account age grows every day): never an error."""

    @property
    def warnings(self) -> dict[str, float]:
        return {
            k: v
            for k, v in self.psi.items()
            if v > self.warn_threshold and (v <= self.error_threshold or k in self.warn_only)
        }

    @property
    def errors(self) -> dict[str, float]:
        return {k: v for k, v in self.psi.items() if v > self.error_threshold and k not in self.warn_only}

    def to_dict(self) -> dict[str, Any]:
        return {
            "psi": self.psi,
            "warn_threshold": self.warn_threshold,
            "error_threshold": self.error_threshold,
            "warnings": self.warnings,
            "errors": self.errors,
            "unseen_categories": self.unseen_categories,
            "warn_only": sorted(self.warn_only),
        }


def _psi(expected: np.ndarray, actual: np.ndarray) -> float:
    p = np.maximum(np.asarray(expected, dtype=float), _FLOOR)
    q = np.maximum(np.asarray(actual, dtype=float), _FLOOR)
    return float(np.sum((q - p) * np.log(q / p)))


def population_stability(values: pd.Series, reference: Mapping[str, Any]) -> float:
    """PSI of ``values`` against one reference distribution of :func:`pes_ml.model.reference_distribution`."""
    if reference.get("kind") == "categorical":
        shares: Mapping[str, float] = reference["shares"]
        observed = values.astype(object).where(values.notna(), MISSING).astype(str)
        actual = observed.value_counts(normalize=True)
        levels = sorted(set(shares) | set(actual.index))
        return _psi(
            np.array([shares.get(level, 0.0) for level in levels]),
            np.array([float(actual.get(level, 0.0)) for level in levels]),
        )
    edges = np.asarray(reference.get("edges", []), dtype=float)
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    missing = np.isnan(numbers)
    expected_missing = float(reference.get("missing_share", 0.0))
    finite = numbers[~missing]
    if not len(reference.get("shares", [])):
        return _psi(
            np.array([expected_missing, 1 - expected_missing]), np.array([missing.mean(), 1 - missing.mean()])
        )
    counts = np.bincount(np.searchsorted(edges, finite, side="right"), minlength=len(edges) + 1)
    n = max(len(numbers), 1)
    expected = np.append(
        np.asarray(reference["shares"], dtype=float) * (1 - expected_missing), expected_missing
    )
    actual = np.append(counts / n, missing.sum() / n)
    return _psi(expected, actual)


def check_drift(
    frame: pd.DataFrame,
    references: Mapping[str, Mapping[str, Any]],
    *,
    warn_threshold: float,
    error_threshold: float,
    unseen_categories: Mapping[str, list[str]] | None = None,
    warn_only: frozenset[str] = frozenset(),
) -> DriftReport:
    """PSI of every column of ``frame`` that has a training reference.

    Columns without a reference are skipped; references without a column are the
    feature-signature check's business, not this one's.
    """
    psi = {
        name: population_stability(frame[name], reference)
        for name, reference in references.items()
        if name in frame.columns
    }
    report = DriftReport(
        psi=psi,
        warn_threshold=warn_threshold,
        error_threshold=error_threshold,
        unseen_categories=dict(unseen_categories or {}),
        warn_only=warn_only,
    )
    for name, value in sorted(report.warnings.items()):
        logger.warning("Drift: PSI of %s is %.3f (above %.2f)", name, value, warn_threshold)
    for name, levels in report.unseen_categories.items():
        logger.warning("Unseen categories in %s: %s", name, ", ".join(levels[:10]))
    return report
