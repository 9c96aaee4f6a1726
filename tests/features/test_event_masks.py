"""Event-type bit masks: distinct event types and core events, the default core-event choice.

Each event type owns one bit of a 62-bit mask word, so a log with more than 62
event types spreads them over several words; core events get a dense mask of
their own. These tests check the results against plain Python counts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pes_ml.config import FeatureConfig
from tests.features.conftest import AS_OF, DAY, Engine, make_events, open_subscriptions


def _many_types_log(n_types: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(3_000):
        rows.append((
            f"a{rng.integers(8)}", f"u{rng.integers(5)}", f"t{rng.integers(n_types):03d}",
            AS_OF - DAY * float(rng.uniform(0.0, 60.0)),
        ))
    return make_events(rows)


def test_distinct_event_types_and_core_events_span_several_mask_words(duck: Engine) -> None:
    # 150 event types: three mask words. Core events sit in the first, second and third word.
    events = _many_types_log(150, seed=11)
    core = ["t001", "t070", "t140", "t149"]
    features = duck.features(
        events, subscriptions=open_subscriptions([f"a{i}" for i in range(8)]),
        config=FeatureConfig(event_types=["t000"], core_events=core),
    ).set_index("account_id")

    last30 = events[events["timestamp"] >= AS_OF - 30 * DAY]
    expected_types = last30.groupby("account_id")["event"].nunique()
    core30 = last30[last30["event"].isin(core)]
    expected_core_used = core30.groupby("account_id")["event"].nunique()
    # Adoption numerator: distinct (user, core event) pairs per account, per active user.
    pairs = core30.drop_duplicates(["account_id", "user_id", "event"]).groupby("account_id").size()
    users = last30.groupby("account_id")["user_id"].nunique()
    expected_ever = events[events["event"].isin(core)].groupby("account_id")["event"].nunique() / len(core)

    assert expected_types.max() > 62  # the log really needs more than one word
    for account in features.index:
        assert features.loc[account, "event_types_30d"] == expected_types.get(account, 0), account
        assert features.loc[account, "core_events_used_30d"] == expected_core_used.get(account, 0), account
        assert features.loc[account, "core_events_per_active_user_30d"] == (
            pairs.get(account, 0) / users[account]
        ), account
        assert features.loc[account, "core_events_ever_share"] == expected_ever.get(account, 0.0), account


def test_a_pinned_core_event_absent_from_the_log_is_never_used(duck: Engine) -> None:
    events = make_events([("a0", "u0", "login", AS_OF - DAY), ("a0", "u1", "export", AS_OF - 2 * DAY)])
    features = duck.features(
        events, subscriptions=open_subscriptions(["a0"]),
        config=FeatureConfig(event_types=["login"], core_events=["never_seen", "export"]),
    )
    assert features.loc[0, "core_events_used_30d"] == 1
    assert features.loc[0, "core_events_ever_share"] == 0.5
    assert features.loc[0, "core_events_per_active_user_30d"] == 0.5  # one (user, core event) pair, 2 users


def test_default_core_events_are_those_used_by_most_users_of_present_accounts(duck: Engine) -> None:
    first = AS_OF
    rows = []
    # "report": 3 users; "share": 3 users (ties by name: "report" first); "export": 2 users
    # (one user using it twice counts once); "login": 1 user.
    for user in ("u1", "u2", "u3"):
        rows.append(("a1", user, "report", first - 10 * DAY))
        rows.append(("a2", user, "share", first - 20 * DAY))
    rows += [("a1", "u1", "export", first - 5 * DAY), ("a1", "u1", "export", first - 6 * DAY),
             ("a2", "u9", "export", first - 7 * DAY), ("a1", "u1", "login", first - 3 * DAY)]
    # Not counted: a churned account (no subscription at the first as_of), an event more than
    # 90 days before it, an event after it, and an event without a user.
    rows += [("gone", f"g{i}", "login", first - DAY) for i in range(5)]
    rows += [("a1", f"old{i}", "login", first - 91 * DAY) for i in range(5)]
    rows += [("a1", f"late{i}", "login", first + DAY) for i in range(5)]
    events = make_events(rows)
    events = pd.concat([events, make_events([("a2", None, "login", first - DAY)] * 5)], ignore_index=True)
    events.loc[events["user_id"] == "None", "user_id"] = None

    features = duck.features(
        events, as_of=[first, first + 30 * DAY], subscriptions=open_subscriptions(["a1", "a2"]),
        config=FeatureConfig(event_types=["login"], n_core_events=3),
    )
    assert features.attrs["core_events"] == ["report", "share", "export"]


def test_more_than_127_event_types_in_a_window_are_counted(duck: Engine) -> None:
    # DuckDB's BIT_COUNT returns an 8-bit integer: the sum over three mask words must not
    # stay 8-bit (it overflowed past 127 types).
    events = make_events([("a0", "u0", f"t{k:03d}", AS_OF - DAY * (1 + k % 20)) for k in range(140)])
    features = duck.features(events, subscriptions=open_subscriptions(["a0"]),
                             config=FeatureConfig(event_types=["t000"], core_events=["t001"]))
    assert features.loc[0, "event_types_30d"] == 140
