"""Packed sums: several bounded counts carried by one int64 sum must unpack exactly.

The window counts per account and as_of are summed several to a word
(:class:`pes_ml.features.definitions.PackedSums`), with bounds read off the data:
the most users of one account and the most events of one account in a day. A
field one bit too narrow carries into its neighbour only when a sum reaches its
bound, so these tests drive every count to its bound.
"""

from __future__ import annotations

from typing import Any

import ibis
import pandas as pd
import pytest

from pes_ml.config import FeatureConfig
from pes_ml.features.definitions import WORD_BITS, PackedSums
from tests.features.conftest import AS_OF, DAY, Engine, make_events, open_subscriptions

TOP = 2**21 - 1  # three fields of 21 bits fill a 63-bit word exactly


def test_fields_fill_each_63_bit_word_in_order() -> None:
    packing = PackedSums.layout({"a": TOP, "b": TOP, "c": TOP, "d": 1, "e": 0, "f": 2**62})
    assert packing.fields == (
        ("a", 0, 0, 21), ("b", 0, 21, 21), ("c", 0, 42, 21),  # 63 bits: word 0 is full
        ("d", 1, 0, 1), ("e", 1, 1, 1),  # a bound of 0 still takes one bit
        ("f", 2, 0, 63),  # 63 bits do not fit beside d and e
    )
    assert max(shift + width for _, _, shift, width in packing.fields) == WORD_BITS


def test_a_sum_that_cannot_fit_an_int64_is_refused() -> None:
    with pytest.raises(ValueError, match="big: a sum up to 9223372036854775808 does not fit an int64"):
        PackedSums.layout({"small": 3, "big": 2**63})


def test_sums_at_their_bounds_unpack_exactly(duckdb_backend: Any) -> None:
    # Group "full" drives every field to its bound, so word 0 is 2**63 - 1; group "low" is small.
    rows = {
        "g": ["full", "full", "full", "low"],
        "a": [TOP, 0, 0, 1],
        "b": [2**20, 2**20 - 1, 0, 0],
        "c": [TOP - 2, 1, 1, 2],
        "d": [1, 2, 2, 5],
    }
    bounds = {"a": TOP, "b": TOP, "c": TOP, "d": 5}
    table = ibis.memtable(pd.DataFrame(rows))
    packing = PackedSums.layout(bounds)
    values = {name: table[name] for name in bounds}
    unpacked = packing.aggregate(table, ["g"], values).order_by("g")
    sums = table.group_by("g").aggregate(**packing.sums(values))
    result = duckdb_backend.to_pyarrow(unpacked).to_pandas()
    expected = pd.DataFrame(rows).groupby("g", as_index=False)[list(bounds)].sum()
    assert result.to_dict("records") == expected.to_dict("records")
    assert duckdb_backend.to_pyarrow(sums.order_by("g"))["_packed_0"][0].as_py() == 2**63 - 1


def test_window_counts_are_exact_when_they_reach_the_bounds_read_off_the_data(duck: Engine) -> None:
    # "busy": 4 users, each with 3 events on every one of the 90 days before as_of: the busiest
    # account-day (12 events) and the most users (4) set the bounds, and every count of "busy"
    # sits exactly at its bound: 90 days x 12 events, 30 x 4 user-days, 4 power users...
    # "quiet": one user with one event, 40 days ago.
    rows = [
        ("busy", f"u{user}", "login" if k == 0 else "report", AS_OF - DAY * day - pd.Timedelta(minutes=k + 1))
        for day in range(90) for user in range(4) for k in range(3)
    ]
    rows.append(("quiet", "q0", "login", AS_OF - DAY * 40))
    features = duck.features(
        make_events(rows), subscriptions=open_subscriptions(["busy", "quiet"]),
        config=FeatureConfig(event_types=["login", "report"], core_events=["login", "report"]),
    ).set_index("account_id")

    busy = features.loc["busy"]
    expected = {
        "events_7d": 7 * 12, "events_30d": 30 * 12, "events_90d": 90 * 12, "active_days_30d": 30,
        "events_type_login_30d": 30 * 4, "events_type_report_30d": 30 * 8, "events_type_other_30d": 0,
        "active_users_7d": 4, "active_users_30d": 4, "active_users_90d": 4, "dropped_users_30d": 0,
        # Ratios of counts at their bounds: 30 x 12 events over the 30 x 12 of the 30 days before...
        "events_trend_30d": 1.0, "active_days_trend_30d": 1.0, "active_users_trend_30d": 1.0,
        "dau_mau_30d": 1.0, "dau_wau_7d": 1.0, "power_user_share_7d": 1.0, "l28_22to28_share_28d": 1.0,
        "core_events_per_active_user_30d": 2.0,  # 8 (user, core event) pairs / 4 users
    }
    assert {name: busy[name] for name in expected} == expected
    quiet = features.loc["quiet"]
    assert (quiet["events_30d"], quiet["events_90d"], quiet["active_users_90d"]) == (0, 1, 1)
    assert (quiet["events_trend_30d"], quiet["dropped_users_30d"]) == (0.0, 1)
