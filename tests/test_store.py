"""The run store: atomic and idempotent writes, crash safety, locks, disk-full, history."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pes_ml import store as store_module
from pes_ml.config import parse_config
from pes_ml.errors import ConfigError, DataContractError, RunInProgressError, StoreError
from pes_ml.store import REASON_REQUIRED, RunStore, as_of_key

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
FEATURES = ("active_users_30d", "dau_mau_30d", "days_since_last_event", "seats", "mrr")


def make_scores(as_of: str, marker: float, n: int = 4, seed: int = 0) -> pd.DataFrame:
    """n accounts whose pes is ``marker``; other columns random so files do not compress away."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "account_id": [f"acc-{i:06d}" for i in range(n)],
            "as_of": pd.Timestamp(as_of, tz="UTC"),
            "churn_probability": rng.random(n),
            "expansion_probability": rng.random(n),
            "pes": float(marker),
            "expansion_score": rng.random(n) * 100,
            "tier": rng.choice(["at-risk", "watch", "healthy", "expand"], n),
            "model_name": "pes",
            "model_version": "3",
        }
    )


def make_reasons(as_of: str, marker: float, n: int = 4, seed: int = 0) -> pd.DataFrame:
    """The long SHAP table of ``make_scores``: every account x feature, pes_points = ``marker``."""
    rng = np.random.default_rng(seed + 1)
    rows = n * len(FEATURES)
    return pd.DataFrame(
        {
            "account_id": np.repeat([f"acc-{i:06d}" for i in range(n)], len(FEATURES)),
            "as_of": pd.Timestamp(as_of, tz="UTC"),
            "model": "churn",
            "feature": np.tile(FEATURES, n),
            "group": "adoption",
            "value": rng.random(rows),
            "shap_log_odds": rng.normal(size=rows),
            "pes_points": float(marker),
        }
    )


def write(store: RunStore, as_of: str, marker: float, n: int = 4, seed: int = 0) -> str:
    return store.write_run(
        as_of, make_scores(as_of, marker, n, seed), make_reasons(as_of, marker, n, seed), {"marker": marker}
    )


def assert_complete_run(store: RunStore, as_of: str, allowed: set[float]) -> float:
    """The committed run of ``as_of`` is whole and from one write: return its marker."""
    info = store.latest_run()
    assert info is not None
    assert info.as_of.isoformat() == as_of
    marker = store.read_manifest(info.run_id)["marker"]
    assert marker in allowed
    scores, reasons = store.read_scores(info.run_id), store.read_reasons(info.run_id)
    assert (scores["pes"] == marker).all()
    assert (reasons["pes_points"] == marker).all()
    assert (scores["run_id"] == info.run_id).all()
    assert len(scores) == info.n_scores
    assert len(reasons) == info.n_reasons == info.n_scores * len(FEATURES)
    assert store.verify() == []
    return float(marker)


def run_folders(store: RunStore, as_of: str) -> list[str]:
    return sorted(p.name for p in (store.path / f"as_of={as_of}").iterdir() if p.is_dir())


