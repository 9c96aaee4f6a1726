"""Point-in-time tests: every window is half-open, ``as_of - n days <= timestamp < as_of``.

Boundary rows are commented; the property test asserts that events at or after
as_of never move any feature of any account; subscription changes after as_of
never move commercial or contract features.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pes_ml.config import FeatureConfig
from tests.features.conftest import AS_OF, DAY, US, Engine, make_events, open_subscriptions, row

CONFIG = FeatureConfig(event_types=["login"], core_events=["login"])


def _count(value: Any) -> bool:
    return bool(value == 1)


def _defined(value: Any) -> bool:
    return bool(pd.notna(value))


def _nonzero(value: Any) -> bool:
    return bool(value != 0)


# feature, window in days, "is the boundary event counted?"
WINDOWED: list[tuple[str, int, Callable[[Any], bool]]] = [
    ("events_7d", 7, _count),
    ("events_30d", 30, _count),
    ("events_90d", 90, _count),
    ("value_sum_30d", 30, _count),
    ("value_sum_90d", 90, _count),
    ("events_type_login_30d", 30, _count),
    ("active_users_7d", 7, _count),
    ("active_users_30d", 30, _count),
    ("active_users_90d", 90, _count),
    ("active_days_30d", 30, _count),
    ("event_types_30d", 30, _count),
    ("core_events_used_30d", 30, _count),
    ("new_users_30d", 30, _count),
    ("events_per_active_user_7d", 7, _defined),
    ("dau_mau_30d", 30, _defined),
    ("dau_wau_7d", 7, _defined),
    ("core_events_per_active_user_30d", 30, _defined),
    ("l28_1to7_share_28d", 28, _defined),
    ("wau_slope_12w", 84, _nonzero),
]


@pytest.mark.parametrize(("feature", "window", "counted"), WINDOWED, ids=[w[0] for w in WINDOWED])
def test_window_is_half_open(duck: Engine, feature: str, window: int, counted: Callable[[Any], bool]) -> None:
    start = AS_OF - window * DAY
    events = make_events([
        ("last_instant", "u", "login", AS_OF - US, 1.0),  # 1 µs before as_of: inside
        ("at_as_of", "u", "login", AS_OF, 1.0),  # == as_of: excluded (it is the label's)
        ("window_start", "u", "login", start, 1.0),  # == as_of - window: inside (closed start)
        ("before_start", "u", "login", start - US, 1.0),  # 1 µs before the window: excluded
    ])
    accounts = ["last_instant", "at_as_of", "window_start", "before_start"]
    features = duck.features(events, subscriptions=open_subscriptions(accounts), config=CONFIG)
    seen = {account: counted(row(features, account)[feature]) for account in accounts}
    assert seen == {"last_instant": True, "at_as_of": False, "window_start": True, "before_start": False}


def test_prior_window_is_half_open(duck: Engine) -> None:
    # Every account also has one event in the last 30 days; the trend is last 30 / prior 30 days.
    recent = [(a, "u", "login", AS_OF - DAY) for a in ("p_end", "p_after", "p_start", "p_before")]
    events = make_events(recent + [
        ("p_end", "u", "login", AS_OF - 30 * DAY - US),  # last instant of the prior window: prior
        ("p_after", "u", "login", AS_OF - 30 * DAY),  # first instant of the last 30 days: not prior
        ("p_start", "u", "login", AS_OF - 60 * DAY),  # first instant of the prior window: prior
        ("p_before", "u", "login", AS_OF - 60 * DAY - US),  # before the prior window: not prior
    ])
    subs = open_subscriptions(["p_end", "p_after", "p_start", "p_before"])
    features = duck.features(events, subscriptions=subs, config=CONFIG)
    trend = {a: row(features, a)["events_trend_30d"] for a in ("p_end", "p_after", "p_start", "p_before")}
    assert trend["p_end"] == 1.0
    assert np.isnan(trend["p_after"])
    assert trend["p_start"] == 1.0
    assert np.isnan(trend["p_before"])
    assert row(features, "p_end")["dropped_users_30d"] == 0
    assert row(features, "p_end")["active_users_trend_30d"] == 1.0


def test_wau_slope_is_the_least_squares_slope_of_weekly_active_users(duck: Engine) -> None:
    # Week k before as_of is [as_of - 7(k+1) days, as_of - 7k days). Two days of one user in one
    # week count once; an event 12 weeks back or more is outside the 12 weeks.
    def at(week: int, day: int) -> pd.Timestamp:
        return AS_OF - (7 * week + day) * DAY - US

    events = make_events([
        ("a", "u1", "login", at(0, 0)), ("a", "u2", "login", at(0, 3)), ("a", "u2", "login", at(11, 6)),
        ("a", "u3", "login", at(5, 1)), ("a", "u3", "login", at(5, 2)), ("a", "u4", "login", at(3, 4)),
        ("a", "u4", "login", at(4, 0)), ("a", "u5", "login", at(12, 0)), ("a", "u1", "login", at(7, 5)),
    ])
    wau = np.zeros(12)  # week k ago, from the rows above
    for week in (0, 0, 11, 5, 3, 4, 7):
        wau[week] += 1
    x = 11 - np.arange(12)  # oldest week first on the time axis
    expected = np.polyfit(x, wau, 1)[0]
    features = duck.features(events, subscriptions=open_subscriptions(["a"]), config=CONFIG)
    assert row(features, "a")["wau_slope_12w"] == pytest.approx(expected, rel=1e-12)


def test_days_since_last_event_counts_whole_days_before_as_of(duck: Engine) -> None:
    events = make_events([
        ("r0", "u", "login", AS_OF - US),  # last instant: 0 days
        ("r0b", "u", "login", AS_OF - DAY),  # start of the last 24 hours: still 0 days
        ("r1", "u", "login", AS_OF - DAY - US),  # just before: 1 day
        ("rnone", "u", "login", AS_OF),  # only at as_of: no event before as_of
    ])
    features = duck.features(events, subscriptions=open_subscriptions(["r0", "r0b", "r1", "rnone"]))
    assert row(features, "r0")["days_since_last_event"] == 0
    assert row(features, "r0b")["days_since_last_event"] == 0
    assert row(features, "r1")["days_since_last_event"] == 1
    assert np.isnan(row(features, "rnone")["days_since_last_event"])
    assert np.isnan(row(features, "rnone")["days_since_last_new_user"])


def test_tenure_counts_whole_days_from_the_first_event_like_days_since_last_event(duck: Engine) -> None:
    # Without subscriptions or created_at, an account starts at its first event. The rollups keep the
    # event's day, so it counts from the end of that day: never more than the exact whole days.
    events = make_events([
        ("t0", "u", "login", AS_OF - US),  # 1 µs old: 0 days
        ("t0b", "u", "login", AS_OF - DAY),  # exactly 24 hours old: the last 24 hours, 0 days
        ("t1", "u", "login", AS_OF - DAY - US),  # just over 24 hours: 1 day
        ("t11", "u", "login", AS_OF - 11 * DAY - 14 * pd.Timedelta(hours=1)),  # 11.58 days: 11
        ("t11", "u", "core", AS_OF - 9 * DAY - US),  # first core event 2 days later (by day)
        ("tc", "u", "login", AS_OF - 5 * DAY - US),  # created 10 days ago, first event 5 days ago
    ])
    accounts = pd.DataFrame({"account_id": ["tc"],
                             "created_at": [AS_OF - 10 * DAY + pd.Timedelta(hours=3)]})  # 9.9 days: 9
    config = FeatureConfig(event_types=["login", "core"], core_events=["core"])
    features = duck.features(events, accounts=accounts, config=config)
    assert features.attrs["mode"] == "activity"
    tenure = features.set_index("account_id")["tenure_days"]
    assert tenure.to_dict() == {"t0": 0, "t0b": 0, "t1": 1, "t11": 11, "tc": 9}
    assert (tenure >= features.set_index("account_id")["days_since_last_event"]).all()
    assert row(features, "t11")["days_to_first_core_event"] == 2


def test_presence_follows_active_subscription_at_as_of(duck: Engine) -> None:
    events = make_events([("s_open", "u", "login", AS_OF - DAY)])
    subs = pd.DataFrame({
        "account_id": ["s_starts_at", "s_starts_after", "s_ends_at", "s_ends_after", "s_open"],
        "start": [AS_OF, AS_OF + US, AS_OF - 9 * DAY, AS_OF - 9 * DAY, AS_OF - 9 * DAY],
        "end": [None, None, AS_OF, AS_OF + US, None],
    })
    subs["end"] = pd.to_datetime(subs["end"], utc=True)
    features = duck.features(events, subscriptions=subs)
    # start <= as_of < end: starting at as_of is present, ending at as_of has already churned.
    assert sorted(features["account_id"]) == ["s_ends_after", "s_open", "s_starts_at"]


def test_activity_mode_presence_needs_an_event_in_the_horizon(duck: Engine) -> None:
    events = make_events([
        ("h_start", "u", "login", AS_OF - 90 * DAY),  # first instant of the horizon: present
        ("h_before", "u", "login", AS_OF - 90 * DAY - US),  # before it: already churned
        ("h_at", "u", "login", AS_OF),  # only at as_of: not yet seen
    ])
    features = duck.features(events, horizon_days=90)
    assert features.attrs["mode"] == "activity"
    assert list(features["account_id"]) == ["h_start"]


SUB_COLUMNS = ["mrr", "seats", "plan", "billing_period_months", "days_to_renewal", "renewal_in_horizon",
               "discount", "auto_renew", "mrr_change_90d", "tenure_days"]


def _subscription(**overrides: Any) -> dict[str, Any]:
    base = {"account_id": "c1", "start": pd.Timestamp("2024-01-15", tz="UTC"), "end": pd.NaT, "mrr": 100.0,
            "seats": 5.0, "plan": "pro", "billing_period_months": 12.0, "discount": 0.1, "auto_renew": True}
    return {**base, **overrides}


def _subs(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame["end"] = pd.to_datetime(frame["end"], utc=True).dt.as_unit("us")
    return frame


@pytest.mark.parametrize(
    "later",
    [
        pytest.param([_subscription(end=AS_OF + 10 * DAY)], id="mid-term churn cuts the end short"),
        pytest.param([_subscription(end=AS_OF + 5 * DAY),
                      _subscription(start=AS_OF + 5 * DAY, mrr=300.0, seats=9.0, plan="enterprise")],
                     id="upgrade after as_of"),
        pytest.param([_subscription(), _subscription(account_id="c2", start=AS_OF + US)],
                     id="a new account after as_of"),
        pytest.param([_subscription(end=AS_OF + 400 * DAY, discount=0.1)], id="end recorded later"),
    ],
)
def test_subscription_changes_after_as_of_do_not_move_commercial_features(
    duck: Engine, later: list[dict[str, Any]]
) -> None:
    events = make_events([("c1", "u", "login", AS_OF - DAY)])
    before = duck.features(events, subscriptions=_subs([_subscription()]))
    after = duck.features(events, subscriptions=_subs(later))
    pd.testing.assert_frame_equal(before, after)
    assert row(after, "c1")[SUB_COLUMNS].notna().all()


def test_mid_term_churn_does_not_change_days_to_renewal(duck: Engine) -> None:
    events = make_events([("c1", "u", "login", AS_OF - DAY)])
    churned = duck.features(events, subscriptions=_subs([_subscription(end=AS_OF + 30 * DAY)]))
    # Annual plan from 2024-01-15: the next renewal is 2025-01-15, whatever the recorded end says.
    assert row(churned, "c1")["days_to_renewal"] == (pd.Timestamp("2025-01-15", tz="UTC") - AS_OF).days
    assert row(churned, "c1")["renewal_in_horizon"] == 0.0


def test_contract_fields_come_from_the_largest_active_subscription(duck: Engine) -> None:
    events = make_events([("c1", "u", "login", AS_OF - DAY)])
    # An annual contract from 2024-01-15 and a small monthly add-on bought later, on 2024-05-20.
    addon = _subscription(start=pd.Timestamp("2024-05-20", tz="UTC"), mrr=20.0, seats=1.0, plan="addon",
                          billing_period_months=1.0, discount=0.0, auto_renew=False)
    features = duck.features(events, subscriptions=_subs([_subscription(), addon]))
    c1 = row(features, "c1")
    # The annual renewal (2025-01-15), not the add-on's monthly one (2024-06-20).
    assert c1["days_to_renewal"] == (pd.Timestamp("2025-01-15", tz="UTC") - AS_OF).days
    contract = (c1["billing_period_months"], c1["discount"], c1["auto_renew"], c1["plan"])
    assert contract == (12.0, 0.1, 1.0, "pro")
    assert (c1["mrr"], c1["seats"]) == (120.0, 6.0)  # MRR and seats still add up over both
    # Equal MRR: the latest started is the main subscription.
    same = _subscription(start=pd.Timestamp("2024-05-20", tz="UTC"), billing_period_months=1.0)
    tied = row(duck.features(events, subscriptions=_subs([_subscription(), same])), "c1")
    assert tied["billing_period_months"] == 1.0
    assert tied["days_to_renewal"] == (pd.Timestamp("2024-06-20", tz="UTC") - AS_OF).days


def test_mrr_change_is_missing_when_the_mrr_90_days_before_is_unknown(duck: Engine) -> None:
    events = make_events([(account, "u", "login", AS_OF - DAY) for account in ("up", "unknown", "new")])
    ninety = AS_OF - 90 * DAY
    subs = _subs([
        # 100 until 90 days before as_of and after: then 150 from 10 days before as_of.
        _subscription(account_id="up", end=AS_OF - 10 * DAY),
        _subscription(account_id="up", start=AS_OF - 10 * DAY, mrr=150.0),
        # Active 90 days before, but with no MRR recorded then.
        _subscription(account_id="unknown", mrr=None, end=AS_OF - 10 * DAY),
        _subscription(account_id="unknown", start=AS_OF - 10 * DAY, mrr=150.0),
        # Started after that day: no subscription to compare with.
        _subscription(account_id="new", start=ninety + US),
    ])
    change = duck.features(events, subscriptions=subs).set_index("account_id")["mrr_change_90d"]
    assert change["up"] == 50.0
    assert np.isnan(change["unknown"])  # not 150 - 0: an unknown MRR is not a zero MRR
    assert np.isnan(change["new"])


@pytest.mark.parametrize("engine", ["duckdb", "spark"])
def test_main_subscription_ranks_missing_mrr_lowest_on_both_engines(
    engine: str, duckdb_backend: Any, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    backend = duckdb_backend if engine == "duckdb" else request.getfixturevalue("spark_backend")
    on = Engine(backend, tmp_path)
    events = make_events([(a, "u", "login", AS_OF - DAY) for a in ("c1", "c2", "c3")])
    later = pd.Timestamp("2024-05-20", tz="UTC")
    rows = [
        # c1: a later add-on with no MRR does not beat the annual contract with one.
        _subscription(),
        _subscription(start=later, mrr=None, plan="addon", billing_period_months=1.0),
        # c2: no active subscription has an MRR: the latest started is the main one.
        _subscription(account_id="c2", mrr=None),
        _subscription(account_id="c2", start=later, mrr=None, plan="addon", billing_period_months=1.0),
        # c3: a larger subscription that ended before as_of is not a candidate.
        _subscription(account_id="c3", mrr=500.0, plan="big", end=AS_OF - 10 * DAY),
        _subscription(account_id="c3", start=later, mrr=50.0, plan="small", billing_period_months=1.0),
    ]
    features = on.features(events, subscriptions=_subs(rows))
    assert (row(features, "c1")["plan"], row(features, "c1")["billing_period_months"]) == ("pro", 12.0)
    assert row(features, "c1")["mrr"] == 100.0  # the missing MRR adds nothing
    assert (row(features, "c2")["plan"], row(features, "c2")["billing_period_months"]) == ("addon", 1.0)
    assert (row(features, "c3")["plan"], row(features, "c3")["mrr"]) == ("small", 50.0)


# --- property: events at or after as_of never change a feature --------------------------------

ACCOUNTS = st.sampled_from(["a1", "a2", "a3"])
USERS = st.sampled_from(["u1", "u2", "u3", None])
EVENTS = st.sampled_from(["e1", "e2", "e3", "e4"])
MAX_US = 120 * 86_400 * 1_000_000


def _events(offsets: st.SearchStrategy[int]) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    event = st.tuples(ACCOUNTS, USERS, EVENTS, offsets, st.one_of(st.none(), st.floats(0, 10)))
    return st.lists(event, max_size=8)


PAST = _events(st.integers(-MAX_US, -1))
FUTURE = _events(st.integers(0, 40 * 86_400 * 1_000_000))


def _frame(rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    return make_events([(a, u, e, AS_OF + pd.Timedelta(microseconds=o), v) for a, u, e, o, v in rows])


@pytest.fixture(scope="module")
def duck_module(duckdb_backend: Any, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return Engine(duckdb_backend, Path(tmp_path_factory.mktemp("property")))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(past=PAST.filter(lambda rows: len(rows) > 0), future_a=FUTURE, future_b=FUTURE)
def test_events_at_or_after_as_of_never_change_a_feature(
    duck_module: Engine, past: list[tuple[Any, ...]], future_a: list[tuple[Any, ...]],
    future_b: list[tuple[Any, ...]],
) -> None:
    # Activity mode: presence itself depends on events, so it is under test too.
    with_a = duck_module.features(_frame(past + future_a))
    with_b = duck_module.features(_frame(past + future_b))
    pd.testing.assert_frame_equal(with_a, with_b, rtol=1e-12)
    assert with_a.attrs["event_types"] == with_b.attrs["event_types"]
    assert with_a.attrs["core_events"] == with_b.attrs["core_events"]


def test_many_as_of_in_one_pass_equal_one_as_of_at_a_time(duck: Engine) -> None:
    rng = np.random.default_rng(3)
    n = 400
    offsets = rng.integers(-200 * 86_400, 0, n) * 1_000_000 + rng.integers(0, 1_000_000, n)
    events = make_events([
        (f"a{rng.integers(6)}", f"u{rng.integers(4)}", f"e{rng.integers(5)}",
         AS_OF + pd.Timedelta(microseconds=int(o)), float(rng.random()))
        for o in offsets
    ])
    subs = open_subscriptions([f"a{i}" for i in range(6)], mrr=10.0, billing_period_months=1.0)
    dates = [AS_OF - 60 * DAY, AS_OF - 30 * DAY, AS_OF]
    together = duck.features(events, dates, subscriptions=subs, config=CONFIG)
    for date in dates:
        alone = duck.features(events, [date], subscriptions=subs, config=CONFIG)
        mine = together[together["as_of"] == date].reset_index(drop=True)
        # Percentiles are among accounts at the same as_of, so they match too.
        pd.testing.assert_frame_equal(mine, alone, check_like=False, rtol=1e-12)
