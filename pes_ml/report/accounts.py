"""Account records for the account viewer: trend, components, reasons, key figures, change.

For speed at 100k accounts the long SHAP table of each model is turned into dense
accounts x features matrices once (:class:`ShapMatrix`); component sums are a matrix
product with the feature -> group indicator, the top reasons and key features an
``argsort`` per row, and the healthy medians a ``nanmedian`` per segment. Only the
chosen k reasons per account become sentences (with :func:`pes_ml.explain.reason_sentence`,
so the wording is the scoring job's). Ties between equally strong features are broken
by feature name, as :func:`pes_ml.explain.top_reasons` does.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pes_ml import schemas as S
from pes_ml.explain import attribute_change, format_value, reason_sentence
from pes_ml.features.catalog import FeatureSpec
from pes_ml.report.data import (
    HEALTHY_TIERS,
    KEY_FEATURES,
    PES_DELTA,
    WHAT_CHANGED,
    ReportData,
    brief,
    finite,
    model_rows,
    text_or_none,
)
from pes_ml.run_contract import FEATURE, GROUP, PES_POINTS, SHAP_LOG_ODDS

logger = logging.getLogger(__name__)

REASONS_PER_MODEL = 3


@dataclass(frozen=True)
class ShapMatrix:
    """One model's SHAP table as dense matrices; features sorted by name.

    Attributes
    ----------
    accounts
        Account ids, one per row.
    features
        Feature names, one per column, sorted.
    groups
        Group of each feature.
    points, shap
        PES points and log-odds (0 where the account lacks the feature).
    texts
        Feature values as text (None where missing).
    """

    accounts: pd.Index
    features: list[str]
    groups: list[str]
    points: np.ndarray
    shap: np.ndarray
    texts: np.ndarray

    @classmethod
    def from_long(cls, rows: pd.DataFrame) -> ShapMatrix:
        """Pivot the long table of one model (one row per account and feature)."""
        account_codes, accounts = pd.factorize(rows[S.ACCOUNT_ID], sort=False)
        feature_codes, features = pd.factorize(rows[FEATURE], sort=True)
        shape = (len(accounts), len(features))
        points = np.zeros(shape)
        shap = np.zeros(shape)
        values = np.full(shape, None, dtype=object)
        points[account_codes, feature_codes] = rows[PES_POINTS].to_numpy(dtype=float)
        shap[account_codes, feature_codes] = rows[SHAP_LOG_ODDS].to_numpy(dtype=float)
        values[account_codes, feature_codes] = rows[S.VALUE].to_numpy(dtype=object, na_value=None)
        group_of = dict(zip(rows[FEATURE].tolist(), rows[GROUP].tolist(), strict=True))
        names = [str(f) for f in features]
        return cls(
            pd.Index(accounts.astype(str)), names, [str(group_of[f]) for f in names], points, shap, values
        )

    def group_sums(self, group_names: list[str]) -> np.ndarray:
        """accounts x groups: the points of each group's features summed."""
        indicator = np.zeros((len(self.features), len(group_names)))
        position = {g: i for i, g in enumerate(group_names)}
        for j, group in enumerate(self.groups):
            indicator[j, position[group]] = 1.0
        return np.asarray(self.points @ indicator)

    def strongest(self, k: int) -> np.ndarray:
        """accounts x k column indices, largest |points| first, ties by feature name."""
        order = np.argsort(-np.abs(self.points), axis=1, kind="stable")
        return np.asarray(order[:, :k])


def _empty(rows: pd.DataFrame) -> ShapMatrix | None:
    return None if rows.empty else ShapMatrix.from_long(rows)


def _reasons(
    matrix: ShapMatrix | None, model: str, specs: Mapping[str, FeatureSpec]
) -> dict[str, list[list[Any]]]:
    """account -> [[sentence, points], ...] of its top reasons; a zero contribution is never a reason."""
    if matrix is None:
        return {}
    top = matrix.strongest(REASONS_PER_MODEL)
    out: dict[str, list[list[Any]]] = {}
    for i, account in enumerate(matrix.accounts.tolist()):
        items = []
        for j in top[i].tolist():
            shap = float(matrix.shap[i, j])
            if shap == 0.0:
                continue
            feature = matrix.features[j]
            sentence = reason_sentence(specs[feature], matrix.texts[i, j], shap, model)  # type: ignore[arg-type]
            items.append([sentence, round(float(matrix.points[i, j]), 1)])
        out[account] = items
    return out


