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


def _value_text(column: pd.Series) -> np.ndarray:
    """Feature values as text: labels for categories, shortest exact repr for numbers."""
    if isinstance(column.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(column.dtype):
        text = column.astype(object)
        return np.array([None if pd.isna(v) else str(v) for v in text], dtype=object)
    numbers = column.to_numpy(dtype=np.float64, na_value=np.nan)
    text = np.array([repr(v) for v in numbers.tolist()], dtype=object)
    integral = np.isfinite(numbers) & (np.abs(numbers) < 1e15)
    integral[integral] = numbers[integral] == np.round(numbers[integral])
    text[integral] = [str(int(v)) for v in numbers[integral].tolist()]
    text[np.isnan(numbers)] = None
    return text


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
    value_text = np.column_stack([_value_text(features[name]) for name in names]) if names else None
    long = pd.DataFrame(
        {
            ACCOUNT_ID: np.repeat(features[ACCOUNT_ID].to_numpy(), n_features),
            AS_OF: np.repeat(features[AS_OF].to_numpy(), n_features),
            MODEL: model,
            FEATURE: np.tile(np.array(names, dtype=object), n_rows),
            GROUP: np.tile(np.array([specs[n].group for n in names], dtype=object), n_rows),
            FEATURE_VALUE: value_text.ravel() if value_text is not None else np.empty(0, dtype=object),
            SHAP_LOG_ODDS: result.contributions.ravel(),
            PES_POINTS: points.ravel(),
        }
    )
    long[AS_OF] = long[AS_OF].astype(features[AS_OF].dtype)
    for column in (ACCOUNT_ID, MODEL, FEATURE, GROUP, FEATURE_VALUE):
        long[column] = long[column].astype("str")  # pandas 3 text; a missing value stays missing
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
        Reasons per account and model. Features with a zero contribution are never reasons.
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
    _check_specs(long[FEATURE].unique().tolist(), specs)
    keys = [ACCOUNT_ID, AS_OF, MODEL]
    candidates = long[long[SHAP_LOG_ODDS].to_numpy() != 0]
    group_id = candidates.groupby(keys, sort=False, observed=True).ngroup().to_numpy()
    feature_code = pd.factorize(candidates[FEATURE], sort=True)[0]
    order = np.lexsort((feature_code, -np.abs(candidates[PES_POINTS].to_numpy()), group_id))
    sorted_groups = group_id[order]
    first = np.r_[0, np.flatnonzero(np.diff(sorted_groups)) + 1]
    rank = np.arange(len(order)) - np.repeat(first, np.diff(np.r_[first, len(order)]))
    chosen = candidates.iloc[order[rank < k]].copy()
    chosen.insert(3, REASON_RANK, rank[rank < k] + 1)

    previous: list[str | None] = [None] * len(chosen)
    if companions:
        wanted = chosen[FEATURE].map(companions)
        lookup = long[long[FEATURE].isin(set(companions.values()))].set_index([*keys, FEATURE])[FEATURE_VALUE]
        index = pd.MultiIndex.from_arrays([chosen[c] for c in keys] + [wanted])
        previous = lookup.reindex(index).tolist()
    sentences = []
    for row, prev in zip(chosen.itertuples(index=False), previous, strict=True):
        feature = getattr(row, FEATURE)
        companion = companions.get(feature) if companions else None
        companion_spec = specs.get(companion) if companion is not None else None
        sentences.append(
            reason_sentence(
                specs[feature],
                getattr(row, FEATURE_VALUE),
                getattr(row, SHAP_LOG_ODDS),
                getattr(row, MODEL),
                previous_value=None if prev is None or pd.isna(prev) else prev,
                previous_window_days=companion_spec.window_days if companion_spec else None,
            )
        )
    chosen[SENTENCE] = pd.array(sentences, dtype="str")
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


def _versions(long: pd.DataFrame, given: str | Mapping[str, str] | None) -> pd.Series:
    """Model version per (account_id, model): a column of the long table, else what was passed."""
    from pes_ml.schemas import MODEL_VERSION

    keys = [ACCOUNT_ID, MODEL]
    if MODEL_VERSION in long.columns:
        return long.groupby(keys, sort=False)[MODEL_VERSION].first().astype("str")
    index = long[keys].drop_duplicates().set_index(keys).index
    if isinstance(given, Mapping):
        values = [given.get(m) for m in index.get_level_values(MODEL)]
    else:
        values = [given] * len(index)
    return pd.Series(values, index=index, dtype="str")


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
    keys = [ACCOUNT_ID, MODEL]
    group_of = dict(
        zip(
            pd.concat([previous_long[FEATURE], current_long[FEATURE]]),
            pd.concat([previous_long[GROUP], current_long[GROUP]]),
            strict=True,
        )
    )
    prev = previous_long.groupby([*keys, FEATURE], sort=False)[PES_POINTS].sum()
    cur = current_long.groupby([*keys, FEATURE], sort=False)[PES_POINTS].sum()
    prev_total = prev.groupby(level=keys, sort=False).sum()
    cur_total = cur.groupby(level=keys, sort=False).sum()
    common = cur_total.index.intersection(prev_total.index)
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

    joined = pd.concat({"previous": prev, "current": cur}, axis=1).fillna(0.0)
    in_both = joined.index.droplevel(FEATURE).isin(common)
    features = joined[in_both]
    features = pd.DataFrame(
        {DELTA_POINTS: features["current"] - features["previous"]}, index=features.index
    ).reset_index()
    features.insert(3, GROUP, features[FEATURE].map(group_of).astype("str"))
    groups = features.groupby([*keys, GROUP], sort=False)[DELTA_POINTS].sum().reset_index()

    pes_previous = PES_CENTER + prev_total.reindex(common)
    pes_current = PES_CENTER + cur_total.reindex(common)
    prev_as_of = previous_long.groupby(keys, sort=False)[AS_OF].first().reindex(common)
    cur_as_of = current_long.groupby(keys, sort=False)[AS_OF].first().reindex(common)
    prev_version = _versions(previous_long, previous_model_version).reindex(common)
    cur_version = _versions(current_long, current_model_version).reindex(common)
    known = prev_version.notna() & cur_version.notna()
    changed = pd.array(np.where(known, prev_version != cur_version, False), dtype="boolean")
    changed[~known.to_numpy()] = pd.NA
    accounts = pd.DataFrame(
        {
            "previous_as_of": prev_as_of,
            AS_OF: cur_as_of,
            "pes_previous": pes_previous,
            "pes_current": pes_current,
            PES_DELTA: pes_current - pes_previous,
            "previous_model_version": prev_version,
            "model_version": cur_version,
            "model_version_changed": changed,
        },
        index=common,
    )

    # The features named in the sentence moved the score the same way the score moved.
    aligned = features[DELTA_POINTS].to_numpy() * np.sign(
        accounts[PES_DELTA].reindex(pd.MultiIndex.from_frame(features[keys])).to_numpy()
    )
    movers = features[aligned > 0].assign(_size=-aligned[aligned > 0])
    movers = movers.sort_values([*keys, "_size"], kind="stable").groupby(keys, sort=False).head(top)
    named: dict[tuple[str, str], list[str]] = {}
    for row in movers.itertuples(index=False):
        key = (getattr(row, ACCOUNT_ID), getattr(row, MODEL))
        feature = getattr(row, FEATURE)
        label = _short_description(specs.get(feature), feature)
        named.setdefault(key, []).append(f"{label} ({_signed_points(getattr(row, DELTA_POINTS))})")
    sentences = []
    for key, row in zip(accounts.index, accounts.itertuples(index=False), strict=True):
        since = pd.Timestamp(row.previous_as_of).date().isoformat()
        name = _SCORE_NAME.get(key[1], "Score")
        delta = float(row.pes_delta)
        if round(abs(delta)) == 0:
            sentence = f"{name} held steady since {since} ({_signed_points(delta)} points)"
        else:
            verb = "rose" if delta > 0 else "fell"
            points = round(abs(delta))
            sentence = f"{name} {verb} {points} point{'s' if points != 1 else ''} since {since}"
            if key in named:
                sentence += ": " + ", ".join(named[key])
        if not pd.isna(row.model_version_changed) and bool(row.model_version_changed):
            sentence += f" (model changed from version {row.previous_model_version} to {row.model_version})"
        sentences.append(sentence)
    accounts[SENTENCE] = pd.array(sentences, dtype="str")
    return ChangeAttribution(accounts=accounts.reset_index(), features=features, groups=groups)
