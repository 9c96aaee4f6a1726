"""Exact explanations: SHAP values, PES points, feature groups, reasons and change attribution.

This is the only module that computes SHAP (STYLE §1). Everything is exact and
additive, so a CS manager can add the numbers up:

- :func:`shap_values` returns path-dependent TreeSHAP values in the model's raw
  log-odds with their base value, and refuses to return values that do not add up
  to ``booster.predict(X, raw_score=True)`` within 1e-6. They equal LightGBM's
  ``pred_contrib=True`` and ``shap.TreeExplainer(booster).shap_values(X)``; the
  algorithm (Fast TreeSHAP v2 compiled with numba, both cores, with LightGBM's
  own TreeSHAP as the fallback for very deep trees) lives in :mod:`pes_ml.treeshap`,
  whose docstring gives the formulas. Measured speed is in ``benchmarks/RESULTS.md``.
- :func:`to_pes_points` converts log-odds into PES points. The PES scale is linear
  in calibrated log-odds (Platt scaling), ``pes = 50 + (10 / ln 2) * (z_base - z)``
  with ``z = slope * raw + intercept``, so each feature's points are
  ``-(10 / ln 2) * slope * shap`` and an account's points add up to ``pes - 50``
  before clipping. The expansion score uses the same scale with the sign flipped.
- :func:`long_format` is the table the run store saves (one row per account and
  feature); :func:`group_contributions` sums it per feature group;
  :func:`top_reasons` and :func:`attribute_change` turn it into sentences built only
  from the feature catalog's metadata, whose direction always matches the sign.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

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


_TEXT: Final = pa.large_string()
"""Arrow type of pandas 3's ``str`` columns."""
_PREFILTER_MAX_K: Final = 8
"""Up to this many rows per group, top-k selection sorts only the rows that can make it."""
_REPR_BELOW: Final = 1e-4
"""``repr`` switches to exponent notation below this magnitude (``1e-05``)."""
_INTEGER_BELOW: Final = 1e15
"""Integral values below this magnitude print as integers (``3``, not ``3.0``)."""


def _arrow_text(values: pd.Series) -> pa.Array:
    """A pyarrow-backed text column as one Arrow array (a concatenated frame holds several chunks)."""
    arrow = pa.array(values.array)
    if isinstance(arrow, pa.ChunkedArray):
        arrow = arrow.combine_chunks()
    return arrow.cast(_TEXT)


def _is_arrow_text(dtype: Any) -> bool:
    return isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow"


def _factorize(values: pd.Series, *, sort: bool = False) -> tuple[np.ndarray, pd.Index]:
    """``pd.factorize(values, sort=sort)``, hashing only the first row of each run of equal texts.

    A long table repeats each account and model over its features, so its key columns are
    runs; comparing neighbours is cheaper than hashing every row.
    """
    n = len(values)
    if n > 1 and _is_arrow_text(values.dtype):
        arrow = _arrow_text(values)
        same = pc.fill_null(pc.equal(arrow.slice(1), arrow.slice(0, n - 1)), False)
        heads = np.flatnonzero(np.r_[True, ~same.to_numpy(zero_copy_only=False)])
        if len(heads) <= n // 4:
            codes, uniques = pd.factorize(values.iloc[heads], sort=sort)
            return np.repeat(codes, np.diff(np.r_[heads, n])), uniques
    codes, uniques = pd.factorize(values, sort=sort)
    return codes, uniques


def _str_series(values: pa.Array) -> pd.Series:
    """An Arrow text array as a pandas ``str`` column, without a copy; nulls are missing values."""
    return pd.Series(values, dtype="str")


def _float_text(numbers: np.ndarray) -> pa.Array:
    """``repr`` of non-integral floats, computed by Arrow where it prints the same text.

    Arrow's float-to-string cast finds the same shortest round-trip digits as ``repr``
    but switches to exponent notation at other magnitudes (``4.17e+11`` where ``repr``
    prints ``417875957690.889``); those values, tiny and huge ones, and inf go through
    ``repr`` itself.
    """
    text = pc.cast(pa.array(numbers, type=pa.float64()), _TEXT)
    magnitude = np.abs(numbers)
    own = ~np.isfinite(numbers) | (magnitude < _REPR_BELOW) | (magnitude >= _INTEGER_BELOW)
    own |= pc.match_substring(text, "e").to_numpy(zero_copy_only=False)
    if not own.any():
        return text
    fixed = pa.array([repr(v) for v in numbers[own].tolist()], type=_TEXT)
    return pc.replace_with_mask(text, pa.array(own), fixed)


