"""Change attribution: why an account's PES moved since the previous run, by feature and group."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa

from pes_ml.explain.contributions import FEATURE, GROUP, MODEL, PES_CENTER, PES_POINTS
from pes_ml.explain.reasons import SENTENCE, _first_k
from pes_ml.explain.table import _TEXT, _factorize, _str_series
from pes_ml.schemas import ACCOUNT_ID, AS_OF

if TYPE_CHECKING:

    from pes_ml.features.catalog import FeatureSpec

logger = logging.getLogger(__name__)

DELTA_POINTS: Final = "delta_points"
PES_DELTA: Final = "pes_delta"
_SCORE_NAME: Final[dict[str, str]] = {"churn": "PES", "expansion": "Expansion score"}
_MINUS: Final = "\u2212"

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
