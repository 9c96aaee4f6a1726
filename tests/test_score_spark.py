"""One scoring definition, two engines: DuckDB in process and a Spark job give the same run.

Module-scoped: one simulation, one training and one Spark session serve every test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from simulated_project import project_settings

from pes_ml import explain
from pes_ml import schemas as S
from pes_ml.config import PesConfig
from pes_ml.features import build_features
from pes_ml.ingest import ingest
from pes_ml.registry import load_pes_model, promote
from pes_ml.score import ScoreRun, score_accounts, score_features
from pes_ml.simulate import SimulationConfig, simulate_saas
from pes_ml.store import RunStore
from pes_ml.training import run_training

pytest.importorskip("pyspark")

pytestmark = [pytest.mark.spark, pytest.mark.slow]

FIRST_AS_OF = "2025-05-01"
SECOND_AS_OF = "2025-06-01"


def _config(tmp: Path, engine: str) -> PesConfig:
    settings = project_settings(tmp)
    settings["train"]["bootstrap_rounds"] = 10
    # One run store per engine, so neither run replaces the other.
    return PesConfig.model_validate(
        {**settings, "engine": engine, "store": {"path": str(tmp / f"runs-{engine}")}}
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("score_spark")
    simulate_saas(SimulationConfig(n_accounts=700, days=540, start="2024-01-01", seed=11), tmp / "sim")
    config = _config(tmp, "duckdb")
    ingest(config)
    run_training(config)
    promote(config, force=True)
    return tmp


@pytest.fixture(scope="module")
def runs(trained: Path) -> dict[str, list[ScoreRun]]:
    """Two as_of dates on each engine, so the second run also carries change attribution."""
    return {
        engine: [score_accounts(_config(trained, engine), as_of) for as_of in (FIRST_AS_OF, SECOND_AS_OF)]
        for engine in ("duckdb", "spark")
    }


def _assert_same_scores(duck: pd.DataFrame, spark: pd.DataFrame) -> None:
    assert list(duck.columns) == list(spark.columns)
    for column in duck.columns:
        if column == S.RUN_ID:
            continue
        left, right = duck[column], spark[column]
        assert left.dtype == right.dtype, column
        if pd.api.types.is_float_dtype(left):
            np.testing.assert_allclose(left, right, rtol=1e-9, atol=0, equal_nan=True, err_msg=column)
        else:
            pd.testing.assert_series_equal(left, right, obj=column)


@pytest.mark.parametrize("step", [0, 1], ids=["first_as_of", "second_as_of_with_change"])
def test_spark_scores_equal_duckdb_scores(runs: dict[str, list[ScoreRun]], step: int) -> None:
    duck, spark = runs["duckdb"][step], runs["spark"][step]
    assert len(duck.scores) > 100
    _assert_same_scores(duck.scores, spark.scores)
    # Spelled out: the values a CS manager reads.
    pd.testing.assert_series_equal(duck.scores[S.TIER], spark.scores[S.TIER])
    for column in ("reason_1", "reason_2", "reason_3", "what_changed"):
        pd.testing.assert_series_equal(duck.scores[column], spark.scores[column])
    assert (duck.scores["reason_1"] != "").mean() > 0.9
    if step == 1:
        assert duck.scores["pes_delta"].notna().mean() > 0.5


@pytest.mark.parametrize("step", [0, 1], ids=["first_as_of", "second_as_of"])
def test_spark_long_shap_table_equals_duckdb(runs: dict[str, list[ScoreRun]], step: int) -> None:
    duck, spark = runs["duckdb"][step].reasons, runs["spark"][step].reasons
    assert set(duck[explain.MODEL]) == {"churn", "expansion"}
    pd.testing.assert_frame_equal(duck, spark, check_exact=False, rtol=1e-9, atol=1e-12)


def test_spark_run_store_holds_the_same_run(trained: Path, runs: dict[str, list[ScoreRun]]) -> None:
    duck_store = RunStore(trained / "runs-duckdb")
    spark_store = RunStore(trained / "runs-spark")
    assert spark_store.verify() == []
    assert list(spark_store.runs()[S.RUN_ID]) == [run.run_id for run in runs["spark"]]
    _assert_same_scores(duck_store.read_scores("latest"), spark_store.read_scores("latest"))
    pd.testing.assert_frame_equal(
        duck_store.read_reasons("latest"), spark_store.read_reasons("latest"), check_exact=False, rtol=1e-9
    )


def test_partitioning_does_not_change_any_score(trained: Path) -> None:
    from pes_ml.score_spark import score_features_spark

    config = _config(trained, "duckdb")
    model, version = load_pes_model(config)
    features = build_features(
        config.model_copy(
            update={
                "features": config.features.model_copy(
                    update={k: model.metadata[k] for k in ("event_types", "core_events")}
                )
            }
        ),
        [FIRST_AS_OF],
    )
    options = {"model_name": "pes", "model_version": version, "run_id": "r1", "top_reasons": 3}
    scores, reasons = score_features(features, model, **options)
    spark_scores, spark_reasons = score_features_spark(features, model, partitions=7, **options)
    _assert_same_scores(scores, spark_scores)
    pd.testing.assert_frame_equal(reasons, spark_reasons, check_exact=False, rtol=1e-9, atol=1e-12)
