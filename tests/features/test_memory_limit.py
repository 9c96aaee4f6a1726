"""Memory: ``duckdb_memory_limit`` gives DuckDB a cap and a spill folder, and the features do not change;
numpy's huge pages are off while the frame is built (``pes_ml.features.build._small_pages``); the finish
lets go of each raw column once it has used it."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from pes_ml.config import PesConfig
from pes_ml.engine import ibis_backend
from pes_ml.features import FeatureTables, compute_features

from .conftest import AS_OF, DAY, Engine, make_events, open_subscriptions


def _config(tmp_path: Path, limit: str | None) -> PesConfig:
    return PesConfig.model_validate({
        "sources": {"events": {"path": "unused"}}, "work_dir": str(tmp_path / "work"),
        "duckdb_memory_limit": limit,
    })


def test_a_memory_limit_that_is_not_a_size_is_rejected_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="duckdb_memory_limit"):
        _config(tmp_path, "lots")


def test_features_under_a_small_memory_limit_equal_the_unlimited_ones(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n = 200_000
    accounts = [f"a{i:04d}" for i in range(2_000)]
    account = rng.integers(0, len(accounts), n)
    events = pd.DataFrame({
        "account_id": np.asarray(accounts)[account],
        "user_id": [f"u{a}-{u}" for a, u in zip(account, rng.integers(0, 5, n), strict=True)],
        "event": [f"e{k}" for k in rng.integers(0, 12, n)],
        "timestamp": pd.Timestamp("2024-01-01", tz="UTC")
        + pd.to_timedelta(rng.integers(0, 150 * 86_400, n), unit="s"),
        "value": rng.random(n),
    })
    events["timestamp"] = events["timestamp"].dt.as_unit("us")
    paths = {"events": tmp_path / "events.parquet", "subscriptions": tmp_path / "subscriptions.parquet"}
    events.to_parquet(paths["events"], index=False)
    open_subscriptions(accounts).to_parquet(paths["subscriptions"], index=False)
    as_of = ["2024-04-01", "2024-05-01"]

    limited = ibis_backend(_config(tmp_path, "64MB"))
    setting = limited.raw_sql("SELECT current_setting('memory_limit')").fetchone()[0]
    assert setting.replace(" ", "").upper() in {"64.0MB", "61.0MIB", "64MB"}, setting
    assert any((tmp_path / "work" / ".spill").iterdir()), "no spill folder for this process"

    capped = compute_features(FeatureTables.from_paths(limited, paths), as_of)
    free = compute_features(FeatureTables.from_paths(ibis_backend(_config(tmp_path, None)), paths), as_of)
    assert len(capped) == 2 * len(accounts)
    pd.testing.assert_frame_equal(capped, free)

    del limited  # the spill folder goes with its connection: runs leave no empty folders behind
    gc.collect()
    assert not any((tmp_path / "work" / ".spill").iterdir())


def test_running_out_of_memory_is_a_one_line_error_that_says_what_to_change(tmp_path: Path) -> None:
    from pes_ml.errors import ConfigError
    from pes_ml.features import build_features
    from pes_ml.ingest import ingest

    events = pd.DataFrame({
        "account_id": [f"a{i % 500}" for i in range(50_000)],
        "user_id": [f"u{i % 2_000}" for i in range(50_000)],
        "event": [f"e{i % 7}" for i in range(50_000)],
        "timestamp": pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(np.arange(50_000) * 97, unit="s"),
    })
    events.to_parquet(tmp_path / "events.parquet", index=False)
    config = PesConfig.model_validate({
        "sources": {"events": {"path": str(tmp_path / "events.parquet")}}, "work_dir": str(tmp_path / "work"),
    })
    ingest(config)
    tiny = config.model_copy(update={"duckdb_memory_limit": "1MB"})
    expected = r"ran out of memory during the feature computation .* 1MB.*duckdb_memory_limit"
    with pytest.raises(ConfigError, match=expected):
        build_features(tiny, ["2024-01-20"])
    with pytest.raises(ConfigError, match=r"ran out of memory during ingest .* 1MB"):
        ingest(tiny)
    assert (tmp_path / "work" / "clean").exists(), "the previous clean tables were removed"


def _huge_pages_on() -> bool:
    """numpy's current huge-page setting (read by setting it back to what it was)."""
    from numpy._core.multiarray import _set_madvise_hugepage

    current: bool = _set_madvise_hugepage(True)
    _set_madvise_hugepage(current)
    return current


@pytest.mark.parametrize("user_setting", [None, "1"])
def test_numpy_huge_pages_are_off_while_the_frame_is_built_unless_the_user_chose(
    duck: Engine, monkeypatch: pytest.MonkeyPatch, user_setting: str | None
) -> None:
    from numpy._core.multiarray import _set_madvise_hugepage

    import pes_ml.features.build as build

    if user_setting is None:
        monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    else:
        monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", user_setting)
    seen: list[bool] = []
    finish = build.finish_features

    def watched(*args: object, **kwargs: object) -> pd.DataFrame:
        seen.append(_huge_pages_on())
        return finish(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(build, "finish_features", watched)
    before = _set_madvise_hugepage(True)
    try:
        duck.features(make_events([("a", "u", "login", AS_OF - DAY)]))
        assert seen == [user_setting is not None]  # off inside, unless NUMPY_MADVISE_HUGEPAGE is set
        assert _huge_pages_on()  # restored
    finally:
        _set_madvise_hugepage(before)


def test_the_finish_lets_go_of_every_raw_column_it_reads(
    duck: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The finish takes each raw column out of the assembly's dict as it uses it, so that at many as_of
    # dates the raw columns do not sit beside the finished ones (52 weekly dates at 10M events: the
    # finish's peak went from 5.1 to 3.7 GB). Only active_now is left: the presence filter read it before.
    import pes_ml.features.build as build

    left: list[list[str]] = []
    finish = build.finish_features

    def watched(raw: dict[str, object], *args: object, **kwargs: object) -> pd.DataFrame:
        features = finish(raw, *args, **kwargs)  # type: ignore[arg-type]
        left.append(sorted(raw))
        return features

    monkeypatch.setattr(build, "finish_features", watched)
    events = make_events([("a", "u", "login", AS_OF - DAY, 2.0)])
    subscriptions = open_subscriptions(
        ["a"], plan="pro", mrr=100.0, seats=3, billing_period_months=12.0, discount=0.1, auto_renew=True
    )
    accounts = pd.DataFrame({
        "account_id": ["a"], "plan": ["free"], "segment": ["smb"], "seats": [5],
        "created_at": [pd.Timestamp("2022-06-01", tz="UTC")],
    })
    features = duck.features(events, subscriptions=subscriptions, accounts=accounts)
    assert left == [["active_now"]]
    a = features.iloc[0]  # and the features come from the taken columns
    assert (a["mrr"], a["seats"], a["plan"], a["segment"], a["events_30d"]) == (100.0, 3.0, "pro", "smb", 1)
    assert a["tenure_days"] == (AS_OF - pd.Timestamp("2022-06-01", tz="UTC")).days
