"""Fixtures of the report tests: a sample run store (3 runs, hostile names) and its built report."""

from __future__ import annotations

from pathlib import Path

import pytest

from pes_ml.report import build_report
from pes_ml.report.sample import write_sample_store
from pes_ml.store import RunStore

AS_OF_DATES = ("2024-04-01", "2024-05-01", "2024-06-01")
N_ACCOUNTS = 60


@pytest.fixture(scope="session")
def sample_store(tmp_path_factory: pytest.TempPathFactory) -> RunStore:
    """Three committed runs of 60 accounts; a few names, segments, plans and event types are hostile HTML."""
    return write_sample_store(
        tmp_path_factory.mktemp("report-store") / "runs", N_ACCOUNTS, AS_OF_DATES, seed=11, hostile=True
    )


@pytest.fixture(scope="session")
def report_dir(sample_store: RunStore, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of the latest run, built once for the session (tests must not modify it)."""
    index = build_report(sample_store, tmp_path_factory.mktemp("report") / "site")
    return index.parent
