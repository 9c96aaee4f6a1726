"""Exact explanations: SHAP values, PES points, feature groups, reasons and change attribution.

This is the only package that computes SHAP (STYLE §1). Everything is exact and
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

Modules: :mod:`~pes_ml.explain.contributions` (SHAP values, additivity, PES points),
:mod:`~pes_ml.explain.table` (the long table, values as text, group sums),
:mod:`~pes_ml.explain.reasons` (top-k reason sentences) and
:mod:`~pes_ml.explain.change` (change attribution). Import from ``pes_ml.explain``.
"""

from pes_ml.explain.change import DELTA_POINTS, PES_DELTA, ChangeAttribution, attribute_change
from pes_ml.explain.contributions import (
    ADDITIVITY_TOLERANCE,
    FEATURE,
    FEATURE_VALUE,
    GROUP,
    HIGHER_RAW_IS_BETTER,
    LONG_COLUMNS,
    MODEL,
    PES_CENTER,
    PES_POINTS,
    POINTS_PER_LOG_ODDS,
    POINTS_TO_DOUBLE_ODDS,
    SHAP_LOG_ODDS,
    Model,
    ShapResult,
    check_additivity,
    pes_from_raw,
    shap_values,
    to_pes_points,
)
from pes_ml.explain.reasons import (
    REASON_RANK,
    SENTENCE,
    direction_phrase,
    format_value,
    reason_sentence,
    top_reasons,
)
from pes_ml.explain.table import group_contributions, long_format

__all__ = [
    "ADDITIVITY_TOLERANCE",
    "DELTA_POINTS",
    "FEATURE",
    "FEATURE_VALUE",
    "GROUP",
    "HIGHER_RAW_IS_BETTER",
    "LONG_COLUMNS",
    "MODEL",
    "PES_CENTER",
    "PES_DELTA",
    "PES_POINTS",
    "POINTS_PER_LOG_ODDS",
    "POINTS_TO_DOUBLE_ODDS",
    "REASON_RANK",
    "SENTENCE",
    "SHAP_LOG_ODDS",
    "ChangeAttribution",
    "Model",
    "ShapResult",
    "attribute_change",
    "check_additivity",
    "direction_phrase",
    "format_value",
    "group_contributions",
    "long_format",
    "pes_from_raw",
    "reason_sentence",
    "shap_values",
    "to_pes_points",
    "top_reasons",
]