def _numeric_text(numbers: np.ndarray) -> pa.Array:
    """Numbers as text, each distinct value formatted once: integers without ".0", else ``repr``."""
    codes, uniques = pd.factorize(numbers)  # NaN -> -1: missing
    uniques = np.asarray(uniques, dtype=np.float64)
    integral = np.isfinite(uniques) & (np.abs(uniques) < _INTEGER_BELOW)
    integral[integral] = uniques[integral] == np.round(uniques[integral])
    whole, other = np.flatnonzero(integral), np.flatnonzero(~integral)
    parts = pa.concat_arrays(
        [
            pc.cast(pa.array(uniques[whole].astype(np.int64)), _TEXT),  # str(int(v)): -0.0 -> "0"
            _float_text(uniques[other]),
        ]
    )
    position = np.empty(len(uniques), dtype=np.int64)
    position[whole] = np.arange(len(whole))
    position[other] = len(whole) + np.arange(len(other))
    missing = codes < 0
    if missing.all():  # nothing to format (an all-missing column has no distinct value)
        return pa.nulls(len(codes), type=_TEXT)
    return parts.take(pa.array(np.where(missing, 0, position[np.maximum(codes, 0)]), mask=missing))


def _value_text(column: pd.Series) -> pa.Array:
    """Feature values as text: labels for categories, shortest exact repr for numbers; null if missing."""
    dtype = column.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        labels = pa.array([str(v) for v in dtype.categories.astype(object)], type=_TEXT)
        codes = column.cat.codes.to_numpy(dtype=np.int64)
        return labels.take(pa.array(codes, mask=codes < 0))
    if _is_arrow_text(dtype):
        return _arrow_text(column)
    if not pd.api.types.is_numeric_dtype(dtype):
        return pa.array([None if pd.isna(v) else str(v) for v in column.astype(object)], type=_TEXT)
    return _numeric_text(column.to_numpy(dtype=np.float64, na_value=np.nan))


def long_format(
    result: ShapResult,
    features: pd.DataFrame,
    *,
    model: Model,
    specs: Mapping[str, FeatureSpec],
    platt_slope: float,
) -> pd.DataFrame:
    """The long table the run store saves: one row per account and model feature.

    Parameters
    ----------
    result
        SHAP values of ``features`` (same rows, same order).
    features
        The feature frame that was explained, with ``account_id`` and ``as_of``.
    model
        ``"churn"`` or ``"expansion"``.
    specs
        The feature catalog, name -> :class:`~pes_ml.features.catalog.FeatureSpec`.
    platt_slope
        Slope of the model's Platt calibration, for the PES points.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`LONG_COLUMNS`: account_id, as_of, model, feature, group,
        value (text, so numbers and labels share a column; missing when the
        feature is missing), shap_log_odds, pes_points.

    Raises
    ------
    ExplanationError
        If the rows do not match, or a feature is not in the catalog.
    """
    if model not in HIGHER_RAW_IS_BETTER:
        raise ExplanationError(f"model must be one of {sorted(HIGHER_RAW_IS_BETTER)}. Got {model!r}.")
    names = list(result.feature_names)
    _check_specs(names, specs)
    n_rows, n_features = result.contributions.shape
    if len(features) != n_rows:
        raise ExplanationError(
            f"The feature frame has {len(features)} rows but the SHAP values {n_rows}; pass the "
            "frame that was explained."
        )
    points = to_pes_points(result.contributions, platt_slope, higher_is_better=HIGHER_RAW_IS_BETTER[model])
    # Row-major like the SHAP matrix: account i's features are rows i * n_features + j. Text columns
    # are built once per account or feature, then repeated by Arrow's take (no Python per row).
    row = np.repeat(np.arange(n_rows, dtype=np.int64), n_features)
    column = np.tile(np.arange(n_features, dtype=np.int64), n_rows)
    texts = [_value_text(features[name]) for name in names]
    values = pa.concat_arrays(texts).take(column * n_rows + row) if texts else pa.array([], type=_TEXT)
    long = pd.DataFrame(
        {
            ACCOUNT_ID: features[ACCOUNT_ID].astype("str").array.take(row),
            AS_OF: features[AS_OF].array.take(row),
            MODEL: _str_series(pa.repeat(pa.scalar(model, type=_TEXT), n_rows * n_features)),
            FEATURE: _str_series(pa.array(names, type=_TEXT).take(column)),
            GROUP: _str_series(pa.array([specs[n].group for n in names], type=_TEXT).take(column)),
            FEATURE_VALUE: _str_series(values),
            SHAP_LOG_ODDS: result.contributions.ravel(),
            PES_POINTS: points.ravel(),
        }
    )
    logger.info("long-format SHAP table: %d accounts x %d features (%s model)", n_rows, n_features, model)
    return long