def child(code: str, *args: str) -> subprocess.Popen[str]:
    """A Python child process with the package and this test module importable."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)])}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 60.0, text: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        if proc.poll() is not None:
            raise AssertionError(f"child exited early ({proc.returncode}): {proc.stderr.read()}")  # type: ignore[union-attr]
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"timed out waiting for {path}")


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)


# --- writing and reading ----------------------------------------------------------------------
def test_write_run_round_trips_scores_reasons_and_manifest(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    scores, reasons = make_scores("2024-06-01", 61.5), make_reasons("2024-06-01", 61.5)
    run_id = store.write_run("2024-06-01", scores, reasons, {"models": {"churn": "3"}, "marker": 61.5})

    pd.testing.assert_frame_equal(store.read_scores(run_id).drop(columns="run_id"), scores)
    pd.testing.assert_frame_equal(store.read_reasons(run_id), reasons)
    manifest = store.read_manifest(run_id)
    assert manifest["models"] == {"churn": "3"}
    assert manifest["run"]["rows"] == {"scores": 4, "reasons": 20}
    runs = store.runs()
    assert runs[["run_id", "model_name", "model_version", "n_scores"]].values.tolist() == [
        [run_id, "pes", "3", 4]
    ]
    assert str(runs.loc[0, "as_of"]) == "2024-06-01"


def test_write_run_names_the_missing_columns(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    scores = make_scores("2024-06-01", 1).drop(columns=["pes", "tier"])
    with pytest.raises(DataContractError, match=r"scores frame is missing required column\(s\) pes, tier"):
        store.write_run("2024-06-01", scores, make_reasons("2024-06-01", 1), {})
    reasons = make_reasons("2024-06-01", 1).drop(columns="shap_log_odds")
    with pytest.raises(DataContractError, match="reasons frame is missing .* shap_log_odds"):
        store.write_run("2024-06-01", make_scores("2024-06-01", 1), reasons, {})
    assert store.runs().empty


def test_write_run_rejects_rows_of_another_as_of_and_repeated_accounts(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    with pytest.raises(
        DataContractError, match="rows for as_of 2024-06-01, but the run is for as_of 2024-07-01"
    ):
        store.write_run("2024-07-01", make_scores("2024-06-01", 1), make_reasons("2024-07-01", 1), {})
    twice = pd.concat([make_scores("2024-06-01", 1)] * 2)
    with pytest.raises(DataContractError, match="4 repeated account_id"):
        store.write_run("2024-06-01", twice, make_reasons("2024-06-01", 1), {})
    with pytest.raises(DataContractError, match="not JSON serialisable"):
        store.write_run(
            "2024-06-01", make_scores("2024-06-01", 1), make_reasons("2024-06-01", 1), {"x": object()}
        )


def test_as_of_must_be_a_date_at_midnight_utc() -> None:
    assert as_of_key("2024-06-01") == "2024-06-01"
    assert as_of_key(pd.Timestamp("2024-06-01", tz="UTC")) == "2024-06-01"
    with pytest.raises(DataContractError, match="midnight UTC"):
        as_of_key("2024-06-01T12:00:00")
    with pytest.raises(DataContractError, match="must be a date"):
        as_of_key("first of june")


def test_rerun_of_the_same_as_of_replaces_the_run_idempotently(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    first = write(store, "2024-06-01", 10)
    second = write(store, "2024-06-01", 20)

    assert store.runs()["run_id"].tolist() == [second]
    assert assert_complete_run(store, "2024-06-01", {20}) == 20
    assert run_folders(store, "2024-06-01") == [f"run={second}"]  # the old run is collected
    with pytest.raises(StoreError, match=f"No committed run '{first}'"):
        store.read_scores(first)


def test_latest_previous_run_and_history_follow_as_of(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    assert store.latest_run() is None
    assert store.history().empty
    with pytest.raises(StoreError, match="holds no committed run yet"):
        store.read_scores("latest")
    june = write(store, "2024-06-01", 40)
    august = write(store, "2024-08-01", 60)
    july = write(store, "2024-07-01", 50)  # written last, but not the latest as_of

    assert store.latest_run().run_id == august  # type: ignore[union-attr]
    assert store.previous_run("2024-08-01").run_id == july  # type: ignore[union-attr]
    assert store.previous_run("2024-07-01").run_id == june  # type: ignore[union-attr]
    assert store.previous_run("2024-06-01") is None
    assert store.latest_run(before_as_of="2024-07-15").run_id == july  # type: ignore[union-attr]
    history = store.history("acc-000001")
    assert history["pes"].tolist() == [40, 50, 60]
    assert history["run_id"].tolist() == [june, july, august]
    assert len(store.history()) == 12


def test_readers_ignore_staging_folders_and_uncommitted_runs(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    committed = write(store, "2024-06-01", 1)
    partition = store.path / "as_of=2024-06-01"
    (partition / ".staging-crashed").mkdir()
    (partition / "run=orphan").mkdir()  # renamed into place, but the pointer never moved
    (store.path / "as_of=2024-07-01" / "run=never-committed").mkdir(parents=True)

    assert store.runs()["run_id"].tolist() == [committed]
    write(store, "2024-06-01", 2)
    assert len(run_folders(store, "2024-06-01")) == 1  # the next write collects leftovers


def test_a_corrupt_pointer_is_reported_not_guessed(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    write(store, "2024-06-01", 1)
    (store.path / "as_of=2024-06-01" / "CURRENT").write_text("{not json")
    with pytest.raises(StoreError, match="run pointer .* is corrupt"):
        store.runs()


def test_a_corrupt_pointer_of_a_later_as_of_does_not_hide_the_previous_run(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    earlier = write(store, "2024-05-01", 1)
    write(store, "2024-09-01", 2)
    (store.path / "as_of=2024-09-01" / "CURRENT").write_text("{not json")
    previous = store.previous_run("2024-06-01")  # what a score at 2024-06-01 compares with
    assert previous is not None
    assert previous.run_id == earlier
    with pytest.raises(StoreError, match="run pointer .* is corrupt"):
        store.latest_run()  # the latest run itself is unknown: reported, not guessed


@pytest.mark.parametrize("text", ["{}", "[]", "null", '{"run": "x"}', '{"run": {"rows": {}}}'])
def test_a_manifest_that_is_json_but_not_a_manifest_is_a_store_error(tmp_path: Path, text: str) -> None:
    store = RunStore(tmp_path / "runs")
    write(store, "2024-06-01", 1)
    (store.latest_run().path / "manifest.json").write_text(text)
    with pytest.raises(StoreError, match="is not a pes_ml run manifest .* Score that as_of again"):
        store.runs()


def test_a_committed_run_missing_a_file_says_to_score_again_not_to_retry(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    write(store, "2024-06-01", 1)
    info = store.latest_run()
    shutil.rmtree(info.path / "reasons")
    with pytest.raises(StoreError, match=r"is missing its reasons .* Score as_of 2024-06-01 again"):
        store.read_reasons()
    (info.path / "scores.parquet").unlink()
    with pytest.raises(StoreError, match=r"is missing its scores.parquet .* Score as_of 2024-06-01 again"):
        store.read_scores()


# --- crash safety -------------------------------------------------------------------------------
PAUSE_AT_STAGE = """
import sys, time, pathlib
import pes_ml.store as store_module
from test_store import write
path, stage, signal_file = sys.argv[1:4]

