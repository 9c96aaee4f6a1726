"""Top reasons per account: sentences built from the catalog metadata, direction matching the sign."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final

import numpy as np
import pandas as pd
import pyarrow as pa

from pes_ml.errors import ExplanationError
from pes_ml.explain.contributions import (
    FEATURE,
    FEATURE_VALUE,
    MODEL,
    PES_POINTS,
    SHAP_LOG_ODDS,
    Model,
    _check_specs,
)
from pes_ml.explain.table import _TEXT, _factorize, _str_series
from pes_ml.schemas import ACCOUNT_ID, AS_OF

if TYPE_CHECKING:

    from pes_ml.features.catalog import FeatureSpec

logger = logging.getLogger(__name__)

_PREFILTER_MAX_K: Final = 8
"""Up to this many rows per group, top-k selection sorts only the rows that can make it."""

REASON_RANK: Final = "rank"
SENTENCE: Final = "sentence"
_OUTCOME: Final[dict[str, str]] = {"churn": "churn risk", "expansion": "expansion likelihood"}


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