def group_contributions(
    shap: pd.DataFrame | ShapResult | np.ndarray,
    specs: Mapping[str, FeatureSpec],
    feature_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Sum contributions per feature group (adoption, stickiness, growth, ...).

    Parameters
    ----------
    shap
        Either the long table of :func:`long_format` or a rows x features matrix
        (a :class:`ShapResult`, or an array with ``feature_names``).
    specs
        The feature catalog; each feature's group comes from it.
    feature_names
        Column names of a bare array.

    Returns
    -------
    pandas.DataFrame
        For a long table: one row per (account_id, as_of, model, group) with the
        summed shap_log_odds and pes_points. For a matrix: rows x groups, groups in
        order of first appearance among the features.
    """
    if isinstance(shap, pd.DataFrame):
        _check_specs(shap[FEATURE].unique().tolist(), specs)
        groups = shap[FEATURE].map({name: spec.group for name, spec in specs.items()})
        keyed = shap.assign(**{GROUP: groups})
        keys = [c for c in (ACCOUNT_ID, AS_OF, MODEL) if c in keyed.columns] + [GROUP]
        summed = keyed.groupby(keys, sort=False, observed=True)[[SHAP_LOG_ODDS, PES_POINTS]].sum()
        return summed.reset_index()
    if isinstance(shap, ShapResult):
        matrix, names = shap.contributions, list(shap.feature_names)
    else:
        if feature_names is None:
            raise ExplanationError("feature_names is required to group a bare matrix of SHAP values.")
        matrix, names = np.asarray(shap, dtype=np.float64), list(feature_names)
    _check_specs(names, specs)
    group_of = [specs[name].group for name in names]
    ordered = list(dict.fromkeys(group_of))
    return pd.DataFrame(
        {g: matrix[:, [i for i, gi in enumerate(group_of) if gi == g]].sum(axis=1) for g in ordered}
    )


# --- reasons ------------------------------------------------------------------------------------

REASON_RANK: Final = "rank"
SENTENCE: Final = "sentence"
DELTA_POINTS: Final = "delta_points"
PES_DELTA: Final = "pes_delta"
_SCORE_NAME: Final[dict[str, str]] = {"churn": "PES", "expansion": "Expansion score"}
_OUTCOME: Final[dict[str, str]] = {"churn": "churn risk", "expansion": "expansion likelihood"}
_MINUS: Final = "\u2212"


def direction_phrase(shap_log_odds: float, model: Model) -> str:
    """ "raises churn risk" / "lowers churn risk" (or expansion likelihood), from the SHAP sign.

    The catalog's ``direction`` says what a higher value *usually* means; the
    sentence follows this account's actual contribution, so it never contradicts the number.
    """
    if shap_log_odds == 0 or not math.isfinite(shap_log_odds):
        return f"does not change {_OUTCOME[model]}"
    return f"{'raises' if shap_log_odds > 0 else 'lowers'} {_OUTCOME[model]}"


def format_value(value: str | float | None, unit: str) -> str:
    """A feature value as CS reads it: 1,234 / 0.42 / 42% / 12 days / $1,234 / a label.

    Parameters
    ----------
    value
        The value, or its text from the long table (None or NaN when missing).
    unit
        The catalog unit: count, ratio, share, days, currency, category, flag...

    Returns
    -------
    str
        The formatted value; "no data" when missing.

    Examples
    --------
    >>> format_value("0.4213", "share"), format_value(1234.4, "currency"), format_value("3", "count")
    ('42%', '$1,234', '3')
    """
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return "no data"
    if unit == "category":
        return str(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(number):
        return str(value)
    integral = number == round(number) and abs(number) < 1e15
    if unit == "ratio":
        return f"{number:.2f}"
    if unit == "share":
        return f"{number:.1%}" if 0 < abs(number) < 0.01 else f"{number:.0%}"
    if unit == "days":
        if integral:
            return "1 day" if int(number) == 1 else f"{int(number):,} days"
        return f"{number:,.1f} days"
    if unit == "currency":
        return f"-${-number:,.0f}" if number < 0 else f"${number:,.0f}"
    if unit in {"flag", "bool", "boolean"}:
        return "yes" if number else "no"
    if integral:
        return f"{int(number):,}"
    return f"{number:,.1f}" if unit == "count" else f"{number:,.2f}"


def reason_sentence(
    spec: FeatureSpec,
    value: str | float | None,
    shap_log_odds: float,
    model: Model,
    *,
    previous_value: str | float | None = None,
    previous_window_days: int | None = None,
) -> str:
    """One reason, built only from catalog metadata and the value.

    Examples
    --------
    "Active users in the last 30 days: 3 (was 9 in the prior 30 days) — raises churn risk"
    """
    text = f"{spec.description}: {format_value(value, spec.unit)}"
    if previous_value is not None and not (isinstance(previous_value, float) and math.isnan(previous_value)):
        window = previous_window_days or spec.window_days
        period = f"in the prior {window} days" if window else "before"
        text += f" (was {format_value(previous_value, spec.unit)} {period})"
    return f"{text} \u2014 {direction_phrase(shap_log_odds, model)}"


def _format_values(values: pd.Series, units: np.ndarray) -> np.ndarray:
    """:func:`format_value` of each row (a value and its unit), computed once per distinct pair."""
    if not isinstance(values.dtype, pd.StringDtype):
        return np.array(
            [format_value(v, u) for v, u in zip(values.tolist(), units.tolist(), strict=True)], dtype=object
        )
    value_codes, distinct = pd.factorize(values)  # missing -> -1 -> "no data"
    unit_codes, unit_names = pd.factorize(units)
    pairs, inverse = np.unique(unit_codes * (len(distinct) + 1) + value_codes + 1, return_inverse=True)
    labels, unit_list = [None, *distinct.tolist()], unit_names.tolist()
    texts = [
        format_value(labels[v], unit_list[u])
        for u, v in zip(*np.divmod(pairs, len(distinct) + 1), strict=True)
    ]
    return np.array(texts, dtype=object)[inverse.ravel()]


def _direction_phrases(shap_log_odds: np.ndarray, models: pd.Series) -> np.ndarray:
    """:func:`direction_phrase` of each row, computed once per model and sign."""
    model_codes, model_names = pd.factorize(models, use_na_sentinel=False)
    finite = np.isfinite(shap_log_odds)
    sign = np.where(finite & (shap_log_odds > 0), 1, np.where(finite & (shap_log_odds < 0), 2, 0))
    table = np.array([[direction_phrase(s, m) for s in (0.0, 1.0, -1.0)] for m in model_names], dtype=object)
    return np.asarray(table.reshape(-1, 3)[model_codes, sign], dtype=object)


def _key_codes(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """One int64 code per row for the combination of ``columns``; -1 where any of them is missing."""
    key = np.zeros(len(frame), dtype=np.int64)
    missing = np.zeros(len(frame), dtype=bool)
    for column in columns:
        codes, uniques = _factorize(frame[column])
        key = key * max(len(uniques), 1) + codes
        missing |= codes < 0
    key[missing] = -1
    return key


def _lexsort3(first: np.ndarray, second: np.ndarray, third: np.ndarray) -> np.ndarray:
    """``np.lexsort((third, second, first))`` for non-negative int ``first``/``third`` and float ``second``.

    The same permutation (ties in all three keep row order; NaN sorts last), ~3x faster: ``second``
    becomes a dense rank, and the three keys one int64 key sorted once.
    """
    n = len(second)
    by_second = np.argsort(second)
    ordered = second[by_second]
    new = np.ones(n, dtype=bool)
    new[1:] = ~((ordered[1:] == ordered[:-1]) | (np.isnan(ordered[1:]) & np.isnan(ordered[:-1])))
    dense = np.empty(n, dtype=np.int64)
    dense[by_second] = np.cumsum(new) - 1
    n_first = int(first.max()) + 1 if n else 1
    n_second = int(dense.max()) + 1 if n else 1
    n_third = int(third.max()) + 1 if n else 1
    if n_first * n_second * n_third >= 2**63:
        return np.lexsort((third, second, first))
    key = (first.astype(np.int64) * n_second + dense) * n_third + third
    return np.argsort(key, kind="stable")


def _first_k(
    first: np.ndarray, second: np.ndarray, third: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` rows of each ``first`` in the order of ``np.lexsort((third, second, first))``.

    Returns their positions, in that order, and their rank (0 = first) within their ``first``.
    For a small ``k`` only the rows that can make it are sorted: per ``first``, those whose
    ``second`` is among its k smallest distinct values (found in k linear passes).
    """
    rows = np.arange(len(first))
    if len(first) > 0 and k <= _PREFILTER_MAX_K:
        by_first = np.argsort(first, kind="stable")  # linear when first is already grouped
        starts = np.r_[0, np.flatnonzero(np.diff(first[by_first])) + 1]
        group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(first)]))
        value = second[by_first]
        value = np.where(np.isnan(value), np.inf, value)  # NaN sorts last
        bound = np.full(len(starts), -np.inf)
        for _ in range(k):
            bound = np.minimum.reduceat(np.where(value > bound[group], value, np.inf), starts)
        rows = np.sort(by_first[value <= bound[group]])
    order = rows[_lexsort3(first[rows], second[rows], third[rows])]
    ordered = first[order]
    starts = np.r_[0, np.flatnonzero(np.diff(ordered)) + 1]
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    return order[rank < k], rank[rank < k]