def hook(name):
    if name == stage:
        pathlib.Path(signal_file).write_text(name)
        time.sleep(120)

store_module._stage_hook = hook
write(store_module.RunStore(path), "2024-06-01", 2, n=3000)
"""

# (stage, marker that must be committed after a SIGKILL there): before the pointer swaps
# the previous run must be visible, after it the new one.
STAGES = [
    ("validated", 1),
    ("scores_written", 1),
    ("reasons_written", 1),
    ("staged", 1),
    ("renamed", 1),
    ("pointer_written", 1),
    ("committed", 2),
    ("gc", 2),
]


@pytest.mark.parametrize(("stage", "expected"), STAGES)
def test_sigkill_at_each_commit_stage_leaves_a_complete_run(
    tmp_path: Path, stage: str, expected: int
) -> None:
    store = RunStore(tmp_path / "runs")
    write(store, "2024-06-01", 1, n=3000)
    signal_file = tmp_path / "paused"
    proc = child(PAUSE_AT_STAGE, str(store.path), stage, str(signal_file))
    wait_for(signal_file, proc)
    kill(proc)

    assert assert_complete_run(store, "2024-06-01", {expected}) == expected
    # The lock died with the process; the next write succeeds and collects the leftovers.
    final = write(store, "2024-06-01", 3, n=3000)
    assert assert_complete_run(store, "2024-06-01", {3}) == 3
    assert run_folders(store, "2024-06-01") == [f"run={final}"]


WRITE_FOREVER = """
import sys, pathlib
from pes_ml.store import RunStore
from test_store import make_reasons, make_scores
path, log, marker = sys.argv[1], pathlib.Path(sys.argv[2]), int(sys.argv[3])
store = RunStore(path)
scores, reasons = make_scores("2024-06-01", 0, n=50000), make_reasons("2024-06-01", 0, n=50000)
with open(log, "a") as fh:
    fh.write("ready\\n"); fh.flush()
    while True:  # nearly all the time of this loop is spent inside write_run
        store.write_run(
            "2024-06-01", scores.assign(pes=float(marker)), reasons.assign(pes_points=float(marker)),
            {"marker": marker},
        )
        fh.write(f"committed {marker}\\n"); fh.flush()
        marker += 1
