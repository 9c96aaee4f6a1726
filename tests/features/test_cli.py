"""`pes-ml features` on simulated data: ingests when needed, writes the FeatureFrame."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml
from typer.testing import CliRunner

from pes_ml.cli import app
from pes_ml.features import CATALOG


def test_features_command_writes_one_row_per_present_account_and_as_of(tmp_path: Path) -> None:
    from pes_ml.simulate import SimulationConfig, simulate_saas

    sim = tmp_path / "sim"
    simulate_saas(SimulationConfig(n_accounts=30, days=120, seed=3), sim)
    config = {
        "work_dir": str(tmp_path / "work"),
        "sources": {
            "events": {"path": str(sim / "events")},
            "subscriptions": {"path": str(sim / "subscriptions.parquet")},
            "accounts": {"path": str(sim / "accounts.parquet")},
        },
    }
    conf = tmp_path / "pes.yaml"
    conf.write_text(yaml.safe_dump(config))
    out = tmp_path / "features.parquet"
    result = CliRunner().invoke(
        app, ["features", "--config", str(conf), "--as-of", "2024-03-01", "--as-of", "2024-04-01",
              "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    features = pd.read_parquet(out)
    assert set(features["as_of"].dt.strftime("%Y-%m-%d")) == {"2024-03-01", "2024-04-01"}
    assert not features.duplicated(["account_id", "as_of"]).any()
    assert {spec.name for spec in CATALOG} <= set(features.columns)


def test_features_command_names_a_missing_config(tmp_path: Path) -> None:
    args = ["features", "--config", str(tmp_path / "nope.yaml"), "--as-of", "2024-01-01"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "does not exist" in result.output
