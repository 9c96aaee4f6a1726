"""Tracking, registry and promotion gate on a tmp_path SQLite store (no network)."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from synthetic_snapshots import FEATURES, make_config, make_snapshots

from pes_ml.config import DatasetConfig, load_config
from pes_ml.dataset import split_by_time
from pes_ml.errors import ConfigError, ModelNotFoundError, PromotionRejected
from pes_ml.registry import (
    CHALLENGER,
    CHAMPION,
    champion_version,
    list_versions,
    load_pes_model,
    promote,
    register,
)
from pes_ml.tracking import configure_tracking, log_training_run
from pes_ml.train import train_models

pytestmark = pytest.mark.slow

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
# A deliberately worse model: one stump per round, two rounds, only two weak features.
WORSE_SPEC = {
    **SPEC,
    "lightgbm": {**SPEC["lightgbm"], "num_leaves": 2, "learning_rate": 0.01},
    "num_boost_round": 2,
}


def train_and_register(config, spec, features=FEATURES, log_plots=False):
    split = split_by_time(make_snapshots(7), DatasetConfig(), 30)
    result = train_models(split, features, config, spec=spec, metadata={"test_as_of": "synthetic"})
    run_id, uri = log_training_run(result, config, catalog_version="test", data_fingerprint="abc")
    return result, run_id, register(config, uri, run_id)


@pytest.fixture
def config(tmp_path):
    return make_config(tmp_path, tracking={"log_plots": False})


def test_pyfunc_round_trips_through_the_registry(config, tmp_path):
    result, run_id, version = train_and_register(config, SPEC, log_plots=True)
    promote(config)
    features = result.test_snapshots.head(25)
    loaded = mlflow.pyfunc.load_model(f"models:/{config.tracking.model_name}@{CHAMPION}")
    scores = loaded.predict(features)
    direct = result.model.predict(features)
    np.testing.assert_allclose(scores["churn_probability"], direct["churn_probability"], rtol=1e-12)
    np.testing.assert_allclose(scores["pes"], direct["pes"], rtol=1e-12)
    assert scores["tier"].tolist() == direct["tier"].tolist()
    assert scores["account_id"].tolist() == features["account_id"].tolist()
    model, number = load_pes_model(config, alias=CHAMPION)
    assert number == version
    assert model.outcomes["churn"].platt_slope == result.model.outcomes["churn"].platt_slope
    assert "__pes__" in model.reference
    assert "dau_mau_30d" in model.reference


def test_first_promotion_needs_to_beat_baselines_and_writes_a_model_card(config, tmp_path):
    _, _, version = train_and_register(config, SPEC)
    decision = promote(config)
    assert decision.promoted
    assert champion_version(config) == version
    card = decision.card_path.read_text()
    assert "logistic_regression" in card
    assert "Platt" in card
    assert decision.card_path.parent == tmp_path / "models" / config.tracking.model_name
    versions = list_versions(config)
    assert versions.loc[versions["version"] == version, "aliases"].item() == f"{CHALLENGER},{CHAMPION}"
    # Promoting the champion again changes nothing: refused, and it is still recorded as promoted.
    with pytest.raises(PromotionRejected, match="already @champion: nothing to promote"):
        promote(config)
    versions = list_versions(config).set_index("version")
    assert versions.loc[version, "promotion"] == "promoted"


def test_promotion_gate_refuses_a_deliberately_worse_model(config):
    train_and_register(config, SPEC)
    promote(config)
    champion = champion_version(config)
    _, _, worse = train_and_register(config, WORSE_SPEC, features=["seats", "tenure_days"])
    with pytest.raises(PromotionRejected, match="gate") as excinfo:
        promote(config)
    assert any("roc_auc" in gate for gate in excinfo.value.failed_gates)
    assert champion_version(config) == champion  # @champion did not move
    versions = list_versions(config).set_index("version")
    assert versions.loc[worse, "promotion"] == "rejected"


@pytest.mark.parametrize("uri", ["sqlite:///{tmp}/not_a_database", "notascheme://x"])
def test_a_tracking_uri_mlflow_cannot_open_is_a_config_error(tmp_path, uri):
    (tmp_path / "not_a_database").write_text("plain text")
    config = make_config(tmp_path, tracking={"tracking_uri": uri.format(tmp=tmp_path)})
    with pytest.raises(ConfigError, match="cannot be opened .* sqlite:///mlflow.db"):
        list_versions(config)


def test_promote_without_challenger_raises_model_not_found(config):
    with pytest.raises(ModelNotFoundError, match="pes-ml train"):
        promote(config)


def test_cli_train_promote_models_end_to_end_on_simulated_data(tmp_path, seed, monkeypatch):
    from typer.testing import CliRunner

    from pes_ml.cli import app
    from pes_ml.simulate import SimulationConfig, simulate_saas

    simulate_saas(SimulationConfig(n_accounts=400, days=420, seed=seed), tmp_path / "sim")
    config_path = tmp_path / "pes.yaml"
    config_path.write_text(
        f"""
work_dir: {tmp_path / "work"}
sources:
  events: {{path: {tmp_path / "sim" / "events"}}}
  subscriptions: {{path: {tmp_path / "sim" / "subscriptions.parquet"}}}
  accounts: {{path: {tmp_path / "sim" / "accounts.parquet"}}}
labels: {{horizon_days: 60}}
dataset: {{frequency_days: 30, validation_dates: 2, test_dates: 2}}
train: {{bootstrap_rounds: 20, min_positives: 5}}
tracking:
  tracking_uri: sqlite:///{tmp_path}/mlflow.db
  artifact_location: {tmp_path / "mlartifacts"}
  model_card_dir: {tmp_path / "models"}
  log_plots: true
"""
    )
    # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI, which the CLI honours: earlier tests'
    # stores must not leak into this one
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    runner = CliRunner()
    trained = runner.invoke(app, ["train", "--config", str(config_path)])
    assert trained.exit_code == 0, trained.output
    assert "registered pes v1 as @challenger" in trained.output, trained.output[-600:]
    promoted = runner.invoke(app, ["promote", "--config", str(config_path), "--force"])
    assert promoted.exit_code == 0, promoted.output
    listed = runner.invoke(app, ["models", "--config", str(config_path)])
    assert listed.exit_code == 0
    assert "champion" in listed.output
    # the champion scores a real FeatureFrame with reasons from the catalog
    configure_tracking(load_config(config_path).tracking)
    loaded = mlflow.pyfunc.load_model("models:/pes@champion")
    snapshots = pd.read_parquet(
        mlflow.artifacts.download_artifacts(
            run_id=loaded.metadata.run_id, artifact_path="evaluation/test_snapshots.parquet"
        )
    )
    scores = loaded.predict(snapshots.head(10))
    assert scores["pes"].between(0, 100).all()
    assert (scores["reason_1"].str.len() > 0).any()
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(loaded.metadata.run_id, "plots")}
    assert "plots/churn_shap_beeswarm.png" in artifacts
    assert "plots/churn_calibration.png" in artifacts