"""


@pytest.mark.slow
def test_sigkill_at_random_moments_never_exposes_a_mixed_run(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    store = RunStore(tmp_path / "runs")
    write(store, "2024-06-01", 0, n=50000)
    current, interrupted = 0.0, 0
    for attempt in range(10):
        first = 1000 * (attempt + 1)  # markers unique across attempts
        log = tmp_path / f"log-{attempt}"
        proc = child(WRITE_FOREVER, str(store.path), str(log), str(first))
        wait_for(log, proc, text="ready")
        time.sleep(rng.uniform(0.0, 1.5))
        kill(proc)
        interrupted += len(run_folders(store, "2024-06-01")) > 1  # the kill landed mid-write
        committed = [
            int(line.split()[1]) for line in log.read_text().splitlines() if line.startswith("committed")
        ]
        # Killed after the pointer swap but before the log line: the next marker is committed, whole.
        allowed = {committed[-1], committed[-1] + 1} if committed else {current, first}
        current = assert_complete_run(store, "2024-06-01", allowed)
    assert interrupted, "no kill landed mid-write: the test proved nothing"
    write(store, "2024-06-01", 99, n=50000)
    assert assert_complete_run(store, "2024-06-01", {99}) == 99
    assert len(run_folders(store, "2024-06-01")) == 1


# --- locking ------------------------------------------------------------------------------------
HOLD_LOCK = """
import sys, time, pathlib
from pes_ml.store import RunStore
path, as_of, ready = sys.argv[1:4]
with RunStore(path).lock(as_of):
    pathlib.Path(ready).write_text("locked")
    time.sleep(120)
"""

RACE = """
import sys, time
from pes_ml.errors import RunInProgressError
from pes_ml.store import RunStore
from test_store import write
store = RunStore(sys.argv[1])
try:
    with store.lock(sys.argv[2]):
        time.sleep(1.5)  # long enough for the other process to try
        write(store, sys.argv[2], float(sys.argv[3]))
except RunInProgressError as exc:
    print(exc, file=sys.stderr)
    sys.exit(exc.exit_code)
