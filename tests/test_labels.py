"""Label boundary tests: every row is commented with the boundary it probes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pes_ml.config import LabelConfig
from pes_ml.errors import DataContractError
from pes_ml.labels import coverage_end, infer_data_end, make_labels
from pes_ml.schemas import ACCOUNT_ID, AS_OF, CHURNED, CONVERTED, EXPANDED

AS_OF_DATE = "2024-04-01"
DATA_END = "2025-01-01"
CONFIG = LabelConfig(horizon_days=30, grace_days=14, expansion_ratio=1.10)


def make_subscriptions(rows: list[tuple]) -> pd.DataFrame:
    """Rows of (account_id, start, end or None, mrr[, list_mrr[, seats[, plan]]])."""
    columns = ["account_id", "start", "end", "mrr", "list_mrr", "seats", "plan"]
    padded = [tuple(row) + (None,) * (len(columns) - len(row)) for row in rows]
    subs = pd.DataFrame(padded, columns=columns)
    subs["start"] = pd.to_datetime(subs["start"], utc=True, format="ISO8601")
    subs["end"] = pd.to_datetime(subs["end"], utc=True, format="ISO8601")
    for column in ("mrr", "list_mrr", "seats"):
        subs[column] = subs[column].astype(float)
    return subs


def label_of(labels: pd.DataFrame, account: str, column: str = CHURNED) -> float:
    row = labels[labels[ACCOUNT_ID] == account]
    assert len(row) == 1, f"{account} has {len(row)} rows"
    return float(row[column].iloc[0])


def labels_for(rows: list[tuple], config: LabelConfig = CONFIG, data_end: str = DATA_END) -> pd.DataFrame:
    return make_labels(config, [AS_OF_DATE], subscriptions=make_subscriptions(rows), data_end=data_end)


def test_labels_exclude_account_churned_exactly_at_as_of():
    labels = labels_for(
        [
            ("a1", "2024-01-01", "2024-04-01", 100.0),  # ends == as_of: already churned, not in snapshot
            ("a2", "2024-01-01", "2024-04-01 00:00:01", 100.0),  # active at as_of, churns 1 s later
        ]
    )
    assert "a1" not in set(labels[ACCOUNT_ID])
    assert label_of(labels, "a2") == 1.0


def test_labels_exclude_churn_exactly_at_horizon_end():
    labels = labels_for(
        [
            ("a1", "2024-01-01", "2024-05-01", 100.0),  # ends == as_of + 30 d: outside the half-open window
            ("a2", "2024-01-01", "2024-04-30 23:59:59", 100.0),  # last second inside the window: churn
        ]
    )
    assert label_of(labels, "a1") == 0.0
    assert label_of(labels, "a2") == 1.0


def test_labels_resubscription_inside_grace_gap_is_not_churn():
    labels = labels_for(
        [
            ("a1", "2024-01-01", "2024-04-10", 100.0),
            ("a1", "2024-04-24", None, 100.0),  # back after 14 days == grace: same customer, not churn
            ("a2", "2024-01-01", "2024-04-10", 100.0),
            ("a2", "2024-04-25", None, 100.0),  # back after 15 days > grace: churned on 2024-04-10
        ]
    )
    assert label_of(labels, "a1") == 0.0
    assert label_of(labels, "a2") == 1.0


def test_labels_monthly_renewals_are_one_coverage_interval():
    subs = make_subscriptions(
        [
            ("a1", "2024-01-11", "2024-02-11", 10.0),
            ("a1", "2024-02-11", "2024-03-11", 10.0),
            ("a1", "2024-03-11", "2024-04-11", 10.0),  # last renewal: churned 2024-04-11
        ]
    )
    ends = coverage_end(subs, grace_days=0)
    assert (ends == pd.Timestamp("2024-04-11", tz="UTC")).all()
    labels = make_labels(CONFIG, [AS_OF_DATE], subscriptions=subs, data_end=DATA_END)
    assert label_of(labels, "a1") == 1.0


def test_labels_window_past_data_end_are_unlabeled_not_retained():
    labels = labels_for(
        [("a1", "2024-01-01", None, 100.0)],  # open subscription, but the window is not observed
        data_end="2024-04-30 23:59:59",
    )
    assert np.isnan(label_of(labels, "a1", CHURNED))
    assert np.isnan(label_of(labels, "a1", EXPANDED))


def test_labels_churn_before_grace_is_observed_is_unlabeled():
    labels = labels_for(
        [("a1", "2024-01-01", "2024-04-25", 100.0)],  # ends in window, grace runs past data end
        data_end="2024-05-02",
    )
    assert np.isnan(label_of(labels, "a1"))


def test_labels_expansion_uses_list_price_not_discounted_mrr():
    labels = labels_for(
        [
            # discount ends: mrr 80 -> 100 but list price stays 100: not an expansion
            ("a1", "2024-01-01", "2024-04-15", 80.0, 100.0),
            ("a1", "2024-04-15", None, 100.0, 100.0),
            # upgrade: list price 100 -> 110 == ratio 1.10: expansion
            ("a2", "2024-01-01", "2024-04-15", 100.0, 100.0),
            ("a2", "2024-04-15", None, 110.0, 110.0),
            # upgrade that starts exactly at horizon end: outside the window
            ("a3", "2024-01-01", "2024-05-01", 100.0, 100.0),
            ("a3", "2024-05-01", None, 200.0, 200.0),
        ]
    )
    assert label_of(labels, "a1", EXPANDED) == 0.0
    assert label_of(labels, "a2", EXPANDED) == 1.0
    assert label_of(labels, "a3", EXPANDED) == 0.0


def test_labels_expansion_by_seats():
    config = LabelConfig(horizon_days=30, expansion_measure="seats", expansion_ratio=1.5)
    labels = labels_for(
        [
            ("a1", "2024-01-01", "2024-04-10", 100.0, None, 10.0),
            ("a1", "2024-04-10", None, 100.0, None, 15.0),  # 10 -> 15 seats == 1.5x
        ],
        config=config,
    )
    assert label_of(labels, "a1", EXPANDED) == 1.0


def test_labels_conversion_for_trial_accounts_only():
    labels = labels_for(
        [
            ("t1", "2024-03-15", "2024-04-14", 0.0, 0.0, 1.0, "trial"),
            ("t1", "2024-04-14", None, 50.0, 50.0, 1.0, "pro"),  # converts inside the window
            ("t2", "2024-03-15", "2024-04-14", 0.0, 0.0, 1.0, "trial"),  # trial expires
            ("p1", "2024-01-01", None, 50.0, 50.0, 1.0, "pro"),  # paying: no conversion label
        ]
    )
    assert label_of(labels, "t1", CONVERTED) == 1.0
    assert label_of(labels, "t2", CONVERTED) == 0.0
    assert np.isnan(label_of(labels, "p1", CONVERTED))
    # trial expiry is not customer churn
    assert np.isnan(label_of(labels, "t2", CHURNED))
    assert label_of(labels, "p1", CHURNED) == 0.0


def test_labels_activity_mode_uses_events_in_window():
    events = pd.DataFrame(
        {
            "account_id": ["a1", "a1", "a2", "a2", "a3"],
            "timestamp": pd.to_datetime(
                [
                    "2024-03-20",  # a1 active before as_of
                    "2024-05-01",  # == as_of + 30 d: outside the window, so a1 churned
                    "2024-03-31 23:59:59",  # a2 active before as_of
                    "2024-04-01",  # == as_of: inside the window, a2 retained
                    "2024-04-05",  # a3 has no prior activity: not eligible
                ],
                utc=True,
                format="ISO8601",
            ),
        }
    )
    labels = make_labels(
        LabelConfig(mode="activity", horizon_days=30), [AS_OF_DATE], events=events, data_end=DATA_END
    )
    assert set(labels[ACCOUNT_ID]) == {"a1", "a2"}
    assert label_of(labels, "a1") == 1.0
    assert label_of(labels, "a2") == 0.0


def test_labels_many_as_of_dates_one_row_per_key():
    subs = make_subscriptions([("a1", "2024-01-01", "2024-06-01", 10.0), ("a2", "2024-02-01", None, 10.0)])
    dates = pd.date_range("2024-01-15", "2024-07-01", freq="MS")
    labels = make_labels(LabelConfig(horizon_days=45), dates, subscriptions=subs, data_end=DATA_END)
    assert not labels.duplicated([ACCOUNT_ID, AS_OF]).any()
    a1 = labels[labels[ACCOUNT_ID] == "a1"].set_index(AS_OF)[CHURNED]
    # churns 2024-06-01: labeled 1 at the May snapshot, absent from June on
    assert a1.loc[pd.Timestamp("2024-05-01", tz="UTC")] == 1.0
    assert a1.loc[pd.Timestamp("2024-04-01", tz="UTC")] == 0.0
    assert pd.Timestamp("2024-06-01", tz="UTC") not in a1.index


def test_labels_subscription_mode_without_table_raises():
    with pytest.raises(DataContractError, match="no subscriptions table"):
        make_labels(LabelConfig(mode="subscription"), [AS_OF_DATE], data_end=DATA_END)


def test_infer_data_end_is_day_after_latest_observation():
    subs = make_subscriptions([("a1", "2024-01-01", "2024-09-01", 10.0)])  # end is in the future
    events = pd.DataFrame({"account_id": ["a1"], "timestamp": pd.to_datetime(["2024-06-30 10:00"], utc=True)})
    assert infer_data_end(events, subs) == pd.Timestamp("2024-07-01", tz="UTC")
