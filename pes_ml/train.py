"""Calibrated LightGBM churn, expansion and conversion models, and baselines on the same split.

Per outcome:

1. rows with a known label in each split (NaN labels never enter training);
2. LightGBM with the binary log-loss objective — no ``is_unbalance`` or
   ``scale_pos_weight``: reweighting inflates every probability, and the log loss
   already copes with a 5% base rate — early-stopped on the validation split;
3. Platt scaling of the raw log-odds, fitted on the validation split (rows the
   booster never trained on): ``z = a·raw + b``, linear in log-odds so SHAP values
   convert exactly into PES points. Isotonic regression replaces it only when
   configured, or with ``calibration: auto`` when it lowers cross-fitted
   validation log loss by at least 1%; the model card then says so;
4. baselines scored on the same test snapshots, with Platt scaling on validation.

Early stopping and calibration share the validation split. That makes the
validation log loss slightly optimistic, never the test metrics: test as_of dates
sit a full horizon after validation (see :mod:`pes_ml.dataset`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import lightgbm as lgb
import numpy as np
import pandas as pd
import yaml
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from pes_ml import baselines as bl
from pes_ml import explain
from pes_ml.config import PesConfig
from pes_ml.dataset import Split
from pes_ml.errors import ConfigError
from pes_ml.evaluate import binary_metrics, segment_columns, segment_metrics
from pes_ml.model import (
    FeatureEncoder,
    OutcomeModel,
    PesModel,
    default_tier_thresholds,
    reference_distribution,
)
from pes_ml.schemas import CHURNED, CONVERTED, EXPANDED

logger = logging.getLogger(__name__)

OUTCOME_LABELS = {"churn": CHURNED, "expansion": EXPANDED, "conversion": CONVERTED}
HIGHER_IS_BETTER = {"churn": False, "expansion": True, "conversion": True}
MODEL = "model"


def load_model_spec(path: str | Path) -> dict[str, Any]:
    """Read the LightGBM model spec YAML (``lightgbm``, ``num_boost_round``, ``early_stopping_rounds``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Model spec {str(path)!r} does not exist. Set train.model_spec to a YAML file.")
    spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if "lightgbm" not in spec:
        raise ConfigError(f"Model spec {str(path)!r} must have a 'lightgbm:' mapping of parameters.")
    spec.setdefault("num_boost_round", 500)
    spec.setdefault("early_stopping_rounds", 50)
    spec.setdefault("overrides", {})
    return spec


def fit_platt(raw: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Slope and intercept of a 1-D logistic regression of ``y`` on the raw log-odds."""
    model = LogisticRegression(C=1e6, max_iter=1000)
    model.fit(raw.reshape(-1, 1), y)
    return float(model.coef_[0, 0]), float(model.intercept_[0])


_MIN_BASELINE_SLOPE: Final = 1e-9


def oriented_platt(score: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Platt scaling for a score with a fixed direction (a rule: higher means the outcome is likelier).

    A rule's direction is its definition, not a parameter: when validation would fit
    a negative slope (reversing the rule), the slope is clamped to a tiny positive
    value with the base-rate intercept, so the test ranking (AUC, lift) is the rule's
    own and its probabilities are the base rate.
    """
    slope, intercept = fit_platt(score, y)
    if slope > _MIN_BASELINE_SLOPE:
        return slope, intercept
    rate = float(np.clip(np.mean(y), 1e-6, 1 - 1e-6))
    return _MIN_BASELINE_SLOPE, float(np.log(rate / (1 - rate)))


def _platt_probability(raw: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(slope * raw + intercept)))


def _isotonic_wins(z: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> bool:
    """Two-fold cross-fit on validation: does isotonic lower log loss by ≥ 1% versus Platt?"""
    folds = rng.permutation(len(y)) % 2
    iso_loss, platt_loss = [], []
    for k in (0, 1):
        fit, held = folds != k, folds == k
        if len(np.unique(y[fit])) < 2 or len(np.unique(y[held])) < 2:
            return False
        iso = IsotonicRegression(out_of_bounds="clip", y_min=1e-4, y_max=1 - 1e-4).fit(z[fit], y[fit])
        iso_loss.append(log_loss(y[held], iso.predict(z[held]), labels=[0, 1]))
        slope, intercept = fit_platt(z[fit], y[fit])
        platt_loss.append(log_loss(y[held], _platt_probability(z[held], slope, intercept), labels=[0, 1]))
    return float(np.mean(iso_loss)) < 0.99 * float(np.mean(platt_loss))


def fit_outcome(
    outcome: str,
    train_x: pd.DataFrame,
    train_y: np.ndarray,
    valid_x: pd.DataFrame,
    valid_y: np.ndarray,
    *,
    spec: dict[str, Any],
    categorical: list[str],
    calibration: str,
    random_state: int,
) -> OutcomeModel:
    """Train one early-stopped booster and calibrate it on the validation rows."""
    params = {**spec["lightgbm"], **spec["overrides"].get(outcome, {}), "seed": random_state}
    params.setdefault("objective", "binary")
    for forbidden in ("is_unbalance", "scale_pos_weight"):
        if params.get(forbidden):
            raise ConfigError(
                f"The model spec sets {forbidden!r}, which inflates every probability. Remove it: "
                "the log-loss objective and Platt calibration handle imbalance."
            )
    train_set = lgb.Dataset(train_x, label=train_y, categorical_feature=categorical, free_raw_data=True)
    valid_set = lgb.Dataset(valid_x, label=valid_y, reference=train_set, categorical_feature=categorical)
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=int(spec["num_boost_round"]),
        valid_sets=[valid_set],
        valid_names=["validation"],
        callbacks=[lgb.early_stopping(int(spec["early_stopping_rounds"]), verbose=False)],
    )
    best = booster.best_iteration or booster.current_iteration()
    # Keep only the trees early stopping chose, so raw scores and SHAP use the same model.
    booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    valid_raw = np.asarray(booster.predict(valid_x, raw_score=True), dtype=float)
    slope, intercept = fit_platt(valid_raw, valid_y)
    # The TreeSHAP base value: the booster's expected raw output over its training data.
    base_value = float(explain.shap_values(booster, valid_x.iloc[:1]).base_value)
    model = OutcomeModel(
        outcome=outcome,
        booster=booster,
        platt_slope=slope,
        platt_intercept=intercept,
        base_value=base_value,
        higher_is_better=HIGHER_IS_BETTER[outcome],
        best_iteration=int(best),
    )
    z = model.calibrated_log_odds(valid_raw)
    rng = np.random.default_rng(random_state)
    if calibration == "isotonic" or (calibration == "auto" and _isotonic_wins(z, valid_y, rng)):
        iso = IsotonicRegression(out_of_bounds="clip", y_min=1e-4, y_max=1 - 1e-4).fit(z, valid_y)
        model.calibration = "isotonic"
        model.isotonic_x = [float(v) for v in iso.X_thresholds_]
        model.isotonic_y = [float(v) for v in iso.y_thresholds_]
    logger.info(
        "%s: %d trees, Platt a=%.3f b=%.3f, calibration=%s",
        outcome,
        best,
        slope,
        intercept,
        model.calibration,
    )
    return model


@dataclass
class OutcomeReport:
    """Everything measured for one outcome on the test split."""

    outcome: str
    metrics: dict[str, dict[str, float]]
    validation_metrics: dict[str, float]
    predictions: pd.DataFrame
    segments: pd.DataFrame
    importance: pd.DataFrame
    rows: dict[str, int]


@dataclass
class TrainingResult:
    """The trained model and the evidence for it."""

    model: PesModel
    reports: dict[str, OutcomeReport]
    split_summary: pd.DataFrame
    test_snapshots: pd.DataFrame
    feature_names: list[str]
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def _known(frame: pd.DataFrame, label: str) -> pd.DataFrame:
    return frame[frame[label].notna()] if label in frame else frame.iloc[0:0]


def train_models(
    split: Split,
    feature_names: list[str],
    config: PesConfig,
    *,
    spec: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    specs: Sequence[Any] = (),
    reference_features: pd.DataFrame | None = None,
) -> TrainingResult:
    """Train, calibrate and evaluate every configured outcome with enough positives.

    Parameters
    ----------
    split
        Snapshots split by time (:func:`pes_ml.dataset.split_by_time`).
    feature_names
        Model inputs, in order (e.g. ``pes_ml.features.model_feature_names()``).
    config
        The project config (train, baselines, score sections).
    spec
        The model spec; read from ``config.train.model_spec`` when omitted.
    metadata
        Stored with the model (catalog version, label definition, data window…).
    specs
        FeatureSpecs of the catalog; those of the model features are stored with the model
        so reason sentences do not depend on the installed catalog at scoring time.
    reference_features
        The population the drift check at scoring compares against (default: the test
        split). Training passes the features at the end of the data: the accounts the
        next scoring run will see.

    Returns
    -------
    TrainingResult

    Raises
    ------
    ConfigError
        If churn cannot be trained (too few positives) or the spec is invalid.
    """
    started = time.perf_counter()
    spec = spec if spec is not None else load_model_spec(config.train.model_spec)
    encoder = FeatureEncoder.fit(split.train, feature_names)
    outcomes: dict[str, OutcomeModel] = {}
    reports: dict[str, OutcomeReport] = {}
    skipped: dict[str, str] = {}
    rng = np.random.default_rng(config.train.random_state)
    for outcome in config.train.outcomes:
        label = OUTCOME_LABELS[outcome]
        train, valid, test = (_known(split.frame(n), label) for n in ("train", "validation", "test"))
        counts = {
            n: int(f[label].sum()) for n, f in (("train", train), ("validation", valid), ("test", test))
        }
        if min(counts.values()) < config.train.min_positives:
            skipped[outcome] = (
                f"too few positives {counts} (< train.min_positives={config.train.min_positives})"
            )
            logger.warning("skipping %s: %s", outcome, skipped[outcome])
            continue
        train_x, valid_x, test_x = (encoder.transform(f) for f in (train, valid, test))
        fitted = fit_outcome(
            outcome,
            train_x,
            train[label].to_numpy(float),
            valid_x,
            valid[label].to_numpy(float),
            spec=spec,
            categorical=encoder.categorical_features,
            calibration=config.train.calibration,
            random_state=config.train.random_state,
        )
        outcomes[outcome] = fitted
        reports[outcome] = _evaluate_outcome(
            outcome, fitted, train, valid, test, valid_x, test_x, feature_names, config, rng
        )
    if "churn" not in outcomes:
        raise ConfigError(
            f"The churn model could not be trained: {skipped.get('churn', 'not in train.outcomes')}. "
            "Use more history or more accounts, or lower train.min_positives."
        )
    valid_rate = {o: r.validation_metrics["base_rate"] for o, r in reports.items()}
    # Drift reference: the latest snapshots the model was evaluated on (the test split), the
    # population closest to the next scoring run. The train split is older by design, and
    # features that grow with time (tenure) would read as drift against it.
    if reference_features is not None and len(reference_features):
        latest = reference_features
    else:
        latest = split.test if len(split.test) else split.train
    reference = {name: reference_distribution(latest[name]) for name in feature_names}
    churn_points = outcomes["churn"].points(outcomes["churn"].raw(encoder.transform(latest)))
    reference["__pes__"] = reference_distribution(pd.Series(churn_points))
    model = PesModel(
        encoder=encoder,
        outcomes=outcomes,
        tier_thresholds=default_tier_thresholds(
            valid_rate.get("churn", float("nan")), valid_rate.get("expansion", float("nan"))
        ),
        reference=reference,
        metadata=dict(metadata or {}),
        top_reasons=config.score.top_reasons,
        feature_specs=[asdict(s) for s in specs if s.name in set(feature_names)],
    )
    keep = [c for c in split.test.columns]
    return TrainingResult(
        model=model,
        reports=reports,
        split_summary=split.summary(),
        test_snapshots=split.test[keep].reset_index(drop=True),
        feature_names=list(feature_names),
        skipped=skipped,
        seconds=time.perf_counter() - started,
    )


def _evaluate_outcome(
    outcome: str,
    model: OutcomeModel,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    test: pd.DataFrame,
    valid_x: pd.DataFrame,
    test_x: pd.DataFrame,
    feature_names: list[str],
    config: PesConfig,
    rng: np.random.Generator,
) -> OutcomeReport:
    label = OUTCOME_LABELS[outcome]
    y_valid, y_test = valid[label].to_numpy(float), test[label].to_numpy(float)
    rounds = config.train.bootstrap_rounds
    predictions = {MODEL: model.probability(model.raw(test_x))}
    predictions.update(baseline_probabilities(outcome, train, valid, test, feature_names, config))
    metrics = {
        name: binary_metrics(y_test, p, bootstrap_rounds=rounds, rng=rng) for name, p in predictions.items()
    }
    validation_metrics = binary_metrics(y_valid, model.probability(model.raw(valid_x)))
    segments = segment_metrics(
        y_test,
        predictions,
        segment_columns(
            test, config.train.segment_columns, config.train.size_feature, config.train.tenure_feature
        ),
    )
    importance = pd.DataFrame(
        {
            "feature": feature_names,
            "gain": model.booster.feature_importance("gain"),
            "splits": model.booster.feature_importance("split"),
        }
    ).sort_values("gain", ascending=False)
    frame = pd.DataFrame({"y": y_test, **predictions})
    for name, values in metrics.items():
        logger.info("%s %s: AUC %.3f ECE %.4f", outcome, name, values["roc_auc"], values["ece"])
    return OutcomeReport(
        outcome=outcome,
        metrics=metrics,
        validation_metrics=validation_metrics,
        predictions=frame,
        segments=segments,
        importance=importance,
        rows={"train": len(train), "validation": len(valid), "test": len(test)},
    )


def baseline_probabilities(
    outcome: str,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    test: pd.DataFrame,
    feature_names: list[str],
    config: PesConfig,
) -> dict[str, np.ndarray]:
    """Every configured baseline's test-split probabilities (Platt-scaled on validation)."""
    label = OUTCOME_LABELS[outcome]
    y_valid = valid[label].to_numpy(float)
    # Health scores are "higher is healthier": flip them for churn so Platt slopes stay positive.
    sign = -1.0 if outcome == "churn" else 1.0
    valid_scores = bl.health_scores(valid, config.baselines)
    test_scores = bl.health_scores(test, config.baselines)
    probabilities = {}
    for name, score in valid_scores.items():
        if np.std(score) == 0:
            logger.warning("baseline %s is constant on validation; reported as the base rate", name)
        slope, intercept = oriented_platt(sign * score, y_valid)
        if slope <= _MIN_BASELINE_SLOPE:
            logger.warning(
                "baseline %s ranks the validation %s cases the wrong way round; it keeps its own "
                "direction (higher is healthier) with base-rate probabilities", name, outcome,
            )
        probabilities[name] = _platt_probability(sign * test_scores[name], slope, intercept)
    if config.baselines.logistic_regression:
        pipeline = bl.logistic_regression(
            train, feature_names, config.baselines.logistic_c, config.train.random_state
        )
        pipeline.fit(bl.prepare_for_sklearn(train, feature_names), train[label].to_numpy(float))
        logit_valid = pipeline.decision_function(bl.prepare_for_sklearn(valid, feature_names))
        logit_test = pipeline.decision_function(bl.prepare_for_sklearn(test, feature_names))
        slope, intercept = fit_platt(logit_valid, y_valid)
        probabilities["logistic_regression"] = _platt_probability(logit_test, slope, intercept)
    return probabilities