"""


def test_two_runs_for_the_same_as_of_one_wins_the_other_is_told_it_is_in_progress(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    procs = [child(RACE, str(store.path), "2024-06-01", str(marker)) for marker in (1, 2)]
    results = [(p.wait(timeout=60), p.stderr.read()) for p in procs]  # type: ignore[union-attr]

    codes = sorted(code for code, _ in results)
    assert codes == [0, RunInProgressError.exit_code], results
    message = next(err for code, err in results if code)
    assert "A scoring run for as_of 2024-06-01 is already in progress (pid" in message
    assert "Wait for it to finish and rerun; the lock frees itself when that process exits" in message
    assert len(store.runs()) == 1
    assert_complete_run(store, "2024-06-01", {1, 2})


def test_runs_for_different_as_of_proceed_at_once(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    procs = [child(RACE, str(store.path), as_of, "5") for as_of in ("2024-06-01", "2024-07-01")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    assert store.runs()["as_of"].astype(str).tolist() == ["2024-06-01", "2024-07-01"]


def test_a_held_lock_names_its_holder_and_a_killed_holder_releases_it(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    ready = tmp_path / "ready"
    proc = child(HOLD_LOCK, str(store.path), "2024-06-01", str(ready))
    wait_for(ready, proc)
    with pytest.raises(
        RunInProgressError, match=rf"as_of 2024-06-01 is already in progress \(pid {proc.pid} "
    ):
        write(store, "2024-06-01", 1)
    with pytest.raises(RunInProgressError), store.lock("2024-06-01", timeout=0.3):
        pass
    write(store, "2024-07-01", 1)  # another as_of is not blocked

    kill(proc)
    with store.lock("2024-06-01"):  # no stale lock to clean up
        write(store, "2024-06-01", 2)  # re-entrant: write_run inside the caller's lock
    assert len(store.runs()) == 2


def test_lock_timeout_waits_for_the_holder_to_finish(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs", lock_timeout=30)
    ready = tmp_path / "ready"
    proc = child(HOLD_LOCK, str(store.path), "2024-06-01", str(ready))
    wait_for(ready, proc)
    started = time.monotonic()
    killer = subprocess.Popen(["sh", "-c", f"sleep 0.5; kill -9 {proc.pid}"])
    with store.lock("2024-06-01"):
        waited = time.monotonic() - started
    killer.wait()
    proc.communicate(timeout=30)
    assert waited >= 0.4


# --- disk full ----------------------------------------------------------------------------------
@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (needs root to mount); skipped elsewhere, the ENOSPC test below still runs."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a 1 MiB tmpfs needs root; test_disk_full_simulated covers this path")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if done.returncode:
        pytest.skip(
            f"cannot mount a tmpfs here ({done.stderr.strip()}); test_disk_full_simulated covers this path"
        )
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_disk_full_on_a_real_tiny_filesystem_keeps_the_previous_run(tiny_disk: Path) -> None:
    store = RunStore(tiny_disk / "runs")
    write(store, "2024-06-01", 1, n=50)
    with pytest.raises(
        StoreError, match=r"ran out of disk space while writing run .* previous run is intact"
    ):
        write(store, "2024-06-01", 2, n=60000)  # ~4 MB of random floats on a 1 MiB disk

    assert assert_complete_run(store, "2024-06-01", {1}) == 1
    assert len(run_folders(store, "2024-06-01")) == 1  # the partial staging folder is gone
    write(store, "2024-06-01", 3, n=50)  # space was freed: the next run succeeds
    assert assert_complete_run(store, "2024-06-01", {3}) == 3


def test_disk_full_simulated_keeps_the_previous_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = RunStore(tmp_path / "runs")
    write(store, "2024-06-01", 1)
    real = store_module.write_bytes

    def full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(store_module, "write_bytes", full)
    with pytest.raises(StoreError, match=f"The run store at {store.path} ran out of disk space"):
        write(store, "2024-06-01", 2)
    monkeypatch.setattr(store_module, "write_bytes", real)
    assert assert_complete_run(store, "2024-06-01", {1}) == 1
    assert len(run_folders(store, "2024-06-01")) == 1


def test_manifest_is_plain_json_with_the_run_section(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    run_id = store.write_run(
        "2024-06-01",
        make_scores("2024-06-01", 1),
        make_reasons("2024-06-01", 1),
        {"timings": {"write": np.float64(0.5)}, "as_of": pd.Timestamp("2024-06-01")},
    )
    info = store.get_run(run_id)
    manifest = json.loads((info.path / "manifest.json").read_text())
    assert manifest["timings"] == {"write": 0.5}
    assert manifest["run"]["run_id"] == run_id


def test_the_store_accepts_the_long_shap_table_of_explain() -> None:
    explain = pytest.importorskip("pes_ml.explain", reason="explain.py not built yet")
    assert tuple(explain.LONG_COLUMNS) == REASON_REQUIRED


def test_store_path_and_lock_timeout_come_from_config(tmp_path: Path) -> None:
    sources = {"events": {"path": "events.parquet"}}
    default = RunStore.from_config(parse_config({"work_dir": str(tmp_path / "work"), "sources": sources}))
    assert default.path == tmp_path / "work" / "runs"
    custom = parse_config(
        {"sources": sources, "store": {"path": str(tmp_path / "s"), "lock_timeout_seconds": 5}}
    )
    assert (RunStore.from_config(custom).path, RunStore.from_config(custom).lock_timeout) == (
        tmp_path / "s",
        5,
    )
    with pytest.raises(ConfigError, match="Did you mean 'path'"):
        parse_config({"sources": sources, "store": {"pth": "x"}})


def test_a_column_arrow_cannot_store_is_a_contract_error_and_leaves_nothing_behind(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    write(store, "2024-06-01", 1)
    scores = make_scores("2024-06-01", 2).assign(arr=pd.Series([1.5, "n/a", 2.0, 3.0], dtype=object))
    with pytest.raises(DataContractError, match="Cannot store scores.parquet: a column has mixed"):
        store.write_run("2024-06-01", scores, make_reasons("2024-06-01", 2), {})
    assert assert_complete_run(store, "2024-06-01", {1}) == 1
    assert len(run_folders(store, "2024-06-01")) == 1


# --- streaming a run in chunks (format 2: reasons/part-*.parquet) -------------------------------
def make_chunk(as_of: str, marker: float, accounts: range, seed: int = 0) -> pd.DataFrame:
    """The long table of some accounts as score_features gives it: all churn rows, then expansion."""
    rng = np.random.default_rng(seed)
    ids = [f"acc-{i:06d}" for i in accounts]
    models = []
    for model in ("churn", "expansion"):
        rows = len(ids) * len(FEATURES)
        models.append(
            pd.DataFrame(
                {
                    "account_id": pd.array(np.repeat(ids, len(FEATURES)), dtype="str"),
                    "as_of": pd.Timestamp(as_of, tz="UTC"),
                    "model": pd.array([model] * rows, dtype="str"),
                    "feature": pd.array(np.tile(FEATURES, len(ids)), dtype="str"),
                    "group": pd.array(["adoption"] * rows, dtype="str"),
                    "value": pd.array(rng.random(rows).astype(str), dtype="str"),
                    "shap_log_odds": rng.normal(size=rows),
                    "pes_points": float(marker),
                }
            )
        )
    return pd.concat(models, ignore_index=True)


CHUNKS = (range(0, 3), range(3, 6), range(6, 8))


def test_a_run_streamed_in_chunks_reads_back_as_one_pass_would_build_it(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    chunks = [make_chunk("2024-06-01", 7, accounts, seed) for seed, accounts in enumerate(CHUNKS)]
    with store.begin_run("2024-06-01") as run:
        for chunk in chunks:
            run.add_reasons(chunk)
        run_id = run.commit(make_scores("2024-06-01", 7, n=8), {"marker": 7})

    whole = pd.concat(chunks, ignore_index=True)
    one_pass = pd.concat([whole[whole["model"] == m] for m in ("churn", "expansion")], ignore_index=True)
    pd.testing.assert_frame_equal(store.read_reasons(run_id), one_pass)
    info = store.get_run(run_id)
    assert info.format_version == store_module.FORMAT_VERSION == 2
    assert [p.name for p in info.reason_files()] == ["part-00000.parquet", "part-00001.parquet"]
    assert [pq_row_groups(p) for p in info.reason_files()] == [3, 3]  # a row group per chunk
    assert info.n_reasons == len(one_pass) == 8 * len(FEATURES) * 2
    assert not (info.path / "reasons.parquet").exists()
    assert store.verify() == []
    assert store.read_manifest(run_id)["run"]["rows"] == {"scores": 8, "reasons": 8 * len(FEATURES) * 2}


def pq_row_groups(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_row_groups)


def test_read_reasons_filters_accounts_and_model_without_loading_the_rest(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    chunks = [make_chunk("2024-06-01", 7, accounts, seed) for seed, accounts in enumerate(CHUNKS)]
    with store.begin_run("2024-06-01") as run:
        for chunk in chunks:
            run.add_reasons(chunk)
        run_id = run.commit(make_scores("2024-06-01", 7, n=8), {})

    wanted = ["acc-000001", "acc-000004", "acc-000099"]  # the last one was never scored
    subset = store.read_reasons(run_id, accounts=wanted, model="churn")
    full = store.read_reasons(run_id)
    expected = full[full["account_id"].isin(wanted) & (full["model"] == "churn")].reset_index(drop=True)
    pd.testing.assert_frame_equal(subset, expected)
    assert set(subset["account_id"]) == {"acc-000001", "acc-000004"}
    assert store.read_reasons(run_id, accounts=["nobody"]).empty


def stream(store: RunStore, chunks: list[pd.DataFrame], fail: Exception | None = None) -> None:
    """Stream ``chunks`` into a new run of 2024-06-01; raise ``fail`` after the last one (no commit)."""
    with store.begin_run("2024-06-01") as run:
        for chunk in chunks:
            run.add_reasons(chunk)
        assert len(run_folders(store, "2024-06-01")) == 2  # the committed run and this run's staging
        if fail is not None:
            raise fail


def test_an_exception_after_the_second_chunk_keeps_the_previous_run_and_removes_staging(
    tmp_path: Path,
) -> None:
    store = RunStore(tmp_path / "runs")
    write(store, "2024-06-01", 1)
    chunks = [make_chunk("2024-06-01", 2, accounts) for accounts in CHUNKS[:2]]
    with pytest.raises(RuntimeError, match="SHAP failed"):
        stream(store, chunks, fail=RuntimeError("SHAP failed on chunk 3"))

    assert assert_complete_run(store, "2024-06-01", {1}) == 1
    assert run_folders(store, "2024-06-01") == [f"run={store.latest_run().run_id}"]  # type: ignore[union-attr]
    with store.lock("2024-06-01", timeout=0):  # the aborted run released the as_of lock
        pass


def test_a_chunk_that_does_not_match_the_first_aborts_the_run(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    write(store, "2024-06-01", 1)
    first = make_chunk("2024-06-01", 2, CHUNKS[0])
    with pytest.raises(DataContractError, match="must have the same columns"):
        stream(store, [first, make_chunk("2024-06-01", 2, CHUNKS[1]).assign(extra=1.0)])
    with pytest.raises(DataContractError, match="rows for as_of 2024-07-01"):
        stream(store, [make_chunk("2024-07-01", 2, CHUNKS[0])])
    assert assert_complete_run(store, "2024-06-01", {1}) == 1
    assert len(run_folders(store, "2024-06-01")) == 1


def test_a_finished_run_refuses_more_chunks(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    with store.begin_run("2024-06-01") as run:
        run.add_reasons(make_chunk("2024-06-01", 2, CHUNKS[0]))
        run.commit(make_scores("2024-06-01", 2, n=3), {})
    with pytest.raises(StoreError, match="is committed; start a new one"):
        run.add_reasons(make_chunk("2024-06-01", 2, CHUNKS[1]))
    aborted = store.begin_run("2024-06-01")
    aborted.abort()
    with pytest.raises(StoreError, match="is aborted"):
        aborted.commit(make_scores("2024-06-01", 2, n=3), {})


def test_leaving_the_block_without_committing_aborts_the_run(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    write(store, "2024-06-01", 1)
    with store.begin_run("2024-06-01") as run:
        run.add_reasons(make_chunk("2024-06-01", 2, CHUNKS[0]))
    assert assert_complete_run(store, "2024-06-01", {1}) == 1
    assert len(run_folders(store, "2024-06-01")) == 1


STREAM_AND_PAUSE = """
import sys, time, pathlib
from pes_ml.store import RunStore
from test_store import CHUNKS, make_chunk, make_scores
path, signal_file = sys.argv[1:3]
with RunStore(path).begin_run("2024-06-01") as run:
    for accounts in CHUNKS[:2]:
        run.add_reasons(make_chunk("2024-06-01", 2, accounts))
    pathlib.Path(signal_file).write_text("two chunks staged")
    time.sleep(120)
