"""What the report shows, computed from the run store: portfolio rows, account records, model facts.

Everything here is pure pandas on the frames the run store returns; rendering and
files live in :mod:`pes_ml.report.build`. Each account record is a small dict of
JSON-ready values (strings already formatted by :func:`pes_ml.explain.format_value`),
so the browser only places text.

Where the scores frame lacks a column the scoring job normally writes
(``reason_1..3``, ``pes_delta``, ``what_changed``, ``name``, ``segment``, ``plan``,
``arr``), it is derived from the long SHAP table and the previous run, or shown as
unknown. ARR at risk is ``churn_probability x arr`` and the expected expansion ARR
``expansion_probability x arr`` (``arr`` falls back to ``12 x mrr``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pes_ml import schemas as S
from pes_ml.explain import top_reasons
from pes_ml.features.catalog import CATALOG, FeatureSpec, event_type_specs
from pes_ml.run_contract import FEATURE, MODEL
from pes_ml.store import RunInfo, RunStore

logger = logging.getLogger(__name__)

ARR = "arr"
ARR_AT_RISK = "arr_at_risk"
EXPECTED_EXPANSION_ARR = "expected_expansion_arr"
PES_DELTA = "pes_delta"
WHAT_CHANGED = "what_changed"
TOP_REASON = "reason_1"
REASON_COLUMNS = ("reason_1", "reason_2", "reason_3")
HEALTHY_TIERS = ("healthy", "expand")
TIER_ORDER = ("at_risk", "watch", "healthy", "expand")
TIER_LABELS = {"at_risk": "At risk", "watch": "Watch", "healthy": "Healthy", "expand": "Expand"}
KEY_FEATURES = 6
"""Feature values shown per account next to the healthy median of its segment."""

PORTFOLIO_COLUMNS = (
    "id",
    "name",
    "segment",
    "plan",
    "tier",
    "pes",
    "delta",
    "churn",
    "expansion",
    "arr",
    "arr_at_risk",
    "exp_arr",
    "reason",
)
"""Columns of the portfolio table as embedded in index.html (one array per account)."""


def normalise_tier(tier: object) -> str:
    """``at-risk``/``At risk``/``at_risk`` -> ``at_risk``; unknown tiers keep their text."""
    text = str(tier).strip().lower().replace("-", "_").replace(" ", "_")
    return text if text in TIER_LABELS else str(tier)


def tier_label(tier: str) -> str:
    """The tier as CS reads it."""
    return TIER_LABELS.get(tier, tier)


def finite(value: Any, digits: int) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return round(number, digits) if math.isfinite(number) else None


def text_or_none(value: Any) -> str | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return str(value)


def feature_specs_for(features: pd.Series | list[str], manifest: Mapping[str, Any]) -> dict[str, FeatureSpec]:
    """Catalog specs of every feature in a run; a neutral placeholder for features the catalog lacks."""
    metadata = manifest.get("model_metadata")
    nested = metadata.get("event_types") if isinstance(metadata, Mapping) else None
    event_types = manifest.get("event_types") or nested or []
    specs = {s.name: s for s in (*CATALOG, *event_type_specs([str(e) for e in event_types]))}
    names = features.unique().tolist() if isinstance(features, pd.Series) else sorted(set(features))
    for name in map(str, names):
        if name not in specs:
            specs[name] = FeatureSpec(name, "activity", None, name.replace("_", " "), "neutral", "")
    return specs


@dataclass
class ReportData:
    """The frames of one report: the chosen run, its predecessor and the history of all runs."""

    run: RunInfo
    previous: RunInfo | None
    scores: pd.DataFrame
    reasons: pd.DataFrame
    previous_reasons: pd.DataFrame | None
    manifest: dict[str, Any]
    run_dates: list[str]
    trend: pd.DataFrame
    specs: dict[str, FeatureSpec] = field(default_factory=dict)


def load_report_data(store: RunStore, run: str = "latest") -> ReportData:
    """Read one run, its predecessor's SHAP table and every run's PES for the trend.

    Raises
    ------
    StoreError
        If the run does not exist or a file cannot be read.
    """
    info = store.get_run(run)
    scores = store.read_scores(info.run_id)
    reasons = store.read_reasons(info.run_id)
    manifest = store.read_manifest(info.run_id)
    previous = store.previous_run(info.as_of)
    previous_reasons = store.read_reasons(previous.run_id) if previous is not None else None
    history = store.history()
    history = history[pd.to_datetime(history[S.AS_OF], utc=True).dt.date <= info.as_of]
    history = history.assign(_date=pd.to_datetime(history[S.AS_OF], utc=True).dt.strftime("%Y-%m-%d"))
    trend = history.pivot_table(index=S.ACCOUNT_ID, columns="_date", values=S.PES, aggfunc="first")
    run_dates = [d.isoformat() for d in store.runs()[S.AS_OF] if d <= info.as_of]
    trend = trend.reindex(columns=run_dates)
    specs = feature_specs_for(reasons[FEATURE], manifest)
    logger.info(
        "Report data: run %s (as_of %s), %d accounts, %d SHAP rows, %d runs of history",
        info.run_id,
        info.as_of,
        len(scores),
        len(reasons),
        len(run_dates),
    )
    return ReportData(info, previous, scores, reasons, previous_reasons, manifest, run_dates, trend, specs)


def model_rows(reasons: pd.DataFrame, model: str) -> pd.DataFrame:
    rows = reasons[reasons[MODEL].astype("str") == model]
    return rows if not rows.empty else reasons.iloc[0:0]


def enrich_scores(data: ReportData) -> pd.DataFrame:
    """Scores with the columns the portfolio shows, derived when the scoring job did not write them."""
    scores = data.scores.copy()
    scores[S.TIER] = scores[S.TIER].map(normalise_tier).astype("str")
    for column in (S.NAME, S.SEGMENT, S.PLAN):
        if column not in scores.columns:
            scores[column] = pd.Series(pd.NA, index=scores.index, dtype="str")
    if ARR not in scores.columns:
        scores[ARR] = scores[S.MRR] * 12.0 if S.MRR in scores.columns else np.nan
    scores[ARR_AT_RISK] = scores[S.CHURN_PROBABILITY] * scores[ARR]
    scores[EXPECTED_EXPANSION_ARR] = scores[S.EXPANSION_PROBABILITY] * scores[ARR]
    if PES_DELTA not in scores.columns:
        if data.previous is not None:
            before = data.trend[data.previous.as_of.isoformat()]
            scores[PES_DELTA] = scores[S.PES] - scores[S.ACCOUNT_ID].map(before)
        else:
            scores[PES_DELTA] = np.nan
    if not all(c in scores.columns for c in REASON_COLUMNS):
        churn = model_rows(data.reasons, "churn")
        reasons = top_reasons(churn, data.specs, k=len(REASON_COLUMNS)) if not churn.empty else None
        for rank, column in enumerate(REASON_COLUMNS, start=1):
            if column in scores.columns:
                continue
            if reasons is None:
                scores[column] = pd.Series(pd.NA, index=scores.index, dtype="str")
                continue
            chosen = reasons[reasons["rank"] == rank].set_index(S.ACCOUNT_ID)["sentence"]
            scores[column] = scores[S.ACCOUNT_ID].map(chosen).astype("str")
    return scores


def portfolio_rows(scores: pd.DataFrame) -> list[list[Any]]:
    """One array per account in the order of :data:`PORTFOLIO_COLUMNS`, rounded for a small page."""
    columns = {
        "id": scores[S.ACCOUNT_ID].astype("str"),
        "name": scores[S.NAME],
        "segment": scores[S.SEGMENT],
        "plan": scores[S.PLAN],
        "tier": scores[S.TIER],
        "pes": scores[S.PES].round(1),
        "delta": scores[PES_DELTA].round(1),
        "churn": scores[S.CHURN_PROBABILITY].round(4),
        "expansion": scores[S.EXPANSION_PROBABILITY].round(4),
        "arr": scores[ARR].round(0),
        "arr_at_risk": scores[ARR_AT_RISK].round(0),
        "exp_arr": scores[EXPECTED_EXPANSION_ARR].round(0),
        "reason": scores[TOP_REASON],
    }
    lists = []
    for name in PORTFOLIO_COLUMNS:
        series = columns[name]
        values = series.astype(object).where(series.notna(), None).tolist()
        if pd.api.types.is_float_dtype(series.dtype):
            values = [None if v is None or not math.isfinite(v) else v for v in values]
        lists.append(values)
    return [list(row) for row in zip(*lists, strict=True)]


def _top(scores: pd.DataFrame, column: str, ascending: bool, n: int = 5) -> list[dict[str, Any]]:
    ranked = scores[scores[column].notna()].sort_values(
        [column, S.ACCOUNT_ID], ascending=[ascending, True], kind="stable"
    )
    return [brief(row) for row in ranked.head(n).to_dict(orient="records")]


def brief(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row[S.ACCOUNT_ID]),
        "name": text_or_none(row.get(S.NAME)) or str(row[S.ACCOUNT_ID]),
        "segment": text_or_none(row.get(S.SEGMENT)),
        "tier": str(row[S.TIER]),
        "tier_label": tier_label(str(row[S.TIER])),
        "pes": finite(row[S.PES], 0),
        "delta": finite(row.get(PES_DELTA), 0),
        "churn": finite(row[S.CHURN_PROBABILITY], 4),
        "expansion": finite(row[S.EXPANSION_PROBABILITY], 4),
        "arr": finite(row.get(ARR), 0),
        "arr_at_risk": finite(row.get(ARR_AT_RISK), 0),
        "exp_arr": finite(row.get(EXPECTED_EXPANSION_ARR), 0),
        "reason": text_or_none(row.get(TOP_REASON)),
        "what_changed": text_or_none(row.get(WHAT_CHANGED)),
    }


def summary(scores: pd.DataFrame) -> dict[str, Any]:
    """The top of the portfolio page: tiers, ARR at risk, the five most at risk, the biggest movers."""
    tiers = []
    known = [t for t in TIER_ORDER if t in set(scores[S.TIER])]
    others = sorted(set(scores[S.TIER]) - set(TIER_ORDER))
    for tier in known + others:
        rows = scores[scores[S.TIER] == tier]
        tiers.append(
            {
                "tier": tier,
                "label": tier_label(tier),
                "accounts": len(rows),
                "arr": finite(rows[ARR].sum(min_count=1), 0),
                "arr_at_risk": finite(rows[ARR_AT_RISK].sum(min_count=1), 0),
            }
        )
    has_arr = bool(scores[ARR].notna().any())
    deltas = scores[PES_DELTA]
    return {
        "accounts": len(scores),
        "tiers": tiers,
        "has_arr": has_arr,
        "arr": finite(scores[ARR].sum(min_count=1), 0),
        "arr_at_risk": finite(scores[ARR_AT_RISK].sum(min_count=1), 0),
        "expected_expansion_arr": finite(scores[EXPECTED_EXPANSION_ARR].sum(min_count=1), 0),
        "most_at_risk": _top(scores, S.CHURN_PROBABILITY, ascending=False),
        "most_arr_at_risk": _top(scores, ARR_AT_RISK, ascending=False) if has_arr else [],
        "biggest_drops": _top(scores[deltas < 0], PES_DELTA, ascending=True),
        "biggest_gains": _top(scores[deltas > 0], PES_DELTA, ascending=False),
        "best_expansion": _top(scores, S.EXPANSION_PROBABILITY, ascending=False),
        "segments": sorted({str(s) for s in scores[S.SEGMENT].dropna()}),
    }


__all__ = [
    "PORTFOLIO_COLUMNS",
    "ReportData",
    "brief",
    "enrich_scores",
    "finite",
    "feature_specs_for",
    "model_rows",
    "load_report_data",
    "normalise_tier",
    "portfolio_rows",
    "summary",
    "text_or_none",
    "tier_label",
]
