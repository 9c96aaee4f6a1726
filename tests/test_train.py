"""Training on synthetic snapshots: calibrated boosters, baselines, encoder, spec checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from synthetic_snapshots import FEATURES, make_config, make_snapshots

from pes_ml.config import DatasetConfig
from pes_ml.dataset import split_by_time
from pes_ml.errors import ConfigError
from pes_ml.evaluate import expected_calibration_error
from pes_ml.model import FeatureEncoder, PesModel
from pes_ml.train import fit_platt, load_model_spec, train_models

SPEC = {
    "lightgbm": {
        "objective": "binary",
        "learning_rate": 0.1,
        "num_leaves": 7,
        "min_data_in_leaf": 20,
        "verbose": -1,
        "num_threads": 1,
    },
    "num_boost_round": 80,
    "early_stopping_rounds": 15,
    "overrides": {},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("train")
    config = make_config(tmp_path)
    split = split_by_time(make_snapshots(7), DatasetConfig(validation_dates=2, test_dates=2), 30)
    return config, split, train_models(split, FEATURES, config, spec=SPEC)


def test_train_models_beat_base_rate_and_report_baselines(trained):
    _, _, result = trained
    churn = result.reports["churn"].metrics
    assert churn["model"]["roc_auc"] > 0.75
    assert churn["model"]["log_loss"] < churn["model"]["base_log_loss"]
    assert {
        "classic_pes",
        "days_since_last_event",
        "logistic_regression",
        "rule:engaged",
        "rule:scorecard",
    } <= set(churn)
    assert churn["model"]["roc_auc_low"] <= churn["model"]["roc_auc"] <= churn["model"]["roc_auc_high"]
    assert "expansion" in result.reports
    assert "conversion" in result.skipped  # no trial accounts in this data


def test_calibration_keeps_or_improves_ece_on_held_out_data(trained, seed):
    _, split, result = trained
    churn = result.model.outcomes["churn"]
    test_x = result.model.encoder.transform(split.test)
    y = split.test["churned"].to_numpy(float)
    raw = churn.raw(test_x)
    uncalibrated = 1 / (1 + np.exp(-raw))
    calibrated = churn.probability(raw)
    assert expected_calibration_error(y, calibrated) <= expected_calibration_error(y, uncalibrated) + 0.005


def test_platt_fixes_a_deliberately_miscalibrated_score(seed):
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(-2, 1.5, 20_000)
    y = (rng.random(20_000) < 1 / (1 + np.exp(-true_logit))).astype(float)
    distorted = 0.4 * true_logit + 1.0  # overconfident-in-the-middle, shifted score
    slope, intercept = fit_platt(distorted[:10_000], y[:10_000])
    before = expected_calibration_error(y[10_000:], 1 / (1 + np.exp(-distorted[10_000:])))
    after = expected_calibration_error(
        y[10_000:], 1 / (1 + np.exp(-(slope * distorted[10_000:] + intercept)))
    )
    assert after < before
    assert after < 0.02
    np.testing.assert_allclose([slope, intercept], [2.5, -2.5], atol=0.25)


def test_pes_is_linear_in_calibrated_log_odds(trained):
    _, split, result = trained
    churn = result.model.outcomes["churn"]
    raw = churn.raw(result.model.encoder.transform(split.test.head(50)))
    points = churn.points(raw)
    expected = 50 + (10 / np.log(2)) * churn.platt_slope * (churn.base_value - raw)
    np.testing.assert_allclose(points, np.clip(expected, 0, 100))


def test_model_predict_returns_scores_and_round_trips_json(trained):
    _, split, result = trained
    scores = result.model.predict(split.test.head(20))
    assert {
        "churn_probability",
        "expansion_probability",
        "pes",
        "expansion_score",
        "tier",
        "reason_1",
    } <= set(scores.columns)
    assert scores["churn_probability"].between(0, 1).all()
    assert set(scores["tier"]) <= {"at_risk", "watch", "healthy", "expand"}
    again = PesModel.from_json(result.model.to_json()).predict(split.test.head(20))
    pd.testing.assert_frame_equal(scores, again)


def test_encoder_maps_unseen_category_to_missing():
    frame = pd.DataFrame({"plan": pd.Series(["a", "b", None], dtype="str"), "x": [1, 2, 3]})
    encoder = FeatureEncoder.fit(frame, ["plan", "x"])
    matrix = encoder.transform(pd.DataFrame({"plan": pd.Series(["b", "zzz"], dtype="str"), "x": [1.0, None]}))
    assert matrix["plan"].tolist()[0] == 1.0
    assert np.isnan(matrix["plan"].tolist()[1])
    assert encoder.unseen_levels(pd.DataFrame({"plan": ["zzz"], "x": [0]})) == {"plan": ["zzz"]}


def test_spec_with_scale_pos_weight_is_refused(tmp_path):
    config = make_config(tmp_path)
    split = split_by_time(make_snapshots(1, n_accounts=200), DatasetConfig(), 30)
    bad = {**SPEC, "lightgbm": {**SPEC["lightgbm"], "scale_pos_weight": 10}}
    with pytest.raises(ConfigError, match="scale_pos_weight"):
        train_models(split, FEATURES, config, spec=bad)


def test_repository_model_spec_loads():
    spec = load_model_spec("models/pes.yaml")
    assert spec["lightgbm"]["objective"] == "binary"
    assert "is_unbalance" not in spec["lightgbm"]


def test_rule_score_on_unknown_feature_names_the_field(tmp_path):
    config = make_config(
        tmp_path,
        baselines={
            "rule_scores": [{"name": "r", "kind": "binary", "criteria": [{"feature": "nope", "value": 1}]}]
        },
    )
    split = split_by_time(make_snapshots(1, n_accounts=200), DatasetConfig(), 30)
    with pytest.raises(ConfigError, match="'nope'"):
        train_models(split, FEATURES, config, spec=SPEC)


def test_a_baseline_rule_keeps_its_direction_when_validation_would_reverse_it() -> None:
    from sklearn.metrics import roc_auc_score

    from pes_ml.train import _platt_probability, oriented_platt

    rng = np.random.default_rng(5)
    score = rng.normal(size=400)
    y = (rng.random(400) < 1 / (1 + np.exp(-2 * score))).astype(float)  # higher score, more outcome
    slope, _ = oriented_platt(score, y)
    assert slope > 1.0  # a fitted, positive slope

    reversed_slope, intercept = oriented_platt(-score, y)  # validation says the rule is backwards
    assert reversed_slope == pytest.approx(1e-9)
    test_score = rng.normal(size=200)
    probabilities = _platt_probability(test_score, reversed_slope, intercept)
    np.testing.assert_allclose(probabilities, y.mean(), rtol=1e-6)  # base-rate probabilities
    labels = (test_score > 0).astype(float)
    # ... but the ranking on test is the rule's own: same AUC as the raw score.
    assert roc_auc_score(labels, probabilities) == pytest.approx(roc_auc_score(labels, test_score))