"""


def test_sigkill_between_chunks_keeps_the_previous_run_and_the_next_write_cleans_up(
    tmp_path: Path,
) -> None:
    store = RunStore(tmp_path / "runs")
    write(store, "2024-06-01", 1)
    signal_file = tmp_path / "paused"
    proc = child(STREAM_AND_PAUSE, str(store.path), str(signal_file))
    wait_for(signal_file, proc)
    kill(proc)

    assert assert_complete_run(store, "2024-06-01", {1}) == 1
    assert len(run_folders(store, "2024-06-01")) == 2  # the dead job's staging, invisible to readers
    final = write(store, "2024-06-01", 3)
    assert run_folders(store, "2024-06-01") == [f"run={final}"]


def test_verify_reports_a_missing_or_truncated_reason_part(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    with store.begin_run("2024-06-01") as run:
        for accounts in CHUNKS:
            run.add_reasons(make_chunk("2024-06-01", 2, accounts))
        run.commit(make_scores("2024-06-01", 2, n=8), {})
    parts = store.latest_run().reason_files()  # type: ignore[union-attr]
    parts[1].unlink()
    assert store.verify() == [
        f"{parts[0].parent}: {8 * len(FEATURES)} rows, manifest says {8 * len(FEATURES) * 2}"
    ]
    parts[0].write_bytes(b"not parquet")
    assert "unreadable" in store.verify()[0]
    parts[0].unlink()
    assert store.verify() == [f"{parts[0].parent}: no part-*.parquet file"]


def test_runs_of_format_1_are_still_read_and_verified(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    run_id = write(store, "2024-06-01", 4)
    reasons = store.read_reasons(run_id)
    # Turn the run into the format-1 layout: one reasons.parquet, format_version 1.
    info = store.get_run(run_id)
    reasons.to_parquet(info.path / "reasons.parquet", index=False)
    for part in info.reason_files():
        part.unlink()
    (info.path / "reasons").rmdir()
    manifest = json.loads((info.path / "manifest.json").read_text())
    manifest["run"]["format_version"] = 1
    (info.path / "manifest.json").write_text(json.dumps(manifest))

    assert store.get_run(run_id).reason_files() == [info.path / "reasons.parquet"]
    pd.testing.assert_frame_equal(store.read_reasons(run_id), reasons)
    assert len(store.read_reasons(run_id, accounts=["acc-000002"], model="churn")) == len(FEATURES)
    assert store.verify() == []


def test_an_empty_long_table_is_stored_with_its_columns(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    scores, reasons = make_scores("2024-06-01", 1), make_reasons("2024-06-01", 1)
    run_id = store.write_run("2024-06-01", scores, reasons[:0], {})
    reasons = store.read_reasons(run_id)
    assert reasons.empty
    assert list(reasons.columns) == list(REASON_REQUIRED)
    assert store.verify() == []
    with store.begin_run("2024-07-01") as run:  # no add_reasons at all
        empty = run.commit(make_scores("2024-07-01", 1), {})
    assert list(store.read_reasons(empty).columns) == list(REASON_REQUIRED)
    assert store.get_run(empty).n_reasons == 0


def test_an_open_reason_reader_survives_a_rerun_that_replaces_its_run(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    first = write(store, "2024-06-01", 1)
    with store.open_reasons(first) as reader:
        second = write(store, "2024-06-01", 2)  # replaces the run and deletes its folder
        assert run_folders(store, "2024-06-01") == [f"run={second}"]
        rows = reader.read(accounts=["acc-000003"], model="churn")
    assert reader.run.run_id == first
    assert len(rows) == len(FEATURES)
    assert (rows["pes_points"] == 1).all()
    with pytest.raises(StoreError, match=f"No committed run '{first}'"):
        store.open_reasons(first)


def test_disk_full_while_streaming_chunks_keeps_the_previous_run(tiny_disk: Path) -> None:
    store = RunStore(tiny_disk / "runs")
    write(store, "2024-06-01", 1, n=50)
    big = [make_chunk("2024-06-01", 2, range(i * 4000, (i + 1) * 4000), seed=i) for i in range(4)]
    full = r"ran out of disk space while writing run .* previous run is intact"
    with pytest.raises(StoreError, match=full):
        stream(store, big)  # ~4 MB of random text and floats on a 1 MiB disk

    assert assert_complete_run(store, "2024-06-01", {1}) == 1
    assert len(run_folders(store, "2024-06-01")) == 1  # the partial staging folder is gone
