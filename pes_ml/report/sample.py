"""A seeded sample run store: scores, exact-style SHAP tables and manifests without training a model.

The report needs committed runs to draw. Tests, the report benchmark (100k
accounts) and demos of the report use this generator instead of the full
pipeline, which would take far longer at that size. The numbers are internally
consistent the way real runs are: each account's PES points add up to
``pes - 50`` before clipping, probabilities follow the PES scale (every 10 points
halves the odds of churning), the change since the previous run is attributed
with :func:`pes_ml.explain.attribute_change`, and reason sentences come from
:func:`pes_ml.explain.reason_sentence` and the feature catalog.

``hostile=True`` gives a few accounts, event types, plans and segments names built
to break HTML — ``<script>`` tags, quotes, ``</td>``, ``<!--`` — so the escaping
tests can assert that the report shows them literally and runs none of them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pes_ml import schemas as S
from pes_ml.explain import attribute_change, reason_sentence
from pes_ml.features.catalog import CATALOG, CATALOG_VERSION, FeatureSpec, event_type_specs
from pes_ml.run_contract import FEATURE, GROUP, MODEL, PES_POINTS, SHAP_LOG_ODDS
from pes_ml.store import RunStore

logger = logging.getLogger(__name__)

HOSTILE_ACCOUNT_NAME = 'Acme <script>alert(1)</script> "quoted" </td> & <!-- co'
HOSTILE_EVENT_NAME = "<img src=x onerror=alert(2)></td>"
HOSTILE_SEGMENT = 'Mid "market" </option><script>alert(3)</script>'
HOSTILE_PLAN = "<b>pro</b>'s"

_SAMPLE_FEATURES: tuple[str, ...] = (
    "active_users_30d",
    "events_30d",
    "events_trend_30d",
    "active_users_trend_30d",
    "seat_utilization_30d",
    "seats",
    "dau_mau_30d",
    "wau_mau_30d",
    "active_days_30d",
    "power_user_share_7d",
    "core_events_per_active_user_30d",
    "core_events_ever_share",
    "event_types_30d",
    "new_users_30d",
    "dropped_users_30d",
    "growth_ratio_30d",
    "days_since_last_event",
    "days_since_last_core_event",
    "tenure_days",
    "plan",
    "mrr",
    "days_to_renewal",
    "discount",
)
_SEGMENTS = ("SMB", "Mid-market", "Enterprise")
_PLANS = ("starter", "growth", "enterprise")
_EVENT_TYPES = ("report_export", "dashboard_share")
_BASE_CHURN = 0.12
_BASE_EXPANSION = 0.08
_LN2_OVER_10 = math.log(2.0) / 10.0
_SYLLABLES = ("ac", "me", "lo", "ri", "ta", "no", "vu", "ka", "zen", "bo", "li", "ter", "qua", "mi", "so")
_SUFFIXES = ("Inc", "GmbH", "Ltd", "Labs", "Systems", "Group", "Co", "AG", "SAS", "Partners")


@dataclass(frozen=True)
class SampleRun:
    """One run of the sample: what :meth:`RunStore.write_run` takes."""

    as_of: str
    scores: pd.DataFrame
    reasons: pd.DataFrame
    manifest: dict[str, Any]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _names(rng: np.random.Generator, n: int) -> np.ndarray:
    first = rng.integers(0, len(_SYLLABLES), size=(n, 3))
    words = ["".join(_SYLLABLES[i] for i in row).capitalize() for row in first]
    suffix = rng.integers(0, len(_SUFFIXES), size=n)
    return np.array([f"{w} {_SUFFIXES[s]}" for w, s in zip(words, suffix, strict=True)], dtype=object)


def _value_texts(spec: FeatureSpec, z: np.ndarray, rng: np.random.Generator, plans: np.ndarray) -> np.ndarray:
    """Feature values that move with the account's contribution ``z`` (standardised)."""
    sign = -1.0 if spec.direction == "riskier" else 1.0
    signal = sign * z + 0.3 * rng.standard_normal(len(z))
    if spec.unit == "category":
        return plans.astype(object)
    if spec.unit == "share":
        values = _sigmoid(signal)
        return np.array([f"{v:.3f}" for v in values], dtype=object)
    if spec.unit == "ratio":
        values = np.exp(0.4 * signal)
        return np.array([f"{v:.3f}" for v in values], dtype=object)
    if spec.unit in ("days", "count"):
        scale = 30.0 if spec.unit == "days" else 20.0
        values = np.maximum(0, np.round(scale * np.exp(0.6 * signal)))
        return np.array([str(int(v)) for v in values], dtype=object)
    values = 500.0 * np.exp(0.5 * signal)
    return np.array([f"{v:.2f}" for v in values], dtype=object)


