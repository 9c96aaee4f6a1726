"""The model page's facts: versions, training window, evaluation vs baselines, calibration, drivers.

The manifest is read tolerantly: the scoring job writes it and it may gain keys. The
keys this page reads (all optional):

- ``model`` (``{"name", "version", "alias"}``, as ``pes-ml score`` writes it) or
  ``models`` (``{outcome: {"name", "version", ...}}``); else the run's model name/version;
- ``feature_catalog_version`` (or ``catalog_version``), ``horizon_days``, ``tier_thresholds``;
- ``training_window`` (labels to dates), else ``model_metadata``'s ``train_as_of``,
  ``validation_as_of``, ``test_as_of`` and ``data_end``;
- ``metrics`` (top level or in ``model_metadata``): the model card's flat form
  ``{outcome}.test.{metric}`` and ``{outcome}.baseline.{scorer}.{metric}``, or nested
  ``{outcome: {scorer: {metric: value}}}``;
- ``calibration`` (top level or in ``model_metadata``):
  ``{outcome: {"predicted": [...], "observed": [...], "count": [...]}}`` or
  ``{outcome: [{"predicted", "observed", "count"}, ...]}``;
- ``drift``, ``timings_seconds``, ``counts`` and any other section: key/value tables.

When the manifest has no metrics or calibration, the page says where they are (the
model card and the MLflow run of the model version).

Global drivers are computed from the run's SHAP table (mean absolute PES points per
feature), so they are exact for this run and need nothing from the manifest.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from pes_ml.atomic import json_default
from pes_ml.features.catalog import FeatureSpec
from pes_ml.report.data import ReportData, tier_label
from pes_ml.run_contract import FEATURE, GROUP, MODEL, PES_POINTS

METRIC_COLUMNS = (
    ("roc_auc", "AUC"),
    ("pr_auc", "PR-AUC"),
    ("log_loss", "Log loss"),
    ("brier", "Brier"),
    ("ece", "ECE"),
    ("top_decile_lift", "Top-decile lift"),
)
CHART = {"width": 320, "height": 320, "pad": 40}
_WINDOW_KEYS = ("train_as_of", "validation_as_of", "test_as_of", "data_end")
_LONG_LIST = 12
_SHOWN_ELSEWHERE = {
    "model",
    "models",
    "feature_catalog_version",
    "catalog_version",
    "training_window",
    "metrics",
    "evaluation",
    "calibration",
    "tier_thresholds",
    "event_types",
    "run",
}


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if math.isfinite(value) else "n/a"
    if isinstance(value, (list, tuple)):
        if len(value) > _LONG_LIST:
            return ", ".join(map(str, value[:_LONG_LIST])) + f", … ({len(value)} in all)"
        return " to ".join(map(str, value)) if len(value) == 2 else ", ".join(map(str, value))
    return str(value)


def flatten(section: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested mappings as ``(dotted key, text)`` pairs, for plain key/value tables."""
    if isinstance(section, Mapping):
        pairs: list[tuple[str, str]] = []
        for key, value in section.items():
            pairs += flatten(value, f"{prefix}.{key}" if prefix else str(key))
        return pairs
    return [(prefix or "value", _text(section))]


