"""Two `pes-ml score` jobs at once: the same as_of is exclusive (fail fast, or wait), different
as_of dates run side by side, and the run store stays consistent throughout."""

from __future__ import annotations

from pathlib import Path

import pytest
from scoring_jobs import (
    AS_OF,
    MARKER,
    OTHER_AS_OF,
    Project,
    cli_env,
    committed_run,
    score_args,
    start_pes_ml,
    wait_for_text,
)

pytestmark = pytest.mark.slow


def finish(proc, timeout: float = 900) -> int:  # type: ignore[no-untyped-def]
    return int(proc.wait(timeout=timeout))


def run_id_in(stdout: Path) -> str:
    text = stdout.read_text(encoding="utf-8")
    return text.split("Run ", 1)[1].split(":", 1)[0]


def test_a_second_job_for_the_same_as_of_exits_8_with_run_in_progress(
    trained_project: Project, tmp_path: Path
) -> None:
    config = trained_project.config_for(tmp_path)
    # The first job holds the as_of lock and pauses 20 s there, so the second surely meets it.
    first = start_pes_ml(
        *score_args(config), stderr=tmp_path / "first.err", env=cli_env(PES_FAULT_STAGE="locked:20")
    )
    wait_for_text(tmp_path / "first.err", MARKER + "locked", first)
    second = start_pes_ml(*score_args(config), stderr=tmp_path / "second.err")

    assert finish(second) == 8
    message = (tmp_path / "second.err").read_text()
    assert "Traceback" not in message
    assert f"A scoring run for as_of {AS_OF} is already in progress (pid {first.pid} " in message
    assert finish(first) == 0, (tmp_path / "first.err").read_text()[-3000:]
    committed_run(tmp_path / "runs")


def test_with_a_lock_timeout_the_second_job_waits_and_commits_after_the_first(
    trained_project: Project, tmp_path: Path
) -> None:
    config = trained_project.config_for(tmp_path, store={"lock_timeout_seconds": 900})
    first = start_pes_ml(
        *score_args(config),
        stderr=tmp_path / "first.err",
        stdout=tmp_path / "first.out",
        env=cli_env(PES_FAULT_STAGE="locked:5"),
    )
    wait_for_text(tmp_path / "first.err", MARKER + "locked", first)
    second = start_pes_ml(*score_args(config), stderr=tmp_path / "second.err", stdout=tmp_path / "second.out")

    assert finish(first) == 0, (tmp_path / "first.err").read_text()[-3000:]
    assert finish(second) == 0, (tmp_path / "second.err").read_text()[-3000:]
    first_run, second_run = run_id_in(tmp_path / "first.out"), run_id_in(tmp_path / "second.out")
    assert first_run != second_run
    # One committed run per as_of: the later commit replaced the earlier one whole.
    assert committed_run(tmp_path / "runs") == second_run


def test_two_jobs_for_different_as_of_dates_run_at_once_and_both_commit(
    trained_project: Project, tmp_path: Path
) -> None:
    config = trained_project.config_for(tmp_path)
    # Started together, so they also ingest into the shared work_dir at the same time.
    first = start_pes_ml(
        *score_args(config, AS_OF), stderr=tmp_path / "first.err", stdout=tmp_path / "first.out"
    )
    second = start_pes_ml(
        *score_args(config, OTHER_AS_OF), stderr=tmp_path / "second.err", stdout=tmp_path / "second.out"
    )
    assert first.poll() is None  # still running when the second starts

    assert finish(first) == 0, (tmp_path / "first.err").read_text()[-3000:]
    assert finish(second) == 0, (tmp_path / "second.err").read_text()[-3000:]
    assert committed_run(tmp_path / "runs", AS_OF) == run_id_in(tmp_path / "first.out")
    assert committed_run(tmp_path / "runs", OTHER_AS_OF) == run_id_in(tmp_path / "second.out")
