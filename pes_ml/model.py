"""The trained PES model: feature encoding, calibrated boosters, scores, and its MLflow pyfunc.

One :class:`PesModel` holds every outcome's booster (churn, expansion and, when
trained, conversion). They are registered as *one* MLflow model (default name
``pes``) because they are only meaningful together: the pyfunc returns PES,
expansion score and a tier that combines both probabilities, they share one
feature encoding and one training window, and a promotion must move them as a
unit — two registered models could leave a new churn model serving beside an
old expansion model.

Everything scoring needs travels in the model: feature names, dtypes and
category levels (:class:`FeatureEncoder`), Platt parameters and base values,
tier thresholds, and the training reference distribution of every feature and
of the score for PSI drift checks.

Scales (../shared/DESIGN.md)::

    z   = a * raw + b                                # calibrated log-odds (Platt)
    pes = 50 + (10 / ln 2) * (z_base - z)            # churn model; higher is healthier
    expansion_score = 50 + (10 / ln 2) * (z - z_base)  # expansion model; higher = likelier

with ``z_base = a * base_value + b``, ``base_value`` the model's expected raw output.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from pes_ml.schemas import (
    ACCOUNT_ID,
    AS_OF,
    CHURN_PROBABILITY,
    EXPANSION_PROBABILITY,
    EXPANSION_SCORE,
    PES,
    TIER,
)

logger = logging.getLogger(__name__)

POINTS_PER_DOUBLING = 10.0 / math.log(2.0)
CONVERSION_PROBABILITY = "conversion_probability"
PROBABILITY_COLUMNS = {"churn": CHURN_PROBABILITY, "expansion": EXPANSION_PROBABILITY}
TIERS = ("at_risk", "watch", "healthy", "expand")
REFERENCE_BINS = 10


def is_categorical(series: pd.Series) -> bool:
    """String-like and categorical columns are categorical features (pandas 3 ``str`` included)."""
    return not (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series))


@dataclass
class FeatureEncoder:
    """The one place that turns a FeatureFrame into LightGBM's numeric matrix.

    Categorical columns (pandas 3 ``str``, object or category) become integer codes of
    the levels seen in training, in sorted order; an unseen level or a missing value
    becomes NaN, which LightGBM sends down its missing-value branch. Numeric columns
    become float64; booleans 0/1.
    """

    feature_names: list[str]
    categories: dict[str, list[str]] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def fit(cls, frame: pd.DataFrame, feature_names: list[str]) -> FeatureEncoder:
        """Learn category levels and dtypes from the training frame."""
        categories, dtypes = {}, {}
        for name in feature_names:
            column = frame[name]
            if is_categorical(column):
                levels = sorted({str(v) for v in column.dropna().unique()})
                categories[name] = levels
                dtypes[name] = "category"
            else:
                dtypes[name] = "float64"
        return cls(list(feature_names), categories, dtypes)

    @property
    def categorical_features(self) -> list[str]:
        return [n for n in self.feature_names if n in self.categories]

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The model matrix: one float64 column per feature, in training order.

        Raises
        ------
        DataContractError
            If a model feature is missing from ``frame``.
        """
        missing = [n for n in self.feature_names if n not in frame.columns]
        if missing:
            from pes_ml.errors import DataContractError

            raise DataContractError(
                f"The feature frame lacks {len(missing)} model feature(s): {missing[:10]}. "
                "Build features with the same catalog version the model was trained on."
            )
        columns = {}
        for name in self.feature_names:
            column = frame[name]
            if name in self.categories:
                mapping = {level: float(i) for i, level in enumerate(self.categories[name])}
                text = column.astype(object).where(column.notna(), None)
                columns[name] = pd.Series(
                    [mapping.get(str(v), np.nan) if v is not None else np.nan for v in text],
                    index=frame.index,
                    dtype="float64",
                )
            else:
                columns[name] = pd.to_numeric(column, errors="coerce").astype("float64")
        return pd.DataFrame(columns, index=frame.index)

    def unseen_levels(self, frame: pd.DataFrame) -> dict[str, list[str]]:
        """Category values in ``frame`` that training never saw, per feature."""
        unseen = {}
        for name, levels in self.categories.items():
            values = {str(v) for v in frame[name].dropna().unique()} - set(levels)
            if values:
                unseen[name] = sorted(values)
        return unseen


