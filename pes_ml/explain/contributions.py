"""SHAP values in log-odds, their additivity check, and PES points: the numbers of every explanation."""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
import pandas as pd

from pes_ml import treeshap
from pes_ml.errors import ExplanationError
from pes_ml.schemas import ACCOUNT_ID, AS_OF

if TYPE_CHECKING:
    import lightgbm

    from pes_ml.features.catalog import FeatureSpec

logger = logging.getLogger(__name__)

Model = Literal["churn", "expansion"]

MODEL: Final = "model"
FEATURE: Final = "feature"
GROUP: Final = "group"
FEATURE_VALUE: Final = "value"
SHAP_LOG_ODDS: Final = "shap_log_odds"
PES_POINTS: Final = "pes_points"
LONG_COLUMNS: Final = (ACCOUNT_ID, AS_OF, MODEL, FEATURE, GROUP, FEATURE_VALUE, SHAP_LOG_ODDS, PES_POINTS)
"""Columns of the long-format SHAP table, in order."""

PES_CENTER: Final = 50.0
"""The score of the typical account: the model's base value."""
POINTS_TO_DOUBLE_ODDS: Final = 10.0
"""Points that halve (churn) or double (expansion) the odds."""
POINTS_PER_LOG_ODDS: Final = POINTS_TO_DOUBLE_ODDS / math.log(2.0)
ADDITIVITY_TOLERANCE: Final = 1e-6

HIGHER_RAW_IS_BETTER: Final[dict[str, bool]] = {"churn": False, "expansion": True}
"""Whether a higher raw score moves the 0-100 score up: churn risk lowers the PES."""


@dataclass(frozen=True)
class ShapResult:
    """Exact SHAP values of one model for a set of rows.

    Attributes
    ----------
    contributions
        rows x features SHAP values, in raw log-odds (``units``).
    base_value
        The model's expected raw output over its training data (log-odds).
    raw_score
        ``booster.predict(X, raw_score=True)`` for the same rows.
    feature_names
        Column names of ``contributions``, in the model's order.
    max_additivity_error
        ``max |base_value + contributions.sum(axis=1) - raw_score|``, checked against 1e-6.
    units
        Always ``"log-odds"`` for a binary LightGBM model.
    """

    contributions: np.ndarray
    base_value: float
    raw_score: np.ndarray
    feature_names: tuple[str, ...]
    max_additivity_error: float
    units: str = "log-odds"


# --- SHAP values --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _packed_model(model_text: str) -> treeshap.PackedModel:
    """Tables are built once per model (~0.3 s for 300 trees x 31 leaves) and reused."""
    return treeshap.pack_model(model_text)


