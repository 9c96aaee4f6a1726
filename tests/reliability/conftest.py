"""The trained and promoted project shared by the reliability tests (helpers: scoring_jobs.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# pytest imports this conftest before it puts this folder on sys.path for the test modules.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

from scoring_jobs import Project, project_config  # noqa: E402


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """Simulate, ingest, train and promote once for the whole session (~1-2 minutes)."""
    from pes_ml.config import PesConfig
    from pes_ml.ingest import ingest
    from pes_ml.registry import promote
    from pes_ml.simulate import SimulationConfig, simulate_saas
    from pes_ml.training import run_training

    root = tmp_path_factory.mktemp("reliability")
    sim, small_sim = root / "sim", root / "small_sim"
    simulate_saas(SimulationConfig(n_accounts=300, days=540, start="2024-01-01", seed=11), sim)
    simulate_saas(SimulationConfig(n_accounts=60, days=540, start="2024-01-01", seed=12), small_sim)
    raw = project_config(root, sim)
    config = PesConfig.model_validate(raw)
    ingest(config)
    run_training(config)
    promote(config, force=True)
    return Project(root, sim, small_sim, raw)