def evaluation(metrics: Any) -> list[dict[str, Any]]:
    """Per outcome: rows of scorer -> metric texts, the model first, then baselines by AUC."""
    nested: dict[str, dict[str, dict[str, float]]] = {}
    if isinstance(metrics, Mapping):
        for key, value in metrics.items():
            if isinstance(value, Mapping):  # nested: {outcome: {scorer: {metric: value}}}
                for scorer, values in value.items():
                    if isinstance(values, Mapping):
                        nested.setdefault(str(key), {})[str(scorer)] = dict(values)
                continue
            parts = str(key).split(".")
            if len(parts) == 3 and parts[1] == "test":
                nested.setdefault(parts[0], {}).setdefault("model", {})[parts[2]] = value
            elif len(parts) >= 4 and parts[1] == "baseline":
                scorer = ".".join(parts[2:-1])
                nested.setdefault(parts[0], {}).setdefault(scorer, {})[parts[-1]] = value
    tables = []
    for outcome, scorers in nested.items():
        ordered = sorted(
            scorers.items(), key=lambda kv: (kv[0] != "model", -float(kv[1].get("roc_auc", 0.0) or 0.0))
        )
        rows = []
        for scorer, values in ordered:
            cells = []
            for key, _label in METRIC_COLUMNS:
                value = values.get(key)
                cells.append("" if value is None else _text(float(value)))
            rows.append({"scorer": scorer, "is_model": scorer == "model", "cells": cells})
        tables.append({"outcome": outcome, "rows": rows})
    return tables


def _points(section: Any) -> list[tuple[float, float, int | None]]:
    if isinstance(section, Mapping) and "predicted" in section and "observed" in section:
        counts = section.get("count") or [None] * len(section["predicted"])
        rows: list[tuple[Any, Any, Any]] = list(
            zip(section["predicted"], section["observed"], counts, strict=False)
        )
    elif isinstance(section, list):
        rows = [
            (p.get("predicted"), p.get("observed"), p.get("count")) for p in section if isinstance(p, Mapping)
        ]
    else:
        return []
    points = []
    for predicted, observed, count in rows:
        try:
            x, y = float(predicted), float(observed)
        except (TypeError, ValueError):
            continue
        if math.isfinite(x) and math.isfinite(y):
            points.append((x, y, None if count is None else int(count)))
    return points


def calibration_charts(calibration: Any) -> list[dict[str, Any]]:
    """SVG geometry of each outcome's calibration curve (predicted vs observed rate)."""
    if not isinstance(calibration, Mapping):
        return []
    width, height, pad = CHART["width"], CHART["height"], CHART["pad"]
    span = max([max(x, y) for section in calibration.values() for x, y, _ in _points(section)] or [1.0])
    top = min(1.0, math.ceil(span * 10 + 0.5) / 10)

    def sx(v: float) -> float:
        return round(pad + (width - 2 * pad) * v / top, 1)

    def sy(v: float) -> float:
        return round(height - pad - (height - 2 * pad) * v / top, 1)

    charts = []
    for outcome, section in calibration.items():
        points = _points(section)
        if not points:
            continue
        dots = [
            {
                "x": sx(x),
                "y": sy(y),
                "label": f"predicted {x:.1%}, observed {y:.1%}" + (f", {c:,} accounts" if c else ""),
            }
            for x, y, c in points
        ]
        ticks = [round(top * i / 4, 3) for i in range(5)]
        charts.append(
            {
                "outcome": str(outcome),
                "polyline": " ".join(f"{d['x']},{d['y']}" for d in dots),
                "dots": dots,
                "diagonal": {"x1": sx(0), "y1": sy(0), "x2": sx(top), "y2": sy(top)},
                "ticks": [{"label": f"{t:.0%}", "x": sx(t), "y": sy(t)} for t in ticks],
                "size": CHART,
            }
        )
    return charts


def global_drivers(reasons: pd.DataFrame, specs: Mapping[str, FeatureSpec], top: int = 12) -> dict[str, Any]:
    """Mean absolute PES points per feature and per group (churn model) over all scored accounts."""
    churn = reasons[reasons[MODEL].astype("str") == "churn"]
    if churn.empty:
        return {"features": [], "groups": []}
    by_feature = churn[PES_POINTS].abs().groupby(churn[FEATURE]).mean().sort_values(ascending=False)
    per_group = churn.groupby([churn["account_id"], churn[GROUP]], observed=True)[PES_POINTS].sum()
    by_group = per_group.abs().groupby(level=1).mean().sort_values(ascending=False)
    peak_f = float(by_feature.iloc[0]) or 1.0
    peak_g = float(by_group.iloc[0]) or 1.0
    features = [
        {
            "feature": str(name),
            "description": specs[str(name)].description if str(name) in specs else str(name),
            "group": specs[str(name)].group if str(name) in specs else "",
            "points": round(float(value), 1),
            "width": round(100.0 * float(value) / peak_f, 1),
        }
        for name, value in by_feature.head(top).items()
    ]
    groups = [
        {
            "group": str(name),
            "points": round(float(value), 1),
            "width": round(100.0 * float(value) / peak_g, 1),
        }
        for name, value in by_group.items()
    ]
    return {"features": features, "groups": groups}