@contextmanager
def _numba_threads(n_threads: int | None) -> Iterator[None]:
    import numba

    if n_threads is None:
        yield
        return
    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(n_threads, int(numba.config.NUMBA_NUM_THREADS))))  # type: ignore[attr-defined]
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def _model_matrix(booster: lightgbm.Booster, X: pd.DataFrame | np.ndarray) -> np.ndarray:
    """X as float64 in the model's column order, categoricals as LightGBM's codes."""
    names = list(booster.feature_name())
    if not isinstance(X, pd.DataFrame):
        matrix = np.asarray(X, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != len(names):
            raise ExplanationError(
                f"Expected a 2-d array with {len(names)} feature columns (the model's features). "
                f"Got shape {matrix.shape} instead."
            )
        return matrix
    columns = [str(c) for c in X.columns]
    if columns != names:
        missing = [n for n in names if n not in columns]
        extra = [c for c in columns if c not in names]
        auto_names = names == [f"Column_{i}" for i in range(len(names))]
        if (missing or extra) and not (auto_names and len(columns) == len(names)):
            raise ExplanationError(
                f"The frame to explain must hold exactly the model's {len(names)} features. "
                f"Missing: {missing or 'none'}; unexpected: {extra or 'none'}. "
                "Pass the feature columns the model was trained on."
            )
        if not missing:
            X = X[names]
    # Same mapping as lightgbm.basic._data_from_pandas: training categories -> codes, unknown -> NaN.
    cat_columns = [c for c in X.columns if isinstance(X[c].dtype, pd.CategoricalDtype)]
    pandas_categorical = booster.pandas_categorical
    if pandas_categorical is not None and len(pandas_categorical) != len(cat_columns):
        raise ExplanationError(
            f"The model was trained with {len(pandas_categorical)} categorical column(s); "
            f"the frame has {len(cat_columns)} ({cat_columns}). Convert the same columns to "
            "the pandas 'category' dtype as in training."
        )
    matrix = np.empty(X.shape, dtype=np.float64)
    cat_index = 0
    for j, column in enumerate(X.columns):
        series = X[column]
        if isinstance(series.dtype, pd.CategoricalDtype):
            if pandas_categorical is not None:
                series = series.cat.set_categories(pandas_categorical[cat_index])
            cat_index += 1
            codes = series.cat.codes.to_numpy(dtype=np.float64)
            codes[codes < 0] = np.nan
            matrix[:, j] = codes
        else:
            try:
                matrix[:, j] = series.to_numpy(dtype=np.float64, na_value=np.nan)
            except (TypeError, ValueError) as exc:
                raise ExplanationError(
                    f"Feature {column!r} has dtype {series.dtype}, which the model cannot read. "
                    "Expected numbers, or the 'category' dtype for a categorical feature."
                ) from exc
    return matrix


def check_additivity(
    values: np.ndarray,
    base_value: float,
    raw_score: np.ndarray,
    *,
    atol: float = ADDITIVITY_TOLERANCE,
) -> float:
    """Check that ``base_value + values.sum(axis=1) == raw_score`` within ``atol``.

    Parameters
    ----------
    values
        rows x features SHAP values in log-odds.
    base_value
        The model's base value in log-odds.
    raw_score
        The model's raw output for the same rows.
    atol
        Largest absolute gap allowed.

    Returns
    -------
    float
        The largest absolute gap found.

    Raises
    ------
    ExplanationError
        When a row's gap exceeds ``atol`` (or is not finite).
    """
    gap = np.abs(base_value + np.asarray(values).sum(axis=1) - np.asarray(raw_score))
    worst = float(np.max(gap, initial=0.0)) if gap.size else 0.0
    if not np.all(np.isfinite(gap)) or worst > atol:
        row = int(np.nanargmax(np.where(np.isfinite(gap), gap, np.inf)))
        raise ExplanationError(
            f"SHAP values do not add up to the model's raw score: expected base value + sum of "
            f"contributions to equal the raw score within {atol:g}, got a gap of {gap[row]:.3g} "
            f"at row {row} ({int(np.sum(~(gap <= atol)))} of {gap.size} rows off). The explanation "
            "does not match the model; check that the features are the ones the model was trained "
            "on, and report it as a bug if they are."
        )
    return worst


def shap_values(
    booster: lightgbm.Booster,
    X: pd.DataFrame | np.ndarray,
    *,
    n_threads: int | None = None,
    atol: float = ADDITIVITY_TOLERANCE,
) -> ShapResult:
    """Exact (path-dependent) TreeSHAP values of a binary LightGBM model, in log-odds.

    The values are those of ``booster.predict(X, pred_contrib=True)`` and
    ``shap.TreeExplainer(booster).shap_values(X)``, computed by Fast TreeSHAP v2
    (see :mod:`pes_ml.treeshap`), and checked to add up to the raw score.

    Parameters
    ----------
    booster
        A trained binary LightGBM booster (one tree per iteration; its
        ``best_iteration`` is honoured, as by ``predict``), or a fitted
        ``lightgbm.LGBMClassifier``.
    X
        Rows to explain: a frame with the model's feature columns (any order;
        categorical features as the pandas ``category`` dtype, as in training, or as
        their integer codes) or a matrix in the model's column order.
    n_threads
        Threads for the computation; default: all cores.
    atol
        Tolerance of the additivity check.

    Returns
    -------
    ShapResult
        Values, base value, raw scores and feature names.

    Raises
    ------
    ExplanationError
        If the model has several trees per iteration or linear trees, if there are
        no rows or the columns do not match the model, or if the values do not add up
        to the raw score.

    Examples
    --------
    >>> result = shap_values(booster, features[booster.feature_name()])  # doctest: +SKIP
    >>> result.base_value + result.contributions.sum(axis=1) - result.raw_score  # doctest: +SKIP
    array([ 0.,  0., ...])
    """
    booster = getattr(booster, "booster_", booster)  # an LGBMClassifier holds its Booster
    if booster.num_model_per_iteration() != 1:
        raise ExplanationError(
            f"Expected a binary model (one tree per iteration); this one has "
            f"{booster.num_model_per_iteration()} trees per iteration (multiclass?)."
        )
    matrix = _model_matrix(booster, X)
    if matrix.shape[0] == 0:
        raise ExplanationError("Expected at least one row to explain. Got 0 rows.")
    model_text = booster.model_to_string()
    try:
        packed = _packed_model(model_text)
    except ValueError as exc:
        raise ExplanationError(f"Cannot explain this model: {exc}.") from exc
    lgb_threads: dict[str, Any] = {"num_threads": n_threads} if n_threads else {}
    with _numba_threads(n_threads):
        values = treeshap.tree_shap(packed, matrix)
    base_value = packed.base_value_fast
    for start, stop in _runs(packed.fallback_trees):
        # LightGBM's own TreeSHAP for the trees the fast path leaves out; last column: their base value
        contrib = np.asarray(
            booster.predict(
                matrix, pred_contrib=True, start_iteration=start, num_iteration=stop - start, **lgb_threads
            ),
            dtype=np.float64,
        )
        values += contrib[:, :-1]
        base_value += float(contrib[0, -1]) if len(contrib) else 0.0
    raw_score = np.asarray(booster.predict(matrix, raw_score=True, **lgb_threads), dtype=np.float64)
    error = check_additivity(values, base_value, raw_score, atol=atol)
    logger.debug(
        "explained %d rows x %d features (%d fast trees, %d fallback); additivity gap %.2e",
        matrix.shape[0],
        matrix.shape[1],
        packed.fast_trees.size,
        packed.fallback_trees.size,
        error,
    )
    return ShapResult(
        contributions=values,
        base_value=base_value,
        raw_score=raw_score,
        feature_names=tuple(booster.feature_name()),
        max_additivity_error=error,
    )


def _runs(trees: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive tree ids as half-open [start, stop) ranges."""
    runs: list[tuple[int, int]] = []
    for tree in trees.tolist():
        if runs and runs[-1][1] == tree:
            runs[-1] = (runs[-1][0], tree + 1)
        else:
            runs.append((tree, tree + 1))
    return runs


# --- PES points ---------------------------------------------------------------------------------


def _check_slope(platt_slope: float) -> None:
    if not (math.isfinite(platt_slope) and platt_slope > 0):
        raise ExplanationError(
            f"The Platt slope must be a positive finite number (calibration keeps the model's "
            f"order). Got {platt_slope!r} instead; refit the calibration."
        )


def to_pes_points(
    shap_log_odds: np.ndarray | float, platt_slope: float, *, higher_is_better: bool = False
) -> np.ndarray:
    """Convert SHAP values in raw log-odds into 0-100 score points.

    Parameters
    ----------
    shap_log_odds
        SHAP values of the model's raw output.
    platt_slope
        Slope of the Platt calibration ``z = slope * raw + intercept`` (positive).
    higher_is_better
        False for the churn model (more churn risk, fewer PES points); True for the
        expansion model (more expansion likelihood, more points). See
        :data:`HIGHER_RAW_IS_BETTER`.

    Returns
    -------
    numpy.ndarray
        ``∓ (10 / ln 2) * slope * shap``: 10 points per halving (or doubling) of the odds.
        The points of one account add up to its score minus 50, before clipping.

    Examples
    --------
    >>> float(to_pes_points(math.log(2.0), 1.0))  # doubling the odds of churn
    -10.0
    """
    _check_slope(platt_slope)
    sign = 1.0 if higher_is_better else -1.0
    return sign * POINTS_PER_LOG_ODDS * platt_slope * np.asarray(shap_log_odds, dtype=np.float64)


def pes_from_raw(
    raw: np.ndarray | float,
    base_value: float,
    platt_slope: float,
    higher_is_better: bool,
    *,
    clip: bool = True,
) -> np.ndarray:
    """The 0-100 score of raw model outputs: 50 at the base value, 10 points per doubling of odds.

    Parameters
    ----------
    raw
        ``booster.predict(X, raw_score=True)``.
    base_value
        The model's base value (:attr:`ShapResult.base_value`).
    platt_slope
        Slope of the Platt calibration (the intercept cancels out).
    higher_is_better
        False for the PES (churn model), True for the expansion score.
    clip
        Clip to [0, 100] (the published score); False gives the value the reasons add up to.

    Returns
    -------
    numpy.ndarray
        The scores.
    """
    centered = to_pes_points(
        np.asarray(raw, dtype=np.float64) - base_value, platt_slope, higher_is_better=higher_is_better
    )
    score = PES_CENTER + centered
    return np.clip(score, 0.0, 100.0) if clip else score


# --- long format and groups ---------------------------------------------------------------------


def _check_specs(feature_names: Sequence[str], specs: Mapping[str, FeatureSpec]) -> None:
    missing = [name for name in feature_names if name not in specs]
    if missing:
        raise ExplanationError(
            f"The feature catalog has no entry for model feature(s) {missing}; every model input "
            "needs a description, group and unit. Add them to the catalog."
        )
