"""Helpers for feature tests: tiny literal tables written to Parquet and read by an Ibis backend."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pes_ml.config import FeatureConfig, PesConfig
from pes_ml.engine import ibis_backend
from pes_ml.features import FeatureTables, compute_features

AS_OF = pd.Timestamp("2024-06-01", tz="UTC")
US = pd.Timedelta(microseconds=1)
DAY = pd.Timedelta(days=1)


def make_events(rows: Sequence[tuple[Any, ...]]) -> pd.DataFrame:
    """Events from (account_id, user_id, event, timestamp[, value]) tuples."""
    records = [(*row, None) if len(row) == 4 else row for row in rows]
    frame = pd.DataFrame(records, columns=["account_id", "user_id", "event", "timestamp", "value"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601").dt.as_unit("us")
    frame["value"] = frame["value"].astype("float64")
    frame["user_id"] = frame["user_id"].astype("str")
    return frame


def open_subscriptions(accounts: Sequence[str], start: str = "2023-01-01", **columns: Any) -> pd.DataFrame:
    """One open subscription per account, so every account is present at every as_of."""
    frame = pd.DataFrame({"account_id": list(accounts)})
    frame["start"] = pd.Timestamp(start, tz="UTC")
    frame["end"] = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[us, UTC]")
    for name, value in columns.items():
        frame[name] = value
    return frame


class Engine:
    """Computes features from pandas frames through Parquet files on one Ibis backend."""

    def __init__(self, backend: Any, root: Path) -> None:
        self.backend = backend
        self.root = root
        self._calls = 0

    def tables(self, events: pd.DataFrame, subscriptions: pd.DataFrame | None = None,
               accounts: pd.DataFrame | None = None) -> FeatureTables:
        self._calls += 1
        folder = self.root / f"call{self._calls}"
        folder.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name, frame in (("events", events), ("subscriptions", subscriptions), ("accounts", accounts)):
            if frame is not None:
                paths[name] = folder / f"{name}.parquet"
                frame.to_parquet(paths[name], index=False)
        return FeatureTables.from_paths(self.backend, paths)

    def features(self, events: pd.DataFrame, as_of: Sequence[Any] = (AS_OF,),
                 subscriptions: pd.DataFrame | None = None, accounts: pd.DataFrame | None = None,
                 config: FeatureConfig | None = None, horizon_days: int = 90,
                 mode: str = "auto") -> pd.DataFrame:
        tables = self.tables(events, subscriptions, accounts)
        features = compute_features(tables, list(as_of), config, horizon_days, mode=mode)  # type: ignore[arg-type]
        return features


def _config(engine: str) -> PesConfig:
    return PesConfig.model_validate({"engine": engine, "sources": {"events": {"path": "unused"}}})


@pytest.fixture(scope="session")
def duckdb_backend() -> Any:
    return ibis_backend(_config("duckdb"))


@pytest.fixture
def duck(duckdb_backend: Any, tmp_path: Path) -> Engine:
    """Feature computation on DuckDB."""
    return Engine(duckdb_backend, tmp_path)


@pytest.fixture(scope="session")
def spark_backend() -> Any:
    """One Spark session for the whole run (it takes 10-15 s to start)."""
    pytest.importorskip("pyspark")
    return ibis_backend(_config("spark"))


def row(features: pd.DataFrame, account: str, as_of: pd.Timestamp = AS_OF) -> pd.Series:
    """The feature row of one account at one as_of."""
    match = features[(features["account_id"] == account) & (features["as_of"] == as_of)]
    assert len(match) == 1, f"expected one row for {account} at {as_of}, got {len(match)}"
    return match.iloc[0]
