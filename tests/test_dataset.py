"""Training sets: snapshot schedule, join, and a time split whose label windows never overlap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pes_ml.config import DatasetConfig
from pes_ml.dataset import as_of_schedule, fingerprint, join_snapshots, label_window_overlap, split_by_time
from pes_ml.errors import DataContractError
from pes_ml.schemas import ACCOUNT_ID, AS_OF, CHURNED, CONVERTED, EXPANDED

HORIZON = 30


def make_snapshots(n_dates: int = 12, n_accounts: int = 20, freq_days: int = 15) -> pd.DataFrame:
    dates = pd.date_range("2024-01-01", periods=n_dates, freq=f"{freq_days}D", tz="UTC")
    rows = [(f"a{i}", d) for d in dates for i in range(n_accounts)]
    snapshots = pd.DataFrame(rows, columns=[ACCOUNT_ID, AS_OF])
    snapshots[CHURNED] = (np.arange(len(snapshots)) % 5 == 0).astype(float)
    snapshots[EXPANDED] = np.nan
    snapshots[CONVERTED] = np.nan
    snapshots["x"] = np.arange(len(snapshots), dtype=float)
    return snapshots


def test_split_has_no_label_overlap_between_train_validation_and_test():
    split = split_by_time(make_snapshots(), DatasetConfig(validation_dates=2, test_dates=2), HORIZON)
    train, validation, test = (split.dates(n) for n in ("train", "validation", "test"))
    assert train
    assert validation
    assert test
    assert not label_window_overlap(train, test, HORIZON)
    assert not label_window_overlap(validation, test, HORIZON)
    assert not label_window_overlap(train, validation, HORIZON)
    # every training label window closes on or before the earliest test as_of
    assert max(train) + pd.Timedelta(days=HORIZON) <= min(test)
    # the latest dates are the test dates
    assert test == sorted(pd.to_datetime(make_snapshots()[AS_OF].unique(), utc=True))[-2:]


def test_split_gap_skips_dates_whose_label_window_reaches_test():
    # 15-day steps and a 30-day horizon: the date just before test overlaps it and is unused
    split = split_by_time(make_snapshots(), DatasetConfig(validation_dates=1, test_dates=1), HORIZON)
    all_dates = sorted(pd.to_datetime(make_snapshots()[AS_OF].unique(), utc=True))
    used = set(split.dates("train")) | set(split.dates("validation")) | set(split.dates("test"))
    assert all_dates[-2] not in used
    assert split.dates("validation") == [all_dates[-3]]


def test_split_drops_unlabeled_rows():
    snapshots = make_snapshots()
    last = snapshots[AS_OF].max()
    snapshots.loc[snapshots[AS_OF] == last, CHURNED] = np.nan  # window past the data end
    split = split_by_time(snapshots, DatasetConfig(validation_dates=1, test_dates=1), HORIZON)
    assert last not in set(split.test[AS_OF])
    assert split.test[CHURNED].notna().all()


def test_split_with_too_few_dates_names_the_fix():
    with pytest.raises(DataContractError, match="frequency_days"):
        split_by_time(make_snapshots(n_dates=3), DatasetConfig(), HORIZON)


def test_split_refuses_gap_shorter_than_horizon():
    with pytest.raises(DataContractError, match="gap_days"):
        split_by_time(make_snapshots(), DatasetConfig(gap_days=10), HORIZON)


def test_split_summary_reports_counts_and_base_rates():
    split = split_by_time(make_snapshots(), DatasetConfig(), HORIZON)
    summary = split.summary().set_index("split")
    assert summary.loc["test", "snapshots"] == 40
    np.testing.assert_allclose(summary.loc["test", "churned_rate"], split.test[CHURNED].mean())


def test_schedule_latest_date_is_fully_labeled():
    dates = as_of_schedule(DatasetConfig(frequency_days=30), "2024-01-01", "2024-12-31", horizon_days=90)
    assert dates[-1] + pd.Timedelta(days=90) <= pd.Timestamp("2024-12-31", tz="UTC")
    assert dates[0] >= pd.Timestamp("2024-03-31", tz="UTC")  # 90-day feature warm-up
    assert all(np.diff(dates) == pd.Timedelta(days=30))


def test_schedule_raises_when_history_is_shorter_than_horizon():
    with pytest.raises(DataContractError, match="horizon"):
        as_of_schedule(DatasetConfig(), "2024-01-01", "2024-03-01", horizon_days=90)
    # 60 days with a 14-day horizon: the 90 days of feature history are what is missing, and the
    # message says so (and the dates it names run forwards).
    expected = (r"The data \(2024-01-01 .. 2024-03-01, 60 days\) is too short to train on: the first "
                r"snapshot date \(2024-03-31\) comes 90 days after the data start .* the last "
                r"\(2024-02-16\) comes 14 days \(the label horizon\) before the data end")
    with pytest.raises(DataContractError, match=expected):
        as_of_schedule(DatasetConfig(), "2024-01-01", "2024-03-01", horizon_days=14)


def test_join_raises_when_a_labeled_snapshot_has_no_features():
    labels = make_snapshots(n_dates=1, n_accounts=3)[[ACCOUNT_ID, AS_OF, CHURNED, EXPANDED, CONVERTED]]
    features = make_snapshots(n_dates=1, n_accounts=2)[[ACCOUNT_ID, AS_OF, "x"]]
    with pytest.raises(DataContractError, match="no feature row"):
        join_snapshots(features, labels)
    joined = join_snapshots(features, labels.iloc[:2])
    assert list(joined["x"]) == [0.0, 1.0]


def test_fingerprint_changes_with_content():
    snapshots = make_snapshots(n_dates=2)
    changed = snapshots.copy()
    changed.loc[0, "x"] = -1.0
    assert fingerprint(snapshots) == fingerprint(snapshots.copy())
    assert fingerprint(snapshots) != fingerprint(changed)