@dataclass
class OutcomeModel:
    """One calibrated booster: raw log-odds -> Platt (default) or isotonic probability."""

    outcome: str
    booster: lgb.Booster
    platt_slope: float
    platt_intercept: float
    base_value: float
    higher_is_better: bool
    calibration: str = "platt"
    isotonic_x: list[float] = field(default_factory=list)
    isotonic_y: list[float] = field(default_factory=list)
    best_iteration: int = 0

    def raw(self, matrix: pd.DataFrame) -> np.ndarray:
        """Raw log-odds of the booster."""
        return np.asarray(self.booster.predict(matrix, raw_score=True), dtype=float)

    def calibrated_log_odds(self, raw: np.ndarray) -> np.ndarray:
        return self.platt_slope * raw + self.platt_intercept

    def probability(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated probability of the outcome within the horizon."""
        if self.calibration == "isotonic" and self.isotonic_x:
            return np.asarray(np.interp(self.calibrated_log_odds(raw), self.isotonic_x, self.isotonic_y))
        return np.asarray(1.0 / (1.0 + np.exp(-self.calibrated_log_odds(raw))))

    def points(self, raw: np.ndarray) -> np.ndarray:
        """The 0–100 score: 50 at the base value, ±10 points per halving/doubling of the odds."""
        delta = POINTS_PER_DOUBLING * self.platt_slope * (raw - self.base_value)
        signed = -delta if self.higher_is_better is False else delta
        return np.clip(50.0 + signed, 0.0, 100.0)

    def to_dict(self) -> dict[str, Any]:
        payload = {k: v for k, v in asdict(self).items() if k != "booster"}
        payload["booster"] = self.booster.model_to_string()
        return payload

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> OutcomeModel:
        data = dict(payload)
        data["booster"] = lgb.Booster(model_str=data["booster"])
        return cls(**data)


def reference_distribution(values: pd.Series) -> dict[str, Any]:
    """Decile edges and shares (numeric) or level shares (categorical), for PSI at scoring."""
    if is_categorical(values):
        shares = values.astype(object).fillna("<missing>").astype(str).value_counts(normalize=True)
        return {"kind": "categorical", "shares": {str(k): float(v) for k, v in shares.items()}}
    numbers = pd.to_numeric(values, errors="coerce")
    finite = numbers.dropna().to_numpy(dtype=float)
    if not len(finite):
        return {"kind": "numeric", "edges": [], "shares": [], "missing_share": 1.0}
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, REFERENCE_BINS + 1))[1:-1])
    counts = np.bincount(np.searchsorted(edges, finite, side="right"), minlength=len(edges) + 1)
    return {
        "kind": "numeric",
        "edges": edges.tolist(),
        "shares": (counts / counts.sum()).tolist(),
        "missing_share": float(numbers.isna().mean()),
    }


@dataclass
class PesModel:
    """Everything needed to score: encoder, calibrated outcome models, tiers, references."""

    encoder: FeatureEncoder
    outcomes: dict[str, OutcomeModel]
    tier_thresholds: dict[str, float]
    reference: dict[str, dict[str, Any]] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    top_reasons: int = 3
    feature_specs: list[dict[str, Any]] = field(default_factory=list)

    def predict(self, features: pd.DataFrame) -> pd.DataFrame:
        """Score a FeatureFrame.

        Returns
        -------
        pandas.DataFrame
            account_id and as_of when present, churn_probability, expansion_probability,
            conversion_probability (when trained), pes, expansion_score, tier, and
            reason_1..k (churn model; strings, "" when explanations are unavailable).
        """
        matrix = self.encoder.transform(features)
        scores = pd.DataFrame(index=features.index)
        for key in (ACCOUNT_ID, AS_OF):
            if key in features:
                scores[key] = features[key]
        raws = {name: model.raw(matrix) for name, model in self.outcomes.items()}
        nan = np.full(len(features), np.nan)
        for name, column in (*PROBABILITY_COLUMNS.items(), ("conversion", CONVERSION_PROBABILITY)):
            if name in self.outcomes:
                scores[column] = self.outcomes[name].probability(raws[name])
            elif name != "conversion":
                scores[column] = nan
        scores[PES] = self.outcomes["churn"].points(raws["churn"]) if "churn" in self.outcomes else nan
        scores[EXPANSION_SCORE] = (
            self.outcomes["expansion"].points(raws["expansion"]) if "expansion" in self.outcomes else nan
        )
        scores[TIER] = assign_tiers(
            scores[CHURN_PROBABILITY], scores[EXPANSION_PROBABILITY], self.tier_thresholds
        )
        reasons = self._reasons(features, matrix)
        for i in range(self.top_reasons):
            scores[f"reason_{i + 1}"] = [r[i] if i < len(r) else "" for r in reasons]
        return scores.reset_index(drop=True)

    def _reasons(self, features: pd.DataFrame, matrix: pd.DataFrame) -> list[list[str]]:
        """Top churn reasons per row as sentences from exact SHAP (:mod:`pes_ml.explain`)."""
        churn = self.outcomes.get("churn")
        if churn is None or not len(features) or not churn.platt_slope > 0:
            # A non-positive Platt slope means the booster ranks backwards: no honest reasons.
            return [[] for _ in range(len(features))]
        return explain_reasons(self.outcomes["churn"], features, matrix, self.specs(), self.top_reasons)

    def specs(self) -> dict[str, Any]:
        """Feature metadata (name -> FeatureSpec) stored with the model, for reason sentences."""
        from pes_ml.features.catalog import FeatureSpec

        known = {d["name"]: FeatureSpec(**d) for d in self.feature_specs}
        for name in self.encoder.feature_names:
            known.setdefault(
                name,
                FeatureSpec(name, "activity", None, name.replace("_", " ").capitalize(), "neutral", ""),
            )
        return known

    def to_json(self) -> str:
        return json.dumps(
            {
                "encoder": asdict(self.encoder),
                "outcomes": {k: v.to_dict() for k, v in self.outcomes.items()},
                "tier_thresholds": self.tier_thresholds,
                "reference": self.reference,
                "metadata": self.metadata,
                "top_reasons": self.top_reasons,
                "feature_specs": self.feature_specs,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> PesModel:
        payload = json.loads(text)
        return cls(
            encoder=FeatureEncoder(**payload["encoder"]),
            outcomes={k: OutcomeModel.from_dict(v) for k, v in payload["outcomes"].items()},
            tier_thresholds=payload["tier_thresholds"],
            reference=payload["reference"],
            metadata=payload["metadata"],
            top_reasons=payload["top_reasons"],
            feature_specs=payload.get("feature_specs", []),
        )


def explain_reasons(
    model: OutcomeModel, features: pd.DataFrame, matrix: pd.DataFrame, specs: dict[str, Any], k: int
) -> list[list[str]]:
    """Top-k reason sentences per row, in row order, from exact SHAP via :mod:`pes_ml.explain`."""
    from pes_ml import explain

    result = explain.shap_values(model.booster, matrix)
    # Row positions as keys: the caller's frame may lack as_of (MLflow's signature drops it) or
    # repeat an account, and reasons must map back to rows exactly.
    keyed = matrix.copy()
    for name in model.booster.feature_name():
        if name in features:
            keyed[name] = features[name].to_numpy()
    keyed[ACCOUNT_ID] = np.arange(len(features)).astype(str)
    keyed[AS_OF] = pd.Timestamp("1970-01-01", tz="UTC")
    long = explain.long_format(
        result,
        keyed.reset_index(drop=True),
        model=model.outcome,  # type: ignore[arg-type]
        specs=specs,
        platt_slope=model.platt_slope,
    )
    reasons = explain.top_reasons(long, specs, k)
    grouped = reasons.groupby(reasons[ACCOUNT_ID].astype(int))["sentence"].apply(list)
    return [list(grouped.get(i, []))[:k] for i in range(len(features))]


def assign_tiers(churn: pd.Series, expansion: pd.Series, thresholds: dict[str, float]) -> pd.Series:
    """at_risk > expand > watch > healthy, in that order of precedence.

    A customer at risk of churning is at risk even if they also look ready to expand.
    """
    churn_p = churn.to_numpy(dtype=float)
    expand_p = expansion.to_numpy(dtype=float)
    tiers = np.full(len(churn_p), "healthy", dtype=object)
    tiers[churn_p >= thresholds.get("watch_churn_probability", np.inf)] = "watch"
    tiers[(expand_p >= thresholds.get("expand_probability", np.inf)) & (tiers == "healthy")] = "expand"
    tiers[churn_p >= thresholds.get("at_risk_churn_probability", np.inf)] = "at_risk"
    return pd.Series(tiers, index=churn.index, dtype=object)


def default_tier_thresholds(churn_rate: float, expansion_rate: float) -> dict[str, float]:
    """Tier defaults from the validation base rates.

    at_risk: twice the typical churn risk; watch: above the typical risk; expand:
    twice the typical expansion propensity. Capped so a tier stays reachable.
    """
    thresholds = {}
    if np.isfinite(churn_rate):
        thresholds["at_risk_churn_probability"] = float(min(2.0 * churn_rate, 0.9))
        thresholds["watch_churn_probability"] = float(min(churn_rate, 0.5))
    if np.isfinite(expansion_rate):
        thresholds["expand_probability"] = float(min(2.0 * expansion_rate, 0.9))
    return thresholds
