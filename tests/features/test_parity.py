"""One definition, two engines: the full catalog on DuckDB and on Spark gives the same FeatureFrame."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pes_ml.features import FeatureTables, compute_features

pytestmark = [pytest.mark.spark, pytest.mark.slow]

AS_OF_DATES = ["2024-03-01", "2024-04-01", "2024-05-15T06:00:00", "2024-06-01", "2024-07-01"]


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory, seed: int) -> dict[str, Path]:
    from pes_ml.simulate import SimulationConfig, simulate_saas

    out = Path(tmp_path_factory.mktemp("sim"))
    simulate_saas(SimulationConfig(n_accounts=80, days=200, seed=seed), out)
    return {
        "events": out / "events" / "*.parquet",
        "subscriptions": out / "subscriptions.parquet",
        "accounts": out / "accounts.parquet",
    }


@pytest.fixture(scope="module")
def seed() -> int:
    return 7


def _features(backend: Any, paths: dict[str, Path]) -> pd.DataFrame:
    return compute_features(FeatureTables.from_paths(backend, paths), AS_OF_DATES)


def test_duckdb_and_spark_give_the_same_features(
    duckdb_backend: Any, spark_backend: Any, simulated: dict[str, Path]
) -> None:
    duck = _features(duckdb_backend, simulated)
    spark = _features(spark_backend, simulated)
    assert len(duck) > 100
    assert duck.attrs["event_types"] == spark.attrs["event_types"]
    assert duck.attrs["core_events"] == spark.attrs["core_events"]
    assert list(duck.columns) == list(spark.columns)
    pd.testing.assert_frame_equal(duck[["account_id", "as_of"]], spark[["account_id", "as_of"]])
    for column in duck.columns:
        left, right = duck[column], spark[column]
        assert left.dtype == right.dtype, column
        if pd.api.types.is_integer_dtype(left) or not pd.api.types.is_numeric_dtype(left):
            pd.testing.assert_series_equal(left, right, obj=column)  # counts and categories: exact
        else:
            np.testing.assert_allclose(left, right, rtol=1e-9, atol=0, equal_nan=True, err_msg=column)
    # The data exercise the catalog: most features vary.
    varying = [c for c in duck.columns if duck[c].nunique() > 1]
    assert len(varying) > 0.8 * len(duck.columns)
