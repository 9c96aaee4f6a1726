"""Every case of the bad-input corpus, run through ``pes-ml validate`` as a user would.

Unusable inputs exit non-zero with one ``error:`` line naming the file, column or
key and the fix, and leave the previous outputs untouched; usable-but-dirty
inputs exit 0 with each row loaded, quarantined, deduplicated or flagged for the
right reason, and ``read = loaded + quarantined + deduplicated``. The cases run
in process (Typer's runner, the same code path as the executable); a few also run
through the installed ``pes-ml`` executable.
"""

from __future__ import annotations

import logging
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from pes_ml.cli import app

from .corpus import (
    CASES,
    SENTINELS,
    Case,
    Outcome,
    read_outcome,
    run_subprocess,
    seed_previous_outputs,
    write_config,
)

runner = CliRunner()
EXECUTABLE = Path(sys.executable).with_name("pes-ml")
BY_NAME = {case.name: case for case in CASES}


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    # The CLI configures the root logger for its own run; give pytest's handlers back afterwards.
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def run_in_process(case: Case, root: Path) -> Outcome:
    config = write_config(case, root)
    if case.exit_code != 0:
        seed_previous_outputs(root)
    result = runner.invoke(app, ["validate", "--config", str(config)])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return read_outcome(root, result.exit_code, result.stdout, result.stderr)


def assert_outcome(case: Case, outcome: Outcome, root: Path) -> None:
    output = outcome.stdout + outcome.stderr
    assert "Traceback" not in output, output
    assert outcome.exit_code == case.exit_code, output
    work = root / "work"
    if case.exit_code != 0:
        # One clear line: what is wrong, where, and what to do.
        assert len(outcome.error_lines) == 1, outcome.stderr
        line = outcome.error_lines[0]
        for fragment in case.message:
            assert fragment in line, f"{fragment!r} not in {line!r}"
        # No partial output: the previous load's files are byte-for-byte intact, nothing new was written.
        for rel, data in SENTINELS.items():
            assert (work / rel).read_bytes() == data, rel
        # The work-dir lock file stays by design (deleting a flock file is unsafe); it holds no data.
        files = (p.relative_to(work) for p in work.rglob("*") if p.is_file())
        written = sorted(str(p) for p in files if p.parts[0] != ".locks")
        assert written == sorted(SENTINELS), written
        assert not (work / ".staging").exists()
        return
    assert outcome.error_lines == [], outcome.stderr
    assert outcome.counts == case.counts, outcome.counts
    assert outcome.reasons == case.reasons, outcome.reasons
    for table, (read, loaded, quarantined, deduplicated) in outcome.counts.items():
        assert read == loaded + quarantined + deduplicated, table
        clean = pd.read_parquet(work / "clean" / f"{table}.parquet")
        quarantine = pd.read_parquet(work / "quarantine" / f"{table}.parquet")
        assert len(clean) == loaded
        assert len(quarantine) == quarantined
        assert quarantine["reason"].notna().all()
        assert quarantine["source_row"].is_unique
        assert clean["account_id"].notna().all()
        for reason, rows in quarantine["reason"].value_counts().items():
            assert case.reasons[(table, str(reason))] == rows
    if case.check is not None:
        tables = {t: pd.read_parquet(work / "clean" / f"{t}.parquet") for t in outcome.counts}
        case.check(tables)


def test_the_corpus_has_at_least_30_distinct_cases() -> None:
    assert len(BY_NAME) == len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_case(case: Case, tmp_path: Path) -> None:
    assert_outcome(case, run_in_process(case, tmp_path), tmp_path)


@pytest.mark.skipif(not EXECUTABLE.exists(), reason=f"{EXECUTABLE} is not installed (pip install -e .)")
@pytest.mark.parametrize(
    "name", ["renamed_column", "truncated_gzip", "null_nan_empty_strings", "config_typo_key", "all_rows_bad"]
)
def test_bad_input_case_through_the_installed_executable(name: str, tmp_path: Path) -> None:
    case = BY_NAME[name]
    assert_outcome(case, run_subprocess(case, tmp_path, str(EXECUTABLE)), tmp_path)


def test_a_failed_load_after_a_good_one_keeps_the_good_tables(tmp_path: Path) -> None:
    good, bad = BY_NAME["duplicated_rows"], BY_NAME["all_rows_bad"]
    assert run_in_process(good, tmp_path).exit_code == 0
    clean = tmp_path / "work" / "clean" / "events.parquet"
    before = clean.read_bytes()
    # The same config, now pointing at an export whose rows are all bad.
    shutil.rmtree(tmp_path / "input")
    bad.build(tmp_path / "input")
    result = runner.invoke(app, ["validate", "--config", str(tmp_path / "pes.yaml")])
    assert result.exit_code == 3, result.output
    assert clean.read_bytes() == before
