"""Chunked scoring: ``score.chunk_accounts`` bounds memory and changes no output.

Module-scoped: one simulation and one training; each as_of is scored twice — in one chunk
(the default, larger than the project) and in chunks of 97 accounts, into two run stores.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from simulated_project import project_settings

from pes_ml import schemas as S
from pes_ml.config import PesConfig
from pes_ml.ingest import ingest
from pes_ml.registry import promote
from pes_ml.score import ScoreRun, score_accounts
from pes_ml.simulate import SimulationConfig, simulate_saas
from pes_ml.store import RunStore
from pes_ml.training import run_training

pytestmark = pytest.mark.slow

AS_OFS = ("2025-05-01", "2025-06-01")
SMALL_CHUNK = 97


def _config(tmp: Path, chunk_accounts: int) -> PesConfig:
    settings = project_settings(tmp)
    return PesConfig.model_validate(
        {
            **settings,
            "store": {"path": str(tmp / f"runs-{chunk_accounts}")},
            "score": {"chunk_accounts": chunk_accounts},
        }
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("score_chunks")
    simulate_saas(SimulationConfig(n_accounts=700, days=540, start="2024-01-01", seed=11), tmp / "sim")
    config = _config(tmp, 100_000)
    ingest(config)
    run_training(config)
    promote(config, force=True)
    return tmp


@pytest.fixture(scope="module")
def runs(trained: Path) -> dict[int, list[ScoreRun]]:
    """Both as_of dates (the second carries change attribution) with one chunk and with many."""
    return {
        chunk: [score_accounts(_config(trained, chunk), as_of) for as_of in AS_OFS]
        for chunk in (100_000, SMALL_CHUNK)
    }


@pytest.mark.parametrize("step", [0, 1], ids=["first_as_of", "second_as_of_with_change"])
def test_scoring_in_chunks_gives_the_same_scores_reasons_changes_and_counts_as_one_chunk(
    runs: dict[int, list[ScoreRun]], step: int
) -> None:
    whole, chunked = runs[100_000][step], runs[SMALL_CHUNK][step]
    n_accounts = len(whole.scores)
    assert n_accounts > 3 * SMALL_CHUNK  # several chunks, the last one partial

    pd.testing.assert_frame_equal(
        whole.scores.drop(columns=S.RUN_ID), chunked.scores.drop(columns=S.RUN_ID), check_exact=True
    )
    pd.testing.assert_frame_equal(whole.reasons, chunked.reasons, check_exact=True)
    assert whole.manifest["counts"] == {**chunked.manifest["counts"], "chunks": 1}
    assert chunked.manifest["counts"]["chunks"] == math.ceil(n_accounts / SMALL_CHUNK)
    assert chunked.manifest["counts"]["reason_rows"] == len(chunked.reasons)
    assert whole.manifest["drift"] == chunked.manifest["drift"]
    if step == 1:
        assert chunked.manifest["change"]["previous_run_id"] == runs[SMALL_CHUNK][0].run_id
        assert chunked.scores["pes_delta"].notna().mean() > 0.5
        assert chunked.scores["what_changed"].str.contains("PES (?:rose|fell)").any()


def test_a_chunked_run_is_stored_as_one_part_per_model_with_a_row_group_per_chunk(
    trained: Path, runs: dict[int, list[ScoreRun]]
) -> None:
    store = RunStore(trained / f"runs-{SMALL_CHUNK}")
    assert store.verify() == []
    info = store.get_run(runs[SMALL_CHUNK][1].run_id)
    parts = info.reason_files()
    assert len(parts) == 2  # churn, then expansion
    n_chunks = runs[SMALL_CHUNK][1].manifest["counts"]["chunks"]
    assert [pq.ParquetFile(p).metadata.num_row_groups for p in parts] == [n_chunks, n_chunks]
    assert [pq.read_table(p, columns=["model"])["model"].unique().to_pylist() for p in parts] == [
        ["churn"],
        ["expansion"],
    ]
    assert sorted(p.name for p in info.path.parent.iterdir() if p.is_dir()) == [f"run={info.run_id}"]
