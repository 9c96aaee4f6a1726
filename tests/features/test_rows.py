"""Which rows the FeatureFrame has, and in which order: the present accounts at each as_of,
sorted by (as_of, account_id) without a sort of the frame (pes_ml.features.assemble)."""

from __future__ import annotations

import pandas as pd
import pytest

from pes_ml.errors import DataContractError
from tests.features.conftest import AS_OF, DAY, Engine, make_events, open_subscriptions, row

# Byte order differs from case-insensitive and from insertion order; one non-ASCII id.
IDS = ["b-2", "B-1", "a-10", "a-9", "é", "Z"]


def test_rows_come_in_as_of_then_account_id_order(duck: Engine) -> None:
    events = make_events([(account, "u", "login", AS_OF - 40 * DAY) for account in reversed(IDS)])
    as_of = [AS_OF + 30 * DAY, AS_OF, AS_OF - 30 * DAY]
    features = duck.features(events, as_of, subscriptions=open_subscriptions(IDS))
    expected = sorted((t, account) for t in as_of for account in IDS)
    assert list(zip(features["as_of"], features["account_id"], strict=True)) == expected
    assert features.index.equals(pd.RangeIndex(len(expected)))


def test_as_of_dates_at_different_times_of_day_interleave_in_order(duck: Engine) -> None:
    events = make_events([(account, "u", "login", AS_OF - 40 * DAY) for account in IDS])
    as_of = [AS_OF + pd.Timedelta(hours=12), AS_OF, AS_OF + DAY]  # two grids: offsets 0 and 12 h
    features = duck.features(events, as_of, subscriptions=open_subscriptions(IDS))
    expected = sorted((t, account) for t in as_of for account in IDS)
    assert list(zip(features["as_of"], features["account_id"], strict=True)) == expected


def test_every_row_gets_its_own_accounts_parts(duck: Engine) -> None:
    # Each account has its own number of events and its own MRR, so a row that took
    # another account's part (a wrong position) would show it.
    events = make_events([
        (account, "u", "login", AS_OF - (k + 1) * DAY) for k, account in enumerate(IDS) for _ in range(k + 1)
    ])
    subs = open_subscriptions(IDS, mrr=[float(10 * (k + 1)) for k in range(len(IDS))])
    features = duck.features(events, subscriptions=subs)
    for k, account in enumerate(IDS):
        found = row(features, account)
        assert found["events_30d"] == k + 1
        assert found["mrr"] == 10.0 * (k + 1)
        assert found["days_since_last_event"] == k


def test_an_account_with_a_subscription_and_no_events_is_present_with_zero_activity(duck: Engine) -> None:
    events = make_events([("active", "u", "login", AS_OF - DAY), ("events_only", "u", "login", AS_OF - DAY)])
    features = duck.features(events, subscriptions=open_subscriptions(["active", "silent"], mrr=50.0))
    assert list(features["account_id"]) == ["active", "silent"]  # no subscription: not present
    silent = row(features, "silent")
    assert silent["events_30d"] == 0
    assert silent["active_users_30d"] == 0
    assert silent["mrr"] == 50.0
    assert pd.isna(silent["days_since_last_event"])


def test_subscription_mode_without_a_subscriptions_table_says_what_to_configure(duck: Engine) -> None:
    events = make_events([("a", "u", "login", AS_OF - DAY)])
    with pytest.raises(DataContractError, match="labels.mode is 'subscription'.*sources.subscriptions"):
        duck.features(events, mode="subscription")


@pytest.mark.parametrize("subscribed", [[], ["with_contract"]], ids=["no subscription rows", "one account"])
def test_contract_fields_are_missing_where_no_subscription_is_active(
    duck: Engine, subscribed: list[str]
) -> None:
    # Activity mode with a subscriptions table: an account without an active subscription has no
    # main subscription, so its contract fields are missing and its plan is the account's own.
    events = make_events([(a, "u", "login", AS_OF - DAY) for a in ("with_contract", "without")])
    subs = open_subscriptions(subscribed, plan="annual", billing_period_months=12.0) if subscribed else (
        open_subscriptions(["x"]).iloc[:0]
    )
    accounts = pd.DataFrame({"account_id": ["with_contract", "without"], "plan": ["free", "free"]})
    features = duck.features(events, subscriptions=subs, accounts=accounts, mode="activity")
    without = row(features, "without")
    assert pd.isna(without["billing_period_months"])
    assert pd.isna(without["days_to_renewal"])
    assert without["plan"] == "free"
    if subscribed:
        contract = row(features, "with_contract")
        assert (contract["plan"], contract["billing_period_months"]) == ("annual", 12.0)


def test_a_first_as_of_without_events_warns_that_the_whole_run_has_no_event_columns(
    duck: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    # Event types and core events are chosen before the *first* as_of (so no choice sees past any
    # as_of): an empty first as_of leaves every as_of of the run without them, and the warning says so.
    events = make_events([("a", "u", "login", AS_OF - DAY)])
    with caplog.at_level("WARNING", logger="pes_ml.features.build"):
        features = duck.features(events, [AS_OF - 200 * DAY, AS_OF], subscriptions=open_subscriptions(["a"]))
    assert "events_type_login_30d" not in features.columns
    assert row(features, "a")["events_30d"] == 1
    warned = " ".join(record.getMessage() for record in caplog.records)
    assert "this run has none at any of its as_of dates. Drop that as_of" in warned
    assert "there are no events there" in warned


def test_events_without_user_ids_warn_that_core_events_need_users(
    duck: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    events = make_events([("a", None, "login", AS_OF - DAY), ("a", None, "report", AS_OF - 2 * DAY)])
    with caplog.at_level("WARNING", logger="pes_ml.features.build"):
        features = duck.features(events, subscriptions=open_subscriptions(["a"]))
    assert row(features, "a")["events_type_login_30d"] == 1  # the event types need no users
    warned = " ".join(record.getMessage() for record in caplog.records)
    assert "is user_id mapped?" in warned
    assert "there are no events there" not in warned