def _lookup(manifest: Mapping[str, Any], key: str) -> Any:
    """A manifest key, at the top level or in ``model_metadata``."""
    if manifest.get(key) is not None:
        return manifest[key]
    metadata = manifest.get("model_metadata")
    return metadata.get(key) if isinstance(metadata, Mapping) else None


def model_context(data: ReportData, horizon_days: int | None) -> dict[str, Any]:
    """Everything the model page template needs, as plain values."""
    manifest = data.manifest
    models = manifest.get("models")
    single = manifest.get("model")
    named: Mapping[str, Any] = single if isinstance(single, Mapping) else {}
    if not (isinstance(models, Mapping) and models) and named:
        models = {"churn and expansion": named}
    if isinstance(models, Mapping) and models:
        model_rows = [
            {
                "outcome": str(outcome),
                "facts": flatten(facts) if isinstance(facts, Mapping) else [("", _text(facts))],
            }
            for outcome, facts in models.items()
        ]
    else:
        model_rows = [
            {"outcome": "all", "facts": [("name", data.run.model_name), ("version", data.run.model_version)]}
        ]
    horizon = horizon_days if horizon_days is not None else _lookup(manifest, "horizon_days")
    window = manifest.get("training_window")
    if not isinstance(window, Mapping):
        metadata = manifest.get("model_metadata")
        metadata = metadata if isinstance(metadata, Mapping) else {}
        window = {k: metadata[k] for k in _WINDOW_KEYS if k in metadata}
    thresholds = manifest.get("tier_thresholds")
    other = {k: v for k, v in manifest.items() if k not in _SHOWN_ELSEWHERE}
    return {
        "run": {
            "run_id": data.run.run_id,
            "as_of": data.run.as_of.isoformat(),
            "created_at": f"{data.run.created_at:%Y-%m-%d %H:%M} UTC",
            "accounts": data.run.n_scores,
            "model_name": str(named.get("name", data.run.model_name)),
            "model_version": str(named.get("version", data.run.model_version)),
            "previous_as_of": data.previous.as_of.isoformat() if data.previous else None,
        },
        "models": model_rows,
        "catalog_version": _lookup(manifest, "feature_catalog_version")
        or _lookup(manifest, "catalog_version"),
        "horizon_days": horizon,
        "training_window": flatten(window),
        "evaluation": evaluation(_lookup(manifest, "metrics") or _lookup(manifest, "evaluation")),
        "metric_columns": [label for _key, label in METRIC_COLUMNS],
        "calibration": calibration_charts(_lookup(manifest, "calibration")),
        "drivers": global_drivers(data.reasons, data.specs),
        "thresholds": [
            (tier_label(k.split("_churn")[0].split("_probability")[0]), k, _text(v))
            for k, v in (thresholds.items() if isinstance(thresholds, Mapping) else [])
        ],
        "sections": [(str(k), flatten(v)) for k, v in other.items() if isinstance(v, Mapping)],
        "facts": [(str(k), _text(v)) for k, v in other.items() if not isinstance(v, Mapping)],
        "manifest_json": json.dumps(manifest, indent=2, sort_keys=True, default=json_default),
    }


__all__ = ["calibration_charts", "evaluation", "flatten", "global_drivers", "model_context"]
