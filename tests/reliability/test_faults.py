"""Fault injection for `pes-ml score`: SIGKILL at named points and at random moments, a full disk,
an unreachable registry.

After every fault the run store must hold either the previous complete run or the new complete
run of the as_of — never a mix — and the next `pes-ml score` must succeed. The named points come
from ``PES_FAULT_STAGE=<stage>:<seconds>`` (see ``pes_ml.cli._install_fault_hook``): the job
announces the stage on stderr and sleeps there, and the test kills it.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scoring_jobs import (
    AS_OF,
    MARKER,
    Project,
    cli_env,
    committed_run,
    pes_ml,
    score_args,
    start_pes_ml,
    wait_for_text,
)

from pes_ml.store import RunStore

pytestmark = pytest.mark.slow

SCORE_STAGES = [
    "locked",
    "model_loaded",
    "ingested",
    "features_started",
    "features_built",
    "signature_checked",
    "churn_started",
    "churn_scored",
    "expansion_started",
    "expansion_scored",
    "reasons_ranked",
    "drift_checked",
    "change_attributed",
]
STORE_STAGES_BEFORE_COMMIT = [
    "validated",
    "scores_written",
    "reasons_written",
    "staged",
    "renamed",
    "pointer_written",
]
STORE_STAGES_AFTER_COMMIT = ["committed", "gc"]
# (stage, seconds to let the job run on past the stage before the kill): 0 kills while it sleeps
# at the stage; a delay kills in the middle of the next step (features, SHAP, the commit).
KILL_POINTS = [
    (stage, 0.0) for stage in SCORE_STAGES + STORE_STAGES_BEFORE_COMMIT + STORE_STAGES_AFTER_COMMIT
] + [("features_started", 1.5), ("churn_started", 0.2), ("validated", 0.05)]


def lock_is_free(store_path: Path, as_of: str = AS_OF) -> bool:
    from pes_ml.errors import RunInProgressError

    try:
        with RunStore(store_path).lock(as_of, timeout=0):
            return True
    except RunInProgressError:
        return False


@pytest.fixture(scope="module")
def fault_project(trained_project: Project, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A config whose run store holds one complete run of AS_OF; the kill tests share it in order."""
    tmp = tmp_path_factory.mktemp("faults")
    config = trained_project.config_for(tmp)
    done = pes_ml(*score_args(config))
    assert done.returncode == 0, done.stderr[-3000:]
    return config, tmp / "runs"


@pytest.mark.parametrize(
    ("stage", "delay"), KILL_POINTS, ids=[f"{s}+{d}s" if d else s for s, d in KILL_POINTS]
)
def test_sigkill_while_scoring_leaves_the_previous_or_the_new_complete_run(
    fault_project: tuple[Path, Path], tmp_path: Path, stage: str, delay: float
) -> None:
    config, store_path = fault_project
    before = committed_run(store_path)
    stderr = tmp_path / "stderr"
    pause = 0 if delay else 300
    proc = start_pes_ml(*score_args(config), stderr=stderr, env=cli_env(PES_FAULT_STAGE=f"{stage}:{pause}"))
    wait_for_text(stderr, MARKER + stage, proc)
    time.sleep(delay)
    proc.kill()
    proc.wait(timeout=60)

    after = committed_run(store_path)
    if stage in STORE_STAGES_AFTER_COMMIT:
        assert after != before  # killed after the commit point: the new run is whole
    elif not delay:
        assert after == before  # killed before the commit point: the previous run is untouched
    # With a delay the kill lands anywhere in the next step: either run is fine, a mix is not.
    assert lock_is_free(store_path)  # the kernel dropped the dead job's flock


def test_sigkill_at_random_moments_never_leaves_a_mixed_run(
    fault_project: tuple[Path, Path], tmp_path: Path, seed: int
) -> None:
    config, store_path = fault_project
    rng = random.Random(seed)
    outcomes = []
    for attempt in range(3):
        before = committed_run(store_path)
        stderr = tmp_path / f"stderr-{attempt}"
        proc = start_pes_ml(*score_args(config), stderr=stderr, env=cli_env(PES_FAULT_STAGE="locked:0"))
        wait_for_text(stderr, MARKER + "locked", proc)
        time.sleep(rng.uniform(0.0, 8.0))
        proc.kill()
        proc.wait(timeout=60)
        after = committed_run(store_path)  # whole, whichever run it is
        outcomes.append("previous" if after == before else "new")
        assert lock_is_free(store_path)
    assert len(outcomes) == 3


def test_the_next_score_after_the_kills_succeeds_and_removes_leftovers(
    fault_project: tuple[Path, Path],
) -> None:
    config, store_path = fault_project
    before = committed_run(store_path)
    done = pes_ml(*score_args(config))
    assert done.returncode == 0, done.stderr[-3000:]
    after = committed_run(store_path)
    assert after != before
    assert f"Run {after}:" in done.stdout
    partition = store_path / f"as_of={AS_OF}"
    assert sorted(p.name for p in partition.iterdir() if p.is_dir()) == [f"run={after}"]


# --- a full disk ------------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs for the run store (mounting needs root); skipped with the reason elsewhere."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip(
            "mounting a tmpfs needs root; tests/test_store.py::test_disk_full_simulated covers ENOSPC"
        )
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); test_store.py simulates ENOSPC")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_fails_clearly_and_keeps_the_previous_run(
    trained_project: Project, tmp_path: Path, small_disk: Path
) -> None:
    config = trained_project.config_for(tmp_path, store_path=small_disk / "runs")
    first = pes_ml(*score_args(config))
    assert first.returncode == 0, first.stderr[-3000:]
    before = committed_run(small_disk / "runs")
    # Leave a quarter of what one run takes: the lock file fits, the next run's files do not.
    run_bytes = sum(f.stat().st_size for f in (small_disk / "runs").rglob("run=*/*"))
    stat = os.statvfs(small_disk)
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * max(stat.f_bavail * stat.f_frsize - max(run_bytes // 4, 8192), 0))

    full = pes_ml(*score_args(config))

    assert full.returncode == 9, full.stderr[-3000:]
    assert "Traceback" not in full.stderr
    errors = [line for line in full.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1
    assert "ran out of disk space" in errors[0]
    assert "previous run is intact" in errors[0]
    assert committed_run(small_disk / "runs") == before
    assert not list((small_disk / "runs" / f"as_of={AS_OF}").glob(".staging-*"))

    filler.unlink()
    again = pes_ml(*score_args(config))
    assert again.returncode == 0, again.stderr[-3000:]
    assert committed_run(small_disk / "runs") != before


# --- an unreachable registry -------------------------------------------------------------------------
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends: nothing listens there


@pytest.mark.parametrize("command", ["score", "models", "promote", "train"])
def test_an_unreachable_registry_is_one_clear_line_and_exit_code_11(
    trained_project: Project, tmp_path: Path, command: str
) -> None:
    config = trained_project.config_for(tmp_path)
    uri = f"http://127.0.0.1:{closed_port()}"
    env = cli_env(
        MLFLOW_TRACKING_URI=uri, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="5"
    )
    args = score_args(config) if command == "score" else [command, "--config", str(config)]
    started = time.monotonic()
    done = pes_ml(*args, env=env, timeout=300)
    elapsed = time.monotonic() - started

    assert done.returncode == 11, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1
    assert uri in errors[0]
    assert "cannot be reached" in errors[0]
    assert "MLFLOW_TRACKING_URI" in errors[0]
    assert elapsed < 120  # no minutes of retries
    assert not (tmp_path / "runs" / f"as_of={AS_OF}").exists()
