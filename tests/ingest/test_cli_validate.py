"""`pes-ml validate --config` prints the reconciliation and exits non-zero on a broken contract."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from pes_ml.cli import app
from pes_ml.errors import DataContractError

from .conftest import write_text

runner = CliRunner()


def write_config(tmp_path: Path, events: Path) -> Path:
    config = {"work_dir": str(tmp_path / "work"), "sources": {"events": {"path": str(events)}}}
    return write_text(tmp_path / "pes.yaml", yaml.safe_dump(config))


def test_validate_prints_the_reconciliation_table(tmp_path: Path) -> None:
    events = write_text(
        tmp_path / "events.csv",
        "account_id,event,timestamp\na,login,2024-01-01\na,login,2024-01-01\n,login,2024-01-01\n",
    )
    result = runner.invoke(app, ["validate", "--config", str(write_config(tmp_path, events))])
    assert result.exit_code == 0, result.output
    assert "Reconciliation" in result.output
    assert "missing account_id" in result.output
    assert "exact duplicate" in result.output
    assert "yes" in result.output  # balanced
    assert (tmp_path / "work" / "clean" / "events.parquet").exists()


def test_validate_strict_fails_when_rows_were_quarantined(tmp_path: Path) -> None:
    events = write_text(tmp_path / "events.csv", "account_id,event,timestamp\n,login,2024-01-01\n")
    result = runner.invoke(app, ["validate", "--strict", "--config", str(write_config(tmp_path, events))])
    assert result.exit_code == 3


def test_validate_exits_non_zero_with_one_clear_line_on_a_broken_contract(tmp_path: Path) -> None:
    events = write_text(tmp_path / "events.csv", "account_id,event,event_time\na,login,2024-01-01\n")
    result = runner.invoke(app, ["validate", "--config", str(write_config(tmp_path, events))])
    assert result.exit_code == DataContractError.exit_code
    assert "Required column 'timestamp'" in result.output
    assert "sources.events.columns.timestamp" in result.output
    assert "Traceback" not in result.output
