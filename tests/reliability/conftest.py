"""A trained and promoted project shared by the reliability tests, and helpers to run the CLI.

``trained_project`` (session-scoped) simulates a small SaaS (300 accounts x 540 days),
ingests it, trains the churn/expansion models into a tmp SQLite MLflow store, promotes
the version to ``@champion`` (with ``force``: the promotion gate has its own tests) and
writes the config as YAML, so tests can run ``pes-ml`` as a batch scheduler would.
Each test then copies what it changes (its own run store) and shares the rest.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
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
        "train": {"model_spec": str(ROOT / "models" / "pes.yaml"), "bootstrap_rounds": 10},
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
    """A simulated, ingested, trained and promoted project."""

    root: Path
    sim: Path
    raw: dict[str, Any]

    def config_for(self, tmp: Path, *, store_path: Path | None = None, **sections: dict[str, Any]) -> Path:
        """A config file sharing this project's data and registry, with its own run store.

        ``sections`` update config sections, e.g. ``store={"lock_timeout_seconds": 60}``.
        """
        raw = copy.deepcopy(self.raw)
        for key, value in sections.items():
            raw[key] = {**raw.get(key, {}), **value}
        raw["store"] = {**raw.get("store", {}), "path": str(store_path or tmp / "runs")}
        return write_config(tmp / "pes.yaml", raw)


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """Simulate, ingest, train and promote once for the whole session (~1-2 minutes)."""
    from pes_ml.config import PesConfig
    from pes_ml.ingest import ingest
    from pes_ml.registry import promote
    from pes_ml.simulate import SimulationConfig, simulate_saas
    from pes_ml.training import run_training

    root = tmp_path_factory.mktemp("reliability")
    sim = root / "sim"
    simulate_saas(SimulationConfig(n_accounts=300, days=540, start="2024-01-01", seed=11), sim)
    raw = project_config(root, sim)
    config = PesConfig.model_validate(raw)
    ingest(config)
    run_training(config)
    promote(config, force=True)
    return Project(root, sim, raw)


def copy_store(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, symlinks=True)
    return target