def top_reasons(
    long: pd.DataFrame,
    specs: Mapping[str, FeatureSpec],
    k: int = 3,
    *,
    companions: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """The k features that move each account's score the most, with a sentence each.

    Parameters
    ----------
    long
        The table of :func:`long_format` (one or both models).
    specs
        The feature catalog.
    k
        Reasons per account and model. Features with a zero contribution are never reasons,
        nor are rows whose account_id, as_of or model is missing (no account to give them to).
    companions
        Optional map from a feature to its prior-window companion feature (e.g.
        ``active_users_30d -> active_users_prev_30d``); when the companion's value is
        in ``long`` the sentence adds "(was 9 in the prior 30 days)".

    Returns
    -------
    pandas.DataFrame
        account_id, as_of, model, rank (1 = strongest), feature, group, value,
        shap_log_odds, pes_points, sentence — ordered by account, model and rank.
    """
    if k < 1:
        raise ExplanationError(f"k must be a positive number of reasons. Got {k!r} instead.")
    feature_codes, names = pd.factorize(long[FEATURE])
    if (feature_codes < 0).any():
        _check_specs(long[FEATURE].unique().tolist(), specs)  # names the missing feature
    _check_specs(names.tolist(), specs)
    keys = [ACCOUNT_ID, AS_OF, MODEL]
    account_key = _key_codes(long, keys)
    candidates = np.flatnonzero((long[SHAP_LOG_ODDS].to_numpy() != 0) & (account_key >= 0))
    # Strongest first within each account and model (in order of first appearance); ties by feature name.
    group_id = pd.factorize(account_key[candidates])[0]
    name_order = np.empty(len(names), dtype=np.int64)
    name_order[np.argsort(np.asarray(names, dtype=object), kind="stable")] = np.arange(len(names))
    order, rank = _first_k(
        group_id,
        -np.abs(long[PES_POINTS].to_numpy(dtype=np.float64, na_value=np.nan)[candidates]),
        name_order[feature_codes[candidates]],
        k,
    )
    rows = candidates[order]
    chosen = long.take(rows)
    chosen.insert(3, REASON_RANK, rank + 1)

    # Sentences: every distinct value is formatted once, and pieces are joined per row.
    chosen_specs = [specs[name] for name in names.tolist()]
    codes = feature_codes[rows]
    units = np.array([spec.unit for spec in chosen_specs], dtype=object)[codes]
    descriptions = np.array([spec.description for spec in chosen_specs], dtype=object)[codes]
    values = _format_values(chosen[FEATURE_VALUE], units)
    phrases = _direction_phrases(
        chosen[SHAP_LOG_ODDS].to_numpy(dtype=np.float64, na_value=np.nan), chosen[MODEL]
    )
    before = np.full(len(chosen), "", dtype=object)
    if companions:
        wanted = chosen[FEATURE].map(companions)
        lookup = long[long[FEATURE].isin(set(companions.values()))].set_index([*keys, FEATURE])[FEATURE_VALUE]
        index = pd.MultiIndex.from_arrays([chosen[c] for c in keys] + [wanted])
        previous = lookup.reindex(index).reset_index(drop=True)
        periods = []
        for name, spec in zip(names.tolist(), chosen_specs, strict=True):
            companion = companions.get(name)
            companion_spec = specs.get(companion) if companion is not None else None
            window = (companion_spec.window_days if companion_spec else None) or spec.window_days
            periods.append(f"in the prior {window} days" if window else "before")
        present = previous.notna().to_numpy()
        period = np.array(periods, dtype=object)[codes]
        was = " (was " + _format_values(previous, units) + " " + period + ")"
        before[present] = was[present]
    sentences = [
        f"{d}: {v}{w} \u2014 {p}" for d, v, w, p in zip(descriptions, values, before, phrases, strict=True)
    ]
    chosen[SENTENCE] = _str_series(pa.array(sentences, type=_TEXT)).array
    return chosen.reset_index(drop=True)


# --- change since the previous run --------------------------------------------------------------


@dataclass(frozen=True)
class ChangeAttribution:
    """Why each account's score moved between two runs.

    Attributes
    ----------
    accounts
        One row per (account_id, model) scored in both runs: previous_as_of, as_of,
        pes_previous, pes_current (both before clipping), pes_delta,
        previous_model_version, model_version, model_version_changed, sentence.
    features
        account_id, model, feature, group, delta_points; per account they add up to pes_delta.
    groups
        account_id, model, group, delta_points; the feature deltas summed per group.
    """

    accounts: pd.DataFrame
    features: pd.DataFrame
    groups: pd.DataFrame


def _short_description(spec: FeatureSpec | None, feature: str) -> str:
    if spec is None:
        return feature
    text = spec.description
    # "Active users ..." -> "active users ..."; keep acronyms such as "DAU/MAU" as written.
    return text[:1].lower() + text[1:] if len(text) > 1 and not text[1].isupper() else text


def _signed_points(delta: float) -> str:
    text = f"{delta:+.0f}" if abs(delta) >= 0.5 else f"{delta:+.1f}"
    return text.replace("-", _MINUS)


@dataclass(frozen=True)
class _RunKeys:
    """Integer codes of one run's rows; -1 where a key is missing (pandas' groupby drops those rows)."""

    pair: np.ndarray
    """(account_id, model): ``account * n_models + model``."""
    triple: np.ndarray
    """(account_id, model, feature): ``pair * n_features + feature``."""
    feature: np.ndarray
    """The feature's code alone (also on rows whose account or model is missing)."""


def _shared_codes(previous: pd.Series, current: pd.Series) -> tuple[np.ndarray, np.ndarray, pd.Index]:
    """Codes of two columns into their joint labels, in sorted order (sorting codes sorts labels)."""
    prev_codes, prev_labels = _factorize(previous, sort=True)
    cur_codes, cur_labels = _factorize(current, sort=True)
    labels = prev_labels.append(cur_labels[prev_labels.get_indexer(cur_labels) < 0])  # (isin is slow on text)
    with suppress(TypeError):  # labels that cannot be compared keep their order
        labels = labels.sort_values()
    coded = []
    for codes, own in ((prev_codes, prev_labels), (cur_codes, cur_labels)):
        to_joint = np.append(labels.get_indexer(own), -1)  # code -1 (missing) stays -1
        coded.append(to_joint[codes])
    return coded[0], coded[1], labels


def _run_keys(
    previous_long: pd.DataFrame, current_long: pd.DataFrame
) -> tuple[_RunKeys, _RunKeys, tuple[pd.Index, pd.Index, pd.Index]]:
    """Keys of both runs, and the labels of their codes: accounts, models, features."""
    codes = [_shared_codes(previous_long[c], current_long[c]) for c in (ACCOUNT_ID, MODEL, FEATURE)]
    (prev_a, cur_a, accounts), (prev_m, cur_m, models), (prev_f, cur_f, features) = codes
    n_models, n_features = max(len(models), 1), max(len(features), 1)
    runs = []
    for a, m, f in ((prev_a, prev_m, prev_f), (cur_a, cur_m, cur_f)):
        pair = np.where((a < 0) | (m < 0), -1, a * n_models + m)
        triple = np.where((pair < 0) | (f < 0), -1, pair * n_features + f)
        runs.append(_RunKeys(pair=pair, triple=triple, feature=f))
    return runs[0], runs[1], (accounts, models, features)


def _sum_by(values: pd.Series, key: np.ndarray) -> pd.Series:
    """``values.groupby(key, sort=False).sum()`` over the rows whose key is known (>= 0)."""
    known = key >= 0
    numbers = pd.Series(values.to_numpy(dtype=np.float64, na_value=np.nan)[known])
    index = pd.Index(key[known])
    if index.is_unique:  # one row per key, as in a long table: the sum is the row (0 if missing)
        return pd.Series(np.where(np.isnan(numbers), 0.0, numbers + 0.0), index=index)
    return numbers.groupby(index, sort=False).sum()


def _first_by(values: pd.Series, key: np.ndarray) -> pd.Series:
    """``values.groupby(key, sort=False).first()`` (first non-missing) over the rows whose key is known."""
    known = key >= 0
    return values[known].reset_index(drop=True).groupby(key[known], sort=False).first()


def _last_group(long: pd.DataFrame, feature: np.ndarray, n_features: int) -> dict[int, Any]:
    """Feature code -> group as given by the feature's last row."""
    last = np.full(n_features, -1, dtype=np.int64)
    known = np.flatnonzero(feature >= 0)
    np.maximum.at(last, feature[known], known)
    present = np.flatnonzero(last >= 0)
    return dict(zip(present.tolist(), list(long[GROUP].array.take(last[present])), strict=True))


def _versions(
    long: pd.DataFrame,
    pair: np.ndarray,
    given: str | Mapping[str, str] | None,
    common: pd.Index,
    models: pd.Index,
) -> pd.Series:
    """Model version per account-model of ``common``: a column of the long table, else what was passed."""
    from pes_ml.schemas import MODEL_VERSION

    if MODEL_VERSION in long.columns:
        return _first_by(long[MODEL_VERSION], pair).astype("str").reindex(common).reset_index(drop=True)
    if isinstance(given, Mapping):
        values = [given.get(m) for m in models.take(common.to_numpy() % max(len(models), 1)).tolist()]
    else:
        values = [given] * len(common)
    return pd.Series(values, dtype="str")


def _named_movers(
    pair: np.ndarray, feature: np.ndarray, aligned: np.ndarray, delta: np.ndarray, labels: list[str], top: int
) -> dict[int, str]:
    """Per account-model (pair code), its ``top`` features that moved the score its way, strongest first.

    As text: "active users in the last 30 days (−4), core events used (−2)".
    """
    movers = np.flatnonzero(aligned > 0)
    movers = movers[_first_k(pair[movers], -aligned[movers], np.zeros(len(movers), dtype=np.int64), top)[0]]
    texts = [
        f"{labels[f]} ({_signed_points(d)})"
        for f, d in zip(feature[movers].tolist(), delta[movers].tolist(), strict=True)
    ]
    ends = np.r_[np.flatnonzero(np.diff(pair[movers])) + 1, len(movers)].tolist() if len(movers) else []
    named, begin = {}, 0
    for end in ends:
        named[int(pair[movers[begin]])] = ", ".join(texts[begin:end])
        begin = end
    return named


def _change_sentence(
    name: str, delta: float, since: str, named: str | None, changed: bool, before: str, after: str
) -> str:
    if round(abs(delta)) == 0:
        sentence = f"{name} held steady since {since} ({_signed_points(delta)} points)"
    else:
        verb = "rose" if delta > 0 else "fell"
        points = round(abs(delta))
        sentence = f"{name} {verb} {points} point{'s' if points != 1 else ''} since {since}"
        if named is not None:
            sentence += ": " + named
    if changed:
        sentence += f" (model changed from version {before} to {after})"
    return sentence


def attribute_change(
    previous_long: pd.DataFrame,
    current_long: pd.DataFrame,
    specs: Mapping[str, FeatureSpec],
    *,
    previous_model_version: str | Mapping[str, str] | None = None,
    current_model_version: str | Mapping[str, str] | None = None,
    top: int = 3,
) -> ChangeAttribution:
    """Attribute each account's score change between two runs to features and groups.

    The delta of a feature is the difference of its PES points (SHAP values in
    points) between the runs; a feature present in only one run counts as 0 in the
    other. Because each run's points add up to its score minus 50, the deltas add up
    exactly to the change of the score before clipping — also when the model changed,
    in which case the change mixes the account's new data and the new model, and
    ``model_version_changed`` says so.

    Parameters
    ----------
    previous_long, current_long
        Long tables of :func:`long_format` of the two runs (one or both models).
    specs
        The feature catalog, for the sentence (features it lacks are named as is).
    previous_model_version, current_model_version
        Model versions of the runs (one string, or per model), used when the long
        tables have no ``model_version`` column.
    top
        Features named in the sentence.

    Returns
    -------
    ChangeAttribution
        Per-account deltas and sentences, per-feature and per-group deltas. Accounts
        scored in only one of the runs are left out (and counted in the log).
    """
    # Rows are grouped and aligned by integer codes of (account_id, model, feature), and the
    # labels put back at the end. The sums are pandas' groupby sums over the same rows in the
    # same order, so the same floats as grouping by the labels.
    prev_keys, cur_keys, (accounts, models, feature_names) = _run_keys(previous_long, current_long)
    n_models, n_features = max(len(models), 1), max(len(feature_names), 1)
    prev = _sum_by(previous_long[PES_POINTS], prev_keys.triple)
    cur = _sum_by(current_long[PES_POINTS], cur_keys.triple)
    prev_total = prev.groupby(prev.index.to_numpy() // n_features, sort=False).sum()
    cur_total = cur.groupby(cur.index.to_numpy() // n_features, sort=False).sum()
    common = cur_total.index[cur_total.index.isin(prev_total.index)]  # in the current run's order
    dropped = len(prev_total) - len(common)
    new = len(cur_total) - len(common)
    if dropped or new:
        logger.info(
            "change attribution: %d account-models in both runs; %d only in the previous run, "
            "%d only in the current run (no change to attribute)",
            len(common),
            dropped,
            new,
        )

    # The previous run's features, then those only in the current run; a missing side counts 0.
    triples = prev.index.append(cur.index[~cur.index.isin(prev.index)])
    in_both = np.zeros(len(accounts) * n_models, dtype=bool)
    in_both[common.to_numpy()] = True
    triples = triples[in_both[triples.to_numpy() // n_features]]
    delta = cur.reindex(triples).fillna(0.0).to_numpy() - prev.reindex(triples).fillna(0.0).to_numpy()
    pair, feature = np.divmod(triples.to_numpy(), n_features)
    group_of = _last_group(previous_long, prev_keys.feature, n_features)
    group_of |= _last_group(current_long, cur_keys.feature, n_features)
    group_labels = pd.array([group_of[code] for code in range(len(feature_names))], dtype="str")
    features = pd.DataFrame(
        {
            ACCOUNT_ID: accounts.take(pair // n_models).array,
            MODEL: models.take(pair % n_models).array,
            FEATURE: feature_names.take(feature).array,
            GROUP: group_labels.take(feature),
            DELTA_POINTS: delta,
        }
    )
    group_codes, group_names = pd.factorize(pd.Index(group_labels))
    n_groups = max(len(group_names), 1)
    row_group = group_codes[feature]
    summed = _sum_by(features[DELTA_POINTS], np.where(row_group < 0, -1, pair * n_groups + row_group))
    group_pair, group = np.divmod(summed.index.to_numpy(), n_groups)
    groups = pd.DataFrame(
        {
            ACCOUNT_ID: accounts.take(group_pair // n_models).array,
            MODEL: models.take(group_pair % n_models).array,
            GROUP: group_names.take(group).array,
            DELTA_POINTS: summed.to_numpy(),
        }
    )

    pes_previous = PES_CENTER + prev_total.reindex(common).to_numpy()
    pes_current = PES_CENTER + cur_total.reindex(common).to_numpy()
    pes_delta = pes_current - pes_previous
    prev_as_of = _first_by(previous_long[AS_OF], prev_keys.pair).reindex(common).reset_index(drop=True)
    cur_as_of = _first_by(current_long[AS_OF], cur_keys.pair).reindex(common).reset_index(drop=True)
    prev_version = _versions(previous_long, prev_keys.pair, previous_model_version, common, models)
    cur_version = _versions(current_long, cur_keys.pair, current_model_version, common, models)
    known = prev_version.notna() & cur_version.notna()
    changed = pd.array(np.where(known, prev_version != cur_version, False), dtype="boolean")
    changed[~known.to_numpy()] = pd.NA
    account_models = models.take(common.to_numpy() % n_models)

    # The features named in the sentence moved the score the same way the score moved.
    aligned = delta * np.sign(pes_delta[common.get_indexer(pair)])
    labels = [_short_description(specs.get(name), name) for name in feature_names.tolist()]
    named = _named_movers(pair, feature, aligned, delta, labels, top)
    since_codes, since_values = pd.factorize(prev_as_of, use_na_sentinel=False)
    since = [pd.Timestamp(value).date().isoformat() for value in since_values]
    sentences = [
        _change_sentence(_SCORE_NAME.get(model, "Score"), d, since[s], named.get(p), flag, before, after)
        for model, d, s, p, flag, before, after in zip(
            account_models.tolist(),
            pes_delta.tolist(),
            since_codes.tolist(),
            common.tolist(),
            changed.fillna(False).to_numpy(dtype=bool).tolist(),
            prev_version.tolist(),
            cur_version.tolist(),
            strict=True,
        )
    ]
    summary = pd.DataFrame(
        {
            ACCOUNT_ID: accounts.take(common.to_numpy() // n_models).array,
            MODEL: account_models.array,
            "previous_as_of": prev_as_of.array,
            AS_OF: cur_as_of.array,
            "pes_previous": pes_previous,
            "pes_current": pes_current,
            PES_DELTA: pes_delta,
            "previous_model_version": prev_version.array,
            "model_version": cur_version.array,
            "model_version_changed": changed,
            SENTENCE: _str_series(pa.array(sentences, type=_TEXT)).array,
        }
    )
    return ChangeAttribution(accounts=summary, features=features, groups=groups)
