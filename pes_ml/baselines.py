"""Baselines the model must beat, scored on the same split.

- ``classic_pes``: Pendo's descriptive PES (rule, no training); higher is healthier.
- ``days_since_last_event``: recency alone.
- ``logistic_regression``: L2 logistic regression on the same features (median
  imputation with missing indicators, standardisation, one-hot categoricals).
- the team's own **rule scores** from config (``baselines.rule_scores``): binary
  "engaged if …" criteria and weighted points per signal, as in Gainsight or
  ChurnZero scorecards; higher is healthier.

Each baseline yields a score; every score becomes a probability by Platt
scaling on the validation split — the treatment the model gets — so log loss,
Brier and ECE compare like with like, and the ranking metrics are unchanged.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from pes_ml.config import BaselinesConfig, RuleCondition, RuleScore
from pes_ml.errors import ConfigError
from pes_ml.model import is_categorical
from pes_ml.schemas import DAYS_SINCE_LAST_EVENT

logger = logging.getLogger(__name__)

CLASSIC_PES = "classic_pes"
_OPS: dict[str, Callable[[Any, Any], Any]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


def _condition(frame: pd.DataFrame, condition: RuleCondition, rule: str) -> np.ndarray:
    if condition.feature not in frame:
        raise ConfigError(
            f"Rule score {rule!r} uses feature {condition.feature!r}, which the feature frame lacks. "
            "Use a feature name from the catalog (`pes-ml features --help`)."
        )
    column = frame[condition.feature]
    value: object = condition.value
    if not isinstance(value, str) and not is_categorical(column):
        column = pd.to_numeric(column, errors="coerce")
    result = _OPS[condition.op](column, value)
    return np.asarray(pd.Series(result).fillna(False), dtype=bool)


def rule_score(frame: pd.DataFrame, rule: RuleScore) -> np.ndarray:
    """A rule score per row, higher is healthier.

    binary: 1.0 when all (or any) criteria hold, else 0.0.
    points: the sum of the points of the rules that hold.
    """
    if rule.kind == "binary":
        if not rule.criteria:
            raise ConfigError(f"Binary rule score {rule.name!r} needs at least one entry in 'criteria'.")
        held = np.column_stack([_condition(frame, c, rule.name) for c in rule.criteria])
        engaged = held.all(axis=1) if rule.require == "all" else held.any(axis=1)
        return engaged.astype(float)
    if not rule.rules:
        raise ConfigError(f"Points rule score {rule.name!r} needs at least one entry in 'rules'.")
    points = np.sum([_condition(frame, r, rule.name) * r.points for r in rule.rules], axis=0)
    return np.asarray(points, dtype=float)


def health_scores(frame: pd.DataFrame, config: BaselinesConfig) -> dict[str, np.ndarray]:
    """The untrained baselines' scores (higher is healthier), for those the frame supports."""
    scores: dict[str, np.ndarray] = {}
    if config.classic_pes and CLASSIC_PES in frame:
        scores[CLASSIC_PES] = pd.to_numeric(frame[CLASSIC_PES], errors="coerce").fillna(0.0).to_numpy(float)
    if config.days_since_last_event and DAYS_SINCE_LAST_EVENT in frame:
        days = pd.to_numeric(frame[DAYS_SINCE_LAST_EVENT], errors="coerce")
        # never active counts as the longest silence seen
        scores[DAYS_SINCE_LAST_EVENT] = -days.fillna(days.max() + 1 if days.notna().any() else 0).to_numpy(
            float
        )
    for rule in config.rule_scores:
        scores[f"rule:{rule.name}"] = rule_score(frame, rule)
    return scores


def logistic_regression(frame: pd.DataFrame, features: list[str], c: float, random_state: int) -> Pipeline:
    """An unfitted L2 logistic regression pipeline for the given features."""
    categorical = [f for f in features if is_categorical(frame[f])]
    numeric = [f for f in features if f not in categorical]
    transformer = ColumnTransformer(
        [
            (
                "numeric",
                make_pipeline(
                    # keep_empty_features: a feature with no value in train (e.g. a trend before
                    # history exists) becomes 0 instead of vanishing with a warning
                    SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
                    StandardScaler(),
                ),
                numeric,
            ),
            (
                "categorical",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="<missing>"),
                    OneHotEncoder(handle_unknown="ignore", min_frequency=20),
                ),
                categorical,
            ),
        ],
        sparse_threshold=0.0,
    )
    model = LogisticRegression(C=c, max_iter=500, random_state=random_state)
    return Pipeline([("features", transformer), ("model", model)])


def prepare_for_sklearn(frame: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """Categoricals as object, numerics as float: sklearn's imputers reject pandas 3 ``str`` with NaN."""
    columns = {}
    for name in features:
        column = frame[name]
        if is_categorical(column):
            columns[name] = column.astype(object).where(column.notna(), np.nan)
        else:
            columns[name] = pd.to_numeric(column, errors="coerce").astype(float)
    return pd.DataFrame(columns, index=frame.index)
