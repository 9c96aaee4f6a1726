"""The catalog: names, metadata, version, model inputs; and small pure helpers."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pes_ml.features import CATALOG, CATALOG_VERSION, FeatureSpec, model_feature_names
from pes_ml.features.catalog import catalog_version, event_type_columns
from pes_ml.features.classic_pes import add_classic_pes
from pes_ml.features.finish import next_renewal

WINDOW_SUFFIX = re.compile(r"_(\d+)(d|w)$")


def test_catalog_names_are_unique_snake_case_with_their_window_suffix() -> None:
    names = [spec.name for spec in CATALOG]
    assert len(names) == len(set(names))
    for spec in CATALOG:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", spec.name), spec.name
        assert spec.description, spec.name
        assert spec.unit, spec.name
        assert spec.missing, spec.name
        match = WINDOW_SUFFIX.search(spec.name)
        if match and spec.model_input:
            days = int(match.group(1)) * (7 if match.group(2) == "w" else 1)
            assert spec.window_days is not None, spec.name
            assert spec.window_days >= days, spec.name


def test_catalog_version_changes_when_a_definition_changes() -> None:
    changed = (*CATALOG[:-1], FeatureSpec(**{**CATALOG[-1].__dict__, "description": "changed"}))
    assert catalog_version(changed) != catalog_version(CATALOG)
    assert re.fullmatch(r"[0-9a-f]{12}", CATALOG_VERSION)


def test_model_feature_names_are_fixed_and_append_event_type_columns() -> None:
    fixed = model_feature_names()
    assert fixed == model_feature_names()
    assert "classic_pes" not in fixed
    assert "adoption_percentile" not in fixed
    assert {"tenure_days", "seats", "plan", "events_30d", "days_to_renewal"} <= set(fixed)
    frame = pd.DataFrame(columns=["account_id", "as_of", "events_type_login_30d", *fixed])
    assert model_feature_names(frame) == [*fixed, "events_type_login_30d"]


def test_event_type_columns_stay_unique_when_slugs_collide() -> None:
    columns = event_type_columns(["Log In", "log-in", "other"])
    assert list(columns.values()) == ["events_type_log_in_30d", "events_type_log_in_2_30d",
                                      "events_type_other_2_30d"]


@pytest.mark.parametrize(
    ("start", "months", "as_of", "expected"),
    [
        ("2024-01-31", 1, "2024-02-15", "2024-02-29"),  # clamped to the month's end
        ("2024-01-31", 1, "2024-03-01", "2024-03-31"),  # computed from the start, not the clamped date
        ("2024-01-15T10:00:00", 12, "2024-06-01", "2025-01-15T10:00:00"),
        ("2024-01-15", 3, "2024-04-15", "2024-04-15"),  # a renewal exactly at as_of: 0 days
        ("2024-06-01", 1, "2024-06-01", "2024-07-01"),  # started at as_of: the first renewal is next
    ],
)
def test_next_renewal_adds_whole_billing_periods_to_the_period_start(
    start: str, months: int, as_of: str, expected: str
) -> None:
    renewal = next_renewal(
        np.array([start], dtype="datetime64[us]"),
        np.array([float(months)]),
        np.array([as_of], dtype="datetime64[us]"),
    )
    assert renewal[0] == np.datetime64(expected, "us")


def test_classic_pes_is_the_mean_of_percentiles_among_accounts_at_the_same_as_of() -> None:
    as_of = pd.Timestamp("2024-06-01", tz="UTC")
    features = pd.DataFrame({
        "as_of": [as_of] * 3,
        "core_events_per_active_user_30d": [1.0, 2.0, np.nan],
        "core_events_ever_share": [0.2, 0.4, 0.0],
        "dau_mau_30d": [0.1, 0.5, np.nan],
        "active_users_30d": [2, 4, 0],
        "new_users_30d": [0, 2, 0],
        "resurrected_users_30d": [0, 0, 0],
        "dropped_users_30d": [1, 0, 0],
    })
    pes = add_classic_pes(features)
    np.testing.assert_allclose(pes["adoption"], [1.0, 2.0, 0.0])
    np.testing.assert_allclose(pes["growth"], [-1 / 3, 1.0, 0.0])
    np.testing.assert_allclose(pes["stickiness_percentile"], [200 / 3, 100.0, 100 / 3])
    np.testing.assert_allclose(pes["classic_pes"], pes.filter(like="_percentile").mean(axis=1))
    multiplicative = add_classic_pes(features, "multiplicative")
    assert multiplicative["classic_pes"].iloc[1] == pytest.approx(100.0)


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, 2),  # as_of, interleaved
            st.sampled_from([0.0, 0.5, 1.0, 2.0, np.nan]),  # adoption: ties and missing values
            st.sampled_from([0.1, 0.2, 0.5, np.nan]),  # stickiness
            st.integers(0, 3), st.integers(0, 2), st.integers(0, 2), st.integers(0, 2),  # users
        ),
        min_size=1, max_size=40,
    )
)
def test_percentiles_are_the_average_rank_among_the_accounts_of_the_same_as_of(rows: list[tuple]) -> None:
    # The reference is pandas' grouped rank (ties share their average rank, missing values stay
    # missing) and pandas' row mean: the definition, computed another way.
    features = pd.DataFrame(rows, columns=[
        "j", "core_events_per_active_user_30d", "dau_mau_30d", "active_users_30d", "new_users_30d",
        "resurrected_users_30d", "dropped_users_30d",
    ])
    weeks = pd.to_timedelta(features.pop("j") * 7, unit="D")
    features["as_of"] = pd.Timestamp("2024-06-01", tz="UTC") + weeks
    features["core_events_ever_share"] = features["core_events_per_active_user_30d"]
    pes = add_classic_pes(features)
    for name in ("adoption", "stickiness", "growth"):
        expected = pes.groupby("as_of")[name].rank(method="average", pct=True) * 100.0
        np.testing.assert_array_equal(pes[f"{name}_percentile"], expected)
    percentiles = pes[["adoption_percentile", "stickiness_percentile", "growth_percentile"]]
    np.testing.assert_array_equal(pes["classic_pes"], percentiles.mean(axis=1, skipna=True))
    multiplicative = add_classic_pes(features, "multiplicative")["classic_pes"]
    np.testing.assert_array_equal(multiplicative, (percentiles / 100.0).prod(axis=1, skipna=False) * 100.0)


@settings(max_examples=300, deadline=None)
@given(
    start=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2024, 12, 31)),
    months=st.integers(min_value=1, max_value=36),
    elapsed=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=4 * 365)),
)
def test_next_renewal_is_the_first_period_end_at_or_after_as_of(
    start: datetime, months: int, elapsed: timedelta
) -> None:
    # Brute force: step through the periods one by one (pandas' DateOffset clamps month ends too).
    as_of = start + elapsed
    first_start = pd.Timestamp(start).floor("us")
    k = 1
    while first_start + pd.DateOffset(months=k * months) < pd.Timestamp(as_of).floor("us"):
        k += 1
    renewal = next_renewal(
        np.array([first_start.to_datetime64()], dtype="datetime64[us]"),
        np.array([float(months)]),
        np.array([pd.Timestamp(as_of).floor("us").to_datetime64()], dtype="datetime64[us]"),
    )
    assert renewal[0] == (first_start + pd.DateOffset(months=k * months)).to_datetime64()
