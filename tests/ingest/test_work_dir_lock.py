"""One ingest (or clean-table reader) per work_dir: ingest and training take the work-dir lock."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import pes_ml.ingest.load as load
from pes_ml.config import PesConfig
from pes_ml.errors import RunInProgressError
from pes_ml.ingest import ingest


@pytest.fixture
def config(tmp_path: Path) -> PesConfig:
    events = pd.DataFrame({
        "account_id": ["a1", "a2"], "user_id": ["u1", "u2"], "event": ["login", "login"],
        "timestamp": pd.to_datetime(["2024-01-02", "2024-01-03"], utc=True),
    })
    events.to_parquet(tmp_path / "events.parquet", index=False)
    return PesConfig.model_validate({
        "sources": {"events": {"path": str(tmp_path / "events.parquet")}}, "work_dir": str(tmp_path / "work"),
    })


@pytest.fixture
def other_job_holds_the_lock(config: PesConfig, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Another process holding ``<work_dir>/.locks/ingest.lock``; this process waits at most 0.5 s."""
    monkeypatch.setattr(load, "INGEST_LOCK_TIMEOUT_SECONDS", 0.5)
    lock = Path(config.work_dir) / ".locks" / "ingest.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from pes_ml.locking import run_lock
            with run_lock(Path({str(lock)!r}), "another job"):
                print("held", flush=True)
                time.sleep(60)
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.usefixtures("other_job_holds_the_lock")
def test_ingest_waits_for_another_jobs_ingest_in_the_same_work_dir(config: PesConfig) -> None:
    with pytest.raises(RunInProgressError, match="An ingest into .* is already in progress"):
        ingest(config)
    assert not (Path(config.work_dir) / "clean").exists()


@pytest.mark.usefixtures("other_job_holds_the_lock")
def test_training_does_not_read_the_clean_tables_while_another_job_ingests(config: PesConfig) -> None:
    from pes_ml.training import run_training

    with pytest.raises(RunInProgressError, match="An ingest into .* is already in progress"):
        run_training(config)


def test_the_lock_is_free_again_after_an_ingest(config: PesConfig) -> None:
    assert ingest(config).balanced
    assert ingest(config).balanced  # re-entrant and released: a second ingest runs
