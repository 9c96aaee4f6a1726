"""Helpers of the reliability tests: a project config, and `pes-ml` run as a scheduler runs it.

The session fixture ``trained_project`` (conftest.py) builds the project; the tests import
these helpers (a module of its own: ``conftest`` is a name several folders use).

``trained_project`` (session-scoped) simulates a small SaaS (300 accounts x 540 days),
ingests it, trains the churn/expansion models into a tmp SQLite MLflow store, promotes
the version to ``@champion`` (with ``force``: the promotion gate has its own tests) and
writes the config as YAML, so tests can run ``pes-ml`` as a batch scheduler would.
Each test then copies what it changes (its own run store) and shares the rest.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
PES_ML = [str(Path(sys.executable).with_name("pes-ml"))]
AS_OF = "2025-05-01"
OTHER_AS_OF = "2025-06-01"


def project_config(
    tmp: Path, sim: Path, *, tracking_uri: str | None = None, **overrides: Any
) -> dict[str, Any]:
    """The raw config of a project over the simulated data in ``sim``."""
    raw: dict[str, Any] = {
        "work_dir": str(tmp / "work"),
        "sources": {
            "events": {"path": str(sim / "events")},
            "subscriptions": {"path": str(sim / "subscriptions.parquet")},
            "accounts": {"path": str(sim / "accounts.parquet")},
        },
        "dataset": {"frequency_days": 21},
        "train": {
            "model_spec": str(ROOT / "models" / "pes.yaml"),
            "bootstrap_rounds": 10,
            "min_positives": 10,
        },
        "tracking": {
            "tracking_uri": tracking_uri or f"sqlite:///{tmp}/mlflow.db",
            "artifact_location": str(tmp / "mlartifacts"),
            "model_card_dir": str(tmp / "models"),
            "log_plots": False,
        },
    }
    for key, value in overrides.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return raw


def write_config(path: Path, raw: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a ``pes-ml`` child: quiet threads, no telemetry, no inherited MLflow URI."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PES_FAULT"))}
    env.update(
        {
            "OMP_WAIT_POLICY": "PASSIVE",
            "OMP_NUM_THREADS": "1",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "PYTHONPATH": str(ROOT),
            "COLUMNS": "200",
        }
    )
    env.update(extra)
    return env


def pes_ml(
    *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``pes-ml`` to completion, as a scheduler would."""
    return subprocess.run(
        [*PES_ML, *args], env=env or cli_env(), capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def start_pes_ml(
    *args: str, stderr: Path, stdout: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``pes-ml`` in the background; its stderr (and stdout) go to files the test can poll."""
    with open(stderr, "wb") as err, open(stdout or os.devnull, "wb") as out:
        return subprocess.Popen([*PES_ML, *args], env=env or cli_env(), stdout=out, stderr=err, cwd=ROOT)


def wait_for_text(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 300) -> None:
    """Poll ``path`` until it holds ``text``; fail if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(encoding="utf-8", errors="replace"):
            return
        if proc.poll() is not None:
            tail = path.read_text(errors="replace")[-3000:]
            raise AssertionError(f"pes-ml exited ({proc.returncode}) before {text!r}:\n{tail}")
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise AssertionError(f"timed out waiting for {text!r} in {path}")


@dataclass(frozen=True)
class Project:
    """A simulated, ingested, trained and promoted project.

    ``sim`` (300 accounts) trained the registered model; ``small_sim`` (60 other accounts of the
    same simulated product) is what the scoring tests score, so each `pes-ml score` is quick.
    """

    root: Path
    sim: Path
    small_sim: Path
    raw: dict[str, Any]

    def config_for(
        self, tmp: Path, *, store_path: Path | None = None, small: bool = True, **sections: dict[str, Any]
    ) -> Path:
        """A config sharing this project's registry, with its own work folder and run store in ``tmp``.

        ``sections`` update config sections, e.g. ``store={"lock_timeout_seconds": 60}``.
        """
        raw = copy.deepcopy(self.raw)
        data = self.small_sim if small else self.sim
        raw["work_dir"] = str(tmp / "work")
        for table, path in (
            ("events", data / "events"),
            ("subscriptions", data / "subscriptions.parquet"),
            ("accounts", data / "accounts.parquet"),
        ):
            raw["sources"][table] = {**raw["sources"][table], "path": str(path)}
        for key, value in sections.items():
            raw[key] = {**raw.get(key, {}), **value}
        raw["store"] = {**raw.get("store", {}), "path": str(store_path or tmp / "runs")}
        return write_config(tmp / "pes.yaml", raw)


MARKER = "pes_ml fault stage reached: "


def score_args(config: Path, as_of: str = AS_OF) -> list[str]:
    """`pes-ml score` arguments (drift allowed: the small scored sample differs from training)."""
    return ["score", "--as-of", as_of, "--config", str(config), "--allow-drift"]


def committed_run(store_path: Path, as_of: str = AS_OF) -> str:
    """The committed run of ``as_of``, checked whole: scores, reasons and manifest of one run."""
    from pes_ml import schemas as S
    from pes_ml.store import RunStore

    store = RunStore(store_path)
    assert store.verify() == []
    runs = store.runs()
    runs = runs[runs[S.AS_OF].astype(str).str.startswith(as_of)]
    assert len(runs) == 1, runs
    run_id = str(runs[S.RUN_ID].iloc[0])
    scores, reasons = store.read_scores(run_id), store.read_reasons(run_id)
    manifest = store.read_manifest(run_id)
    assert manifest["run"]["run_id"] == run_id
    assert set(scores[S.RUN_ID]) == {run_id}
    assert len(scores) == manifest["counts"]["accounts"] == manifest["run"]["rows"]["scores"]
    assert len(reasons) == manifest["counts"]["reason_rows"] == manifest["run"]["rows"]["reasons"]
    assert set(reasons[S.ACCOUNT_ID]) == set(scores[S.ACCOUNT_ID])
    assert set(reasons[S.MODEL_VERSION]) == set(scores[S.MODEL_VERSION]) == {manifest["model"]["version"]}
    return run_id
