"""`pes-ml features` on simulated data: ingests when needed, writes the FeatureFrame."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from pes_ml.cli import app
from pes_ml.features import CATALOG, CATALOG_VERSION


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
    assert features.attrs["catalog_version"] == CATALOG_VERSION  # the frame's attrs travel in the file
    assert features.attrs["event_types"]

    # A clean table that cannot be read (cut short here) is one line that says how to rebuild it.
    clean = tmp_path / "work" / "clean" / "subscriptions.parquet"
    clean.write_bytes(clean.read_bytes()[:100])
    result = CliRunner().invoke(app, ["features", "--config", str(conf), "--as-of", "2024-03-01",
                                      "--out", str(out)])
    assert result.exit_code == 3, result.output
    assert "The clean subscriptions table" in result.output
    assert "cannot be read" in result.output
    assert "pes-ml validate" in result.output
    assert "Traceback" not in result.output
    # Training reads the same tables first: the same message, not the engine's own error.
    from pes_ml.config import parse_config
    from pes_ml.errors import DataContractError
    from pes_ml.training import run_training

    unreadable = r"clean subscriptions table .* cannot be read .*pes-ml validate"
    with pytest.raises(DataContractError, match=unreadable):
        run_training(parse_config(config))


def test_features_command_names_a_missing_config(tmp_path: Path) -> None:
    args = ["features", "--config", str(tmp_path / "nope.yaml"), "--as-of", "2024-01-01"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "does not exist" in result.output


@pytest.mark.parametrize("as_of", ["01/06/2024", "notadate", "2024-06-01,2024-07-01", "2500-01-01", "now"])
def test_features_command_refuses_a_date_it_cannot_read_before_any_work(tmp_path: Path, as_of: str) -> None:
    # The config does not even exist: the date is checked first, and 01/06/2024 is not guessed at.
    args = ["features", "--config", str(tmp_path / "nope.yaml"), "--as-of", "2024-05-01", "--as-of", as_of]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 3, result.output
    assert "--as-of" in result.output  # names the option...
    assert "2024-06-01" in result.output  # ...and the format it expects
    assert isinstance(result.exception, SystemExit)  # one line, no traceback


def test_features_command_refuses_an_out_path_it_cannot_write_before_any_work(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    for out, says in ((folder, "is a folder"), (a_file / "features.parquet", "is a file")):
        args = ["features", "--config", str(tmp_path / "nope.yaml"), "--as-of", "2024-05-01",
                "--out", str(out)]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "--out" in result.output
        assert says in result.output


def test_features_command_ingests_again_when_the_configs_sources_changed(tmp_path: Path) -> None:
    from pes_ml.config import parse_config
    from pes_ml.ingest import ingest_needed
    from pes_ml.simulate import SimulationConfig, simulate_saas

    sim = tmp_path / "sim"
    simulate_saas(SimulationConfig(n_accounts=20, days=120, seed=5), sim)
    sources = {"events": {"path": str(sim / "events")},
               "subscriptions": {"path": str(sim / "subscriptions.parquet")}}
    conf = tmp_path / "pes.yaml"
    conf.write_text(yaml.safe_dump({"work_dir": str(tmp_path / "work"), "sources": sources}))
    out = tmp_path / "features.parquet"
    args = ["features", "--config", str(conf), "--as-of", "2024-04-01", "--out", str(out)]
    assert CliRunner().invoke(app, args).exit_code == 0
    assert pd.read_parquet(out).attrs["mode"] == "subscription"
    assert ingest_needed(parse_config({"work_dir": str(tmp_path / "work"), "sources": sources})) is None

    # The subscriptions source is taken out of the config: the clean table of the last ingest must
    # not be read as if it were still configured (it would keep subscription mode).
    del sources["subscriptions"]
    changed = {"work_dir": str(tmp_path / "work"), "sources": sources}
    assert "sources changed" in (ingest_needed(parse_config(changed)) or "")
    conf.write_text(yaml.safe_dump(changed))
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert pd.read_parquet(out).attrs["mode"] == "activity"
    assert not (tmp_path / "work" / "clean" / "subscriptions.parquet").exists()
    assert ingest_needed(parse_config(changed)) is None