def iter_sample_runs(
    n_accounts: int = 50,
    as_of_dates: Sequence[str] = ("2024-04-01", "2024-05-01", "2024-06-01"),
    seed: int = 7,
    *,
    hostile: bool = False,
) -> Iterator[SampleRun]:
    """Generate consistent scoring runs for ``n_accounts`` accounts at each as_of, one at a time.

    Parameters
    ----------
    n_accounts
        Accounts per run (a few leave or join between runs, like a real portfolio).
    as_of_dates
        The runs' as_of dates, oldest first.
    seed
        Seed for ``numpy.random.default_rng``: the same seed gives the same runs.
    hostile
        Give a few accounts, plans, segments and event types names built to break HTML.

    Yields
    ------
    SampleRun
        One per as_of, oldest first (one at a time, so 100k accounts fit in memory).
    """
    rng = np.random.default_rng(seed)
    event_types = list(_EVENT_TYPES) + ([HOSTILE_EVENT_NAME] if hostile else [])
    specs = {s.name: s for s in (*CATALOG, *event_type_specs(event_types))}
    features = [specs[name] for name in _SAMPLE_FEATURES] + list(event_type_specs(event_types))
    n_features = len(features)
    ids = np.array([f"acc-{i:06d}" for i in range(n_accounts)], dtype=object)
    names = _names(rng, n_accounts)
    segments = np.array(_SEGMENTS, dtype=object)[rng.integers(0, len(_SEGMENTS), n_accounts)]
    plans = np.array(_PLANS, dtype=object)[rng.integers(0, len(_PLANS), n_accounts)]
    if hostile and n_accounts >= 4:
        names[0] = HOSTILE_ACCOUNT_NAME
        names[1] = 'O\'Brien & "Sons" <Ltd>'
        segments[2] = HOSTILE_SEGMENT
        plans[3] = HOSTILE_PLAN
    arr = np.round(np.exp(rng.normal(10.0, 1.0, n_accounts)), -1)
    health = rng.normal(0.0, 1.0, n_accounts)
    loadings = rng.uniform(0.4, 1.6, n_features) * rng.choice([1.0, 1.0, 1.0, -0.3], n_features)
    exp_loadings = rng.uniform(0.2, 1.2, n_features)
    previous_long: pd.DataFrame | None = None
    previous_pes: pd.Series | None = None
    for run_index, as_of in enumerate(as_of_dates):
        if run_index:
            health = health + rng.normal(0.0, 0.35, n_accounts)
        # a few accounts are not in every run: the first run misses the last 2%
        present = np.ones(n_accounts, dtype=bool)
        if run_index == 0 and len(as_of_dates) > 1:
            present[n_accounts - max(1, n_accounts // 50) :] = False
        idx = np.flatnonzero(present)
        n = len(idx)
        noise = rng.normal(0.0, 1.0, (n, n_features))
        points = 0.5 * (health[idx, None] + 0.6) * loadings[None, :] + 0.9 * noise
        exp_points = (
            0.5 * health[idx, None] * exp_loadings[None, :] + rng.normal(0, 1, (n, n_features))
        ) * 1.3
        raw_pes = 50.0 + points.sum(axis=1)
        raw_exp = 50.0 + exp_points.sum(axis=1) - 25.0
        churn_p = _sigmoid(_logit(_BASE_CHURN) - (raw_pes - 50.0) * _LN2_OVER_10)
        exp_p = _sigmoid(_logit(_BASE_EXPANSION) + (raw_exp - 50.0) * _LN2_OVER_10)
        tier = np.where(exp_p >= 0.3, "expand", "healthy").astype(object)
        tier[churn_p >= 0.15] = "watch"
        tier[churn_p >= 0.3] = "at_risk"
        ts = pd.Timestamp(as_of, tz="UTC")
        values = np.empty((n, n_features), dtype=object)
        z = points / points.std(axis=0, keepdims=True)
        for j, spec in enumerate(features):
            values[:, j] = _value_texts(spec, z[:, j], rng, plans[idx])
        long_parts = []
        for model, pts, sign in (("churn", points, -1.0), ("expansion", exp_points, 1.0)):
            long_parts.append(
                pd.DataFrame(
                    {
                        S.ACCOUNT_ID: np.repeat(ids[idx], n_features),
                        S.AS_OF: ts,
                        MODEL: model,
                        FEATURE: np.tile(np.array([f.name for f in features], dtype=object), n),
                        GROUP: np.tile(np.array([f.group for f in features], dtype=object), n),
                        S.VALUE: values.ravel(),
                        SHAP_LOG_ODDS: (sign * pts * _LN2_OVER_10).ravel(),
                        PES_POINTS: pts.ravel(),
                    }
                )
            )
        long = pd.concat(long_parts, ignore_index=True)
        for column in (S.ACCOUNT_ID, MODEL, FEATURE, GROUP, S.VALUE):
            long[column] = long[column].astype("str")
        scores = pd.DataFrame(
            {
                S.ACCOUNT_ID: ids[idx],
                S.AS_OF: ts,
                S.CHURN_PROBABILITY: churn_p,
                S.EXPANSION_PROBABILITY: exp_p,
                S.PES: np.clip(raw_pes, 0.0, 100.0),
                S.EXPANSION_SCORE: np.clip(raw_exp, 0.0, 100.0),
                S.TIER: tier,
                S.MODEL_NAME: "pes",
                S.MODEL_VERSION: "3" if run_index < len(as_of_dates) - 1 else "4",
                S.NAME: names[idx],
                S.SEGMENT: segments[idx],
                S.PLAN: plans[idx],
                "arr": arr[idx],
            }
        )
        top = np.argsort(-np.abs(points), axis=1)[:, :3]
        for rank in range(3):
            cols = top[:, rank]
            scores[f"reason_{rank + 1}"] = [
                reason_sentence(features[c], values[i, c], -points[i, c], "churn") for i, c in enumerate(cols)
            ]
        if previous_long is not None and previous_pes is not None:
            change = attribute_change(previous_long, long[long[MODEL] == "churn"], specs)
            sentences = change.accounts.set_index(S.ACCOUNT_ID)["sentence"]
            scores["pes_delta"] = scores[S.PES] - scores[S.ACCOUNT_ID].map(previous_pes)
            scores["what_changed"] = scores[S.ACCOUNT_ID].map(sentences).astype("str")
        for column in (S.ACCOUNT_ID, S.TIER, S.NAME, S.SEGMENT, S.PLAN):
            scores[column] = scores[column].astype("str")
        previous_long = long[long[MODEL] == "churn"]
        previous_pes = scores.set_index(S.ACCOUNT_ID)[S.PES]
        yield SampleRun(as_of, scores, long, _manifest(as_of, event_types, hostile, rng))


def sample_runs(
    n_accounts: int = 50,
    as_of_dates: Sequence[str] = ("2024-04-01", "2024-05-01", "2024-06-01"),
    seed: int = 7,
    *,
    hostile: bool = False,
) -> list[SampleRun]:
    """All runs of :func:`iter_sample_runs` as a list (small portfolios)."""
    return list(iter_sample_runs(n_accounts, as_of_dates, seed, hostile=hostile))


def _manifest(as_of: str, event_types: list[str], hostile: bool, rng: np.random.Generator) -> dict[str, Any]:
    """A manifest shaped like the scoring job's: versions, window, metrics, calibration, drift."""
    auc = float(rng.uniform(0.78, 0.84))
    metrics: dict[str, float] = {}
    for outcome, base in (("churn", 0.0), ("expansion", -0.05)):
        metrics[f"{outcome}.test.roc_auc"] = auc + base
        metrics[f"{outcome}.test.pr_auc"] = 0.41 + base
        metrics[f"{outcome}.test.log_loss"] = 0.29
        metrics[f"{outcome}.test.brier"] = 0.085
        metrics[f"{outcome}.test.ece"] = 0.012
        metrics[f"{outcome}.test.top_decile_lift"] = 3.4
        baselines = ["classic_pes", "rules" + (" <script>alert(4)</script>" if hostile else "")]
        for scorer, drop in zip(baselines, (0.1, 0.14), strict=True):
            metrics[f"{outcome}.baseline.{scorer}.roc_auc"] = auc + base - drop
            metrics[f"{outcome}.baseline.{scorer}.pr_auc"] = 0.41 + base - drop
            metrics[f"{outcome}.baseline.{scorer}.top_decile_lift"] = 3.4 - 10 * drop
    calibration = {}
    for outcome in ("churn", "expansion"):
        predicted = np.linspace(0.05, 0.85, 9)
        observed = np.clip(predicted + rng.normal(0, 0.03, 9), 0, 1)
        counts = rng.integers(40, 900, 9)
        calibration[outcome] = {
            "predicted": predicted.round(4).tolist(),
            "observed": observed.round(4).tolist(),
            "count": counts.tolist(),
        }
    return {
        "models": {
            "churn": {"name": "pes_churn", "version": "4", "calibration": "platt"},
            "expansion": {"name": "pes_expansion", "version": "4", "calibration": "platt"},
        },
        "feature_catalog_version": CATALOG_VERSION,
        "event_types": event_types,
        "horizon_days": 90,
        "training_window": {
            "train_as_of": ["2023-01-01", "2023-10-01"],
            "validation_as_of": ["2023-11-01", "2023-12-01"],
            "test_as_of": ["2024-01-01", "2024-02-01"],
        },
        "tier_thresholds": {
            "at_risk_churn_probability": 0.3,
            "watch_churn_probability": 0.15,
            "expand_probability": 0.3,
        },
        "metrics": metrics,
        "calibration": calibration,
        "drift": {"active_users_30d": {"psi": 0.03}, "events_30d": {"psi": 0.12}},
        "timings": {"features_seconds": 12.5, "score_seconds": 3.1, "explain_seconds": 6.4},
        "as_of": as_of,
    }


def write_sample_store(
    path: str | Path,
    n_accounts: int = 50,
    as_of_dates: Sequence[str] = ("2024-04-01", "2024-05-01", "2024-06-01"),
    seed: int = 7,
    *,
    hostile: bool = False,
) -> RunStore:
    """Write :func:`sample_runs` into a run store at ``path`` and return the store."""
    store = RunStore(path)
    for run in iter_sample_runs(n_accounts, as_of_dates, seed, hostile=hostile):
        store.write_run(run.as_of, run.scores, run.reasons, run.manifest)
    logger.info("Sample run store at %s: %d runs of %d accounts", path, len(as_of_dates), n_accounts)
    return store


__all__ = [
    "HOSTILE_ACCOUNT_NAME",
    "HOSTILE_EVENT_NAME",
    "HOSTILE_PLAN",
    "HOSTILE_SEGMENT",
    "SampleRun",
    "iter_sample_runs",
    "sample_runs",
    "write_sample_store",
]
