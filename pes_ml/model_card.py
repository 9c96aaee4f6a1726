"""Model cards: the Markdown a reviewer reads for each promoted version, written to ``models/<name>/``."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pes_ml.config import PesConfig
from pes_ml.model import PesModel

if TYPE_CHECKING:
    from pes_ml.registry import PromotionDecision

logger = logging.getLogger(__name__)

_COLUMNS = ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "top_decile_lift")


def _table(metrics: dict[str, float], outcome: str) -> list[str]:
    scorers: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        if key.startswith(f"{outcome}.test."):
            scorers.setdefault("**model**", {})[key.split(".")[-1]] = value
        elif key.startswith(f"{outcome}.baseline."):
            _, _, scorer, metric = key.split(".", 3)
            scorers.setdefault(scorer, {})[metric] = value
    lines = [
        "| scorer | AUC (95% CI) | " + " | ".join(_COLUMNS[1:]) + " |",
        "|---" * (len(_COLUMNS) + 1) + "|",
    ]
    for scorer, values in sorted(scorers.items(), key=lambda kv: -kv[1].get("roc_auc", 0.0)):
        auc = f"{values.get('roc_auc', float('nan')):.3f}"
        if "roc_auc_low" in values:
            auc += f" ({values['roc_auc_low']:.3f}–{values['roc_auc_high']:.3f})"
        rest = " | ".join(f"{values.get(c, float('nan')):.4f}" for c in _COLUMNS[1:])
        lines.append(f"| {scorer} | {auc} | {rest} |")
    base = metrics.get(f"{outcome}.test.base_log_loss")
    if base is not None:
        lines.append(
            f"\nBase-rate log loss: {base:.4f}; base rate {metrics.get(f'{outcome}.test.base_rate', 0):.4f}."
        )
    return lines


def write_model_card(
    config: PesConfig, decision: PromotionDecision, model: PesModel, metrics: dict[str, float]
) -> Path:
    """Write ``<model_card_dir>/<name>/v<version>.md`` and return its path."""
    name = config.tracking.model_name
    labels = config.labels
    meta = model.metadata
    lines = [
        f"# {name} v{decision.version} — model card",
        "",
        f"Promoted to @champion on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
        + (
            f", replacing v{decision.previous_champion}."
            if decision.previous_champion
            else " (first champion)."
        ),
        "",
        "## Labels",
        f"- Horizon: {labels.horizon_days} days, window `[as_of, as_of + {labels.horizon_days}d)`.",
        f"- Churn: no active subscription, with no re-subscription within {labels.grace_days} days, "
        "at a date inside the window (activity mode: no events in the window).",
        f"- Expansion: {labels.expansion_measure} (list price, before discount) at the end of the window "
        f">= {labels.expansion_ratio} x its value at as_of.",
        "- Conversion: a trial/free account starts paying inside the window.",
        "- Accounts already churned at as_of are excluded; windows past the end of the data are unlabeled.",
        "",
        "## Data window",
    ]
    for key in (
        "train_as_of",
        "validation_as_of",
        "test_as_of",
        "data_end",
        "data_fingerprint",
        "catalog_version",
    ):
        if key in meta:
            lines.append(f"- {key.replace('_', ' ')}: {meta[key]}")
    lines += ["", "## Calibration"]
    for outcome, om in model.outcomes.items():
        method = (
            "isotonic (it lowered cross-fitted validation log loss by >= 1%)"
            if om.calibration == "isotonic"
            else "Platt"
        )
        lines.append(
            f"- {outcome}: {method}; Platt a={om.platt_slope:.4f}, b={om.platt_intercept:.4f}; "
            f"base value {om.base_value:.4f}; {om.best_iteration} trees."
        )
    lines += [
        "",
        f"Tier thresholds: {model.tier_thresholds}",
        "",
        "## Test metrics vs baselines (same snapshots)",
    ]
    for outcome in model.outcomes:
        lines += ["", f"### {outcome}", "", *_table(metrics, outcome)]
    lines += ["", "## Promotion gates", *[f"- passed: {g}" for g in decision.passed]]
    lines += [f"- FAILED (forced): {g}" for g in decision.failed]
    lines += [
        "",
        "## Known limits",
        "- Metrics are measured on the latest fully-labeled as_of dates only; a shift in the product or "
        "customer base after them is not covered.",
        "- Early stopping and calibration share the validation split, so validation metrics are slightly "
        "optimistic; the test split is a full horizon later and is not.",
        "- Segments with fewer than 30 test snapshots are not reported.",
        "",
    ]
    directory = Path(config.tracking.model_card_dir) / name
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"v{decision.version}.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    logger.info("model card written to %s", path)
    return path