def _healthy_medians(matrix: ShapMatrix, scores: pd.DataFrame) -> tuple[pd.Index, np.ndarray, np.ndarray]:
    """Per segment (and overall): the median of each feature over healthy-tier accounts."""
    by_id = scores.set_index(S.ACCOUNT_ID)
    segment = by_id[S.SEGMENT].reindex(matrix.accounts).astype("str").fillna("")
    healthy = by_id[S.TIER].reindex(matrix.accounts).isin(HEALTHY_TIERS).to_numpy()
    numbers = pd.to_numeric(pd.Series(matrix.texts.ravel()), errors="coerce").to_numpy(dtype=float)
    numbers = numbers.reshape(matrix.texts.shape)
    segments = pd.Index(sorted(set(segment.tolist())))
    medians = np.full((len(segments), len(matrix.features)), np.nan)
    segment_codes = segments.get_indexer(segment.to_numpy())
    for s in range(len(segments)):
        rows = numbers[healthy & (segment_codes == s)]
        if len(rows):
            medians[s] = _nanmedian(rows)
    overall = _nanmedian(numbers[healthy]) if healthy.any() else np.full(len(matrix.features), np.nan)
    return segments, medians, overall


def _nanmedian(rows: np.ndarray) -> np.ndarray:
    """Column medians ignoring NaN; NaN for an all-NaN column (without numpy's warning)."""
    result = np.full(rows.shape[1], np.nan)
    for j in range(rows.shape[1]):
        column = rows[:, j]
        column = column[~np.isnan(column)]
        if len(column):
            result[j] = float(np.median(column))
    return result


def _key_features(
    matrix: ShapMatrix | None, scores: pd.DataFrame, specs: Mapping[str, FeatureSpec]
) -> dict[str, list[list[Any]]]:
    """account -> [[feature, value, healthy median of its segment, points], ...], strongest first."""
    if matrix is None:
        return {}
    segments, medians, overall = _healthy_medians(matrix, scores)
    segment_of = scores.set_index(S.ACCOUNT_ID)[S.SEGMENT].reindex(matrix.accounts).astype("str").fillna("")
    codes = segments.get_indexer(segment_of.to_numpy())
    top = matrix.strongest(KEY_FEATURES)
    units = [specs[f].unit for f in matrix.features]
    out: dict[str, list[list[Any]]] = {}
    for i, account in enumerate(matrix.accounts.tolist()):
        items = []
        for j in top[i].tolist():
            median = float(medians[codes[i], j]) if codes[i] >= 0 else math.nan
            if math.isnan(median):
                median = float(overall[j])
            value = matrix.texts[i, j]
            items.append(
                [
                    matrix.features[j],
                    format_value(None if value is None else str(value), units[j]),
                    None if math.isnan(median) else format_value(median, units[j]),
                    round(float(matrix.points[i, j]), 1),
                ]
            )
        out[account] = items
    return out


def _change_sentences(data: ReportData, scores: pd.DataFrame) -> dict[str, str]:
    """Attribution sentences, only for a run whose scores lack ``what_changed`` (slower path)."""
    if WHAT_CHANGED in scores.columns or data.previous_reasons is None:
        return {}
    previous = model_rows(data.previous_reasons, "churn")
    current = model_rows(data.reasons, "churn")
    if previous.empty or current.empty:
        return {}
    accounts = attribute_change(previous, current, data.specs).accounts
    return dict(zip(accounts[S.ACCOUNT_ID].tolist(), accounts["sentence"].tolist(), strict=True))


