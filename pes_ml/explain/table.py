"""The long table the run store saves (one row per account, model and feature), with values as text."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pes_ml.errors import ExplanationError
from pes_ml.explain.contributions import (
    FEATURE,
    FEATURE_VALUE,
    GROUP,
    HIGHER_RAW_IS_BETTER,
    MODEL,
    PES_POINTS,
    SHAP_LOG_ODDS,
    Model,
    ShapResult,
    _check_specs,
    to_pes_points,
)
from pes_ml.schemas import ACCOUNT_ID, AS_OF

if TYPE_CHECKING:

    from pes_ml.features.catalog import FeatureSpec

logger = logging.getLogger(__name__)

_TEXT: Final = pa.large_string()
"""Arrow type of pandas 3's ``str`` columns."""
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
