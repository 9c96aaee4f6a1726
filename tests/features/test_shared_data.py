"""Features on data someone else shaped: the shared fightchurn and ravenstack datasets.

Each dataset is ingested through its column-mapping config, features are built
with the public API, and a handful of values are checked against an independent
pandas computation on the clean tables.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pes_ml.config import load_config
from pes_ml.features import build_features

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CASES = {
    "fightchurn_socialnet7": ["2020-05-01", "2020-06-01", "2020-07-01"],
    "ravenstack_saas": ["2024-01-01", "2024-07-01"],
}


def _pandas_reference(events: pd.DataFrame, subscriptions: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """events_30d, active_users_30d, active_days_30d, days_since_last_event and mrr, written plainly."""
    active = subscriptions[(subscriptions["start"] <= as_of)
                           & (subscriptions["end"].isna() | (subscriptions["end"] > as_of))]
    present = pd.Index(active["account_id"].unique(), name="account_id")
    before = events[events["timestamp"] < as_of]
    window = before[before["timestamp"] >= as_of - pd.Timedelta(days=30)]
    days = ((as_of - window["timestamp"]) / pd.Timedelta(days=1)).apply(np.ceil)
    reference = pd.DataFrame(index=present)
    grouped = window.groupby("account_id")
    reference["events_30d"] = grouped.size().reindex(present, fill_value=0)
    reference["active_users_30d"] = grouped["user_id"].nunique().reindex(present, fill_value=0)
    reference["active_days_30d"] = days.groupby(window["account_id"]).nunique().reindex(present, fill_value=0)
    last = before.groupby("account_id")["timestamp"].max().reindex(present)
    # Whole days before as_of of the day the last event fell on: ceil(elapsed days) - 1.
    reference["days_since_last_event"] = np.ceil((as_of - last) / pd.Timedelta(days=1)) - 1
    reference["mrr"] = active.groupby("account_id")["mrr"].sum(min_count=1).reindex(present)
    return reference


@pytest.mark.parametrize("name", sorted(CASES))
def test_features_match_an_independent_pandas_computation(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    conf = ROOT / "pipelines" / "conf" / "shared" / f"{name}.yaml"
    if not conf.is_file():
        pytest.skip(f"ingest config {conf} not written yet")
    from pes_ml.ingest import clean_paths, ingest

    monkeypatch.chdir(ROOT)
    config = load_config(conf).model_copy(update={"work_dir": str(tmp_path / "work")})
    ingest(config)
    features = build_features(config, CASES[name])
    paths = clean_paths(config)
    events = pd.read_parquet(paths["events"])
    subscriptions = pd.read_parquet(paths["subscriptions"])
    assert len(features) > 100
    for as_of in CASES[name]:
        stamp = pd.Timestamp(as_of, tz="UTC")
        mine = features[features["as_of"] == stamp].set_index("account_id")
        reference = _pandas_reference(events, subscriptions, stamp)
        assert sorted(mine.index) == sorted(reference.index), as_of
        mine = mine.loc[reference.index]
        for column in ("events_30d", "active_users_30d", "active_days_30d"):
            np.testing.assert_array_equal(mine[column].to_numpy(), reference[column].to_numpy(),
                                          err_msg=column)
        np.testing.assert_allclose(mine["days_since_last_event"], reference["days_since_last_event"],
                                   equal_nan=True, err_msg="days_since_last_event")
        np.testing.assert_allclose(mine["mrr"], reference["mrr"], rtol=1e-12, equal_nan=True, err_msg="mrr")