def _rounded_rows(matrix: np.ndarray, positions: np.ndarray) -> list[list[float] | None]:
    """Rows of ``matrix`` at ``positions`` rounded to 0.1; None where the position is -1."""
    if len(matrix) == 0:
        return [None] * len(positions)
    rows = np.round(matrix[np.maximum(positions, 0)], 1).tolist()
    return [row if p >= 0 else None for row, p in zip(rows, positions.tolist(), strict=True)]


def group_names(data: ReportData) -> list[str]:
    """The components shown on account pages, in catalog order of first appearance."""
    frames = [data.reasons] + ([data.previous_reasons] if data.previous_reasons is not None else [])
    names: list[str] = []
    for frame in frames:
        for group in model_rows(frame, "churn")[GROUP].unique().tolist():
            if str(group) not in names:
                names.append(str(group))
    return names


def account_records(data: ReportData, scores: pd.DataFrame, groups: list[str]) -> Iterator[dict[str, Any]]:
    """One JSON-ready record per scored account, in the order of ``scores``.

    Keys: id, name, segment, plan, tier, pes, delta, churn, expansion, xscore, arr,
    arr_at_risk, exp_arr; trend (PES per run date, None when not scored); groups (PES
    points per component, aligned with ``groups``); reasons and xreasons
    (``[sentence, points]``, PES model and expansion model); features (``[feature,
    value, healthy median of the segment, points]``); changed (the change sentence);
    change (change in points per component since the previous run, aligned with
    ``groups``; None when the account was not scored then).
    """
    churn = _empty(model_rows(data.reasons, "churn"))
    expansion = _empty(model_rows(data.reasons, "expansion"))
    ids = scores[S.ACCOUNT_ID].astype("str")
    if churn is not None:
        positions = churn.accounts.get_indexer(ids)
        current_groups = churn.group_sums(groups)
        group_rows = _rounded_rows(current_groups, positions)
    else:
        positions = np.full(len(ids), -1)
        current_groups = np.zeros((0, len(groups)))
        group_rows = [None] * len(ids)
    change_rows: list[list[float] | None] = [None] * len(ids)
    previous = (
        _empty(model_rows(data.previous_reasons, "churn")) if data.previous_reasons is not None else None
    )
    if churn is not None and previous is not None:
        before = previous.group_sums(groups)
        prev_positions = previous.accounts.get_indexer(ids)
        both = (positions >= 0) & (prev_positions >= 0)
        delta = np.zeros((len(ids), len(groups)))
        delta[both] = current_groups[positions[both]] - before[prev_positions[both]]
        change_rows = [
            row if ok else None for row, ok in zip(np.round(delta, 1).tolist(), both.tolist(), strict=True)
        ]
    reasons = _reasons(churn, "churn", data.specs)
    xreasons = _reasons(expansion, "expansion", data.specs)
    features = _key_features(churn, scores, data.specs)
    sentences = _change_sentences(data, scores)
    trend = data.trend.reindex(ids).round(1)
    trend_rows = trend.astype(object).where(trend.notna(), None).to_numpy().tolist()
    logger.debug("Account records: %d accounts, %d components", len(ids), len(groups))
    records = scores.to_dict(orient="records")
    for i, (row, points) in enumerate(zip(records, trend_rows, strict=True)):
        account = str(row[S.ACCOUNT_ID])
        head = brief(row)
        yield {
            **{
                k: head[k]
                for k in ("id", "segment", "tier", "churn", "expansion", "arr", "arr_at_risk", "exp_arr")
            },
            "name": text_or_none(row.get(S.NAME)),
            "plan": text_or_none(row.get(S.PLAN)),
            "pes": finite(row[S.PES], 1),
            "delta": finite(row.get(PES_DELTA), 1),
            "xscore": finite(row.get(S.EXPANSION_SCORE), 1),
            "trend": points,
            "groups": group_rows[i],
            "reasons": reasons.get(account, []),
            "xreasons": xreasons.get(account, []),
            "features": features.get(account, []),
            "changed": text_or_none(row.get(WHAT_CHANGED)) or sentences.get(account),
            "change": change_rows[i],
        }


__all__ = ["ShapMatrix", "account_records", "group_names"]
