"""Point-in-time state at each as_of: who is present, subscriptions, and "ever" aggregates.

*Present* at as_of (the snapshot population, the same as label eligibility):

- subscription mode: the account has a subscription active at as_of,
  ``start <= as_of < end`` (or ``end`` is null). An account whose subscription
  ended at or before as_of has already churned and is not in the snapshot;
- activity mode (no subscriptions): the account has an event in
  ``[as_of - horizon, as_of)``.

Both are read off parts computed here anyway — :func:`subscription_state`'s
``active_now`` and the activity history's ``last_day`` — by
:func:`pes_ml.features.build._present`; no separate population query runs.

A subscription is known from its ``start`` instant; its recorded ``end`` is only
ever compared with as_of (is it still active?), never used as a date. That is
the leakage rule for contract features: the next renewal comes from the period
start plus the billing period (in :mod:`pes_ml.features.finish`), because an end
date is cut short when an account churns mid-term.

"Ever" features (days since the last event, share of core events ever used...)
need the whole history before each as_of. Rather than join the history once per
as_of, days are put in *buckets* between consecutive as_of dates, aggregated once
per (account, bucket), accumulated by running (cumulative) window aggregates over
the account's buckets, and each running row is spread to the as_of dates it
stands for (from its bucket up to the account's next bucket with data). The cost
grows with the output rows, not with buckets × later as_of dates (a join of every
bucket with every later as_of made dozens of weekly dates quadratic).
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import ibis
import ibis.expr.types as ir

from pes_ml.features.definitions import ACCOUNT_NUMBER, CORE_MASK, FIRST_DAY, bit_count, bit_or
from pes_ml.features.inputs import AS_OF_90D, BUCKET, DAY, AsOfGrid, J
from pes_ml.schemas import (
    ACCOUNT_ID,
    AS_OF,
    AUTO_RENEW,
    BILLING_PERIOD_MONTHS,
    CREATED_AT,
    DISCOUNT,
    END,
    MRR,
    PLAN,
    SEATS,
    SEGMENT,
    START,
)

NEXT_BUCKET: Final = "_next_bucket"


def _active_at(subs: ir.Table, instant: ir.TimestampValue) -> ir.BooleanValue:
    return (subs[START] <= instant) & (subs[END].isnull() | (subs[END] > instant))


def subscribed_accounts(subscriptions: ir.Table, instant: datetime) -> ir.Table:
    """``account_id`` of every account with a subscription active at ``instant`` (UTC), once."""
    active = subscriptions.filter(_active_at(subscriptions, ibis.literal(instant, type="timestamp('UTC')")))
    return active.select(ACCOUNT_ID).distinct()


SUBSCRIPTION_NUMBER: Final = "subscription_number"
"""A subscription's rank by the main-subscription order (:func:`numbered_subscriptions`), from 0."""
MAIN_SUBSCRIPTION: Final = "main_subscription"
"""The :data:`SUBSCRIPTION_NUMBER` of the main subscription at as_of (:func:`subscription_state`)."""
_MAIN_ORDER: Final = (MRR, START, BILLING_PERIOD_MONTHS, PLAN, DISCOUNT, AUTO_RENEW, END)


def numbered_subscriptions(subscriptions: ir.Table) -> ir.Table:
    """``subscriptions`` with their :data:`SUBSCRIPTION_NUMBER`: ranked by MRR, then start, then the
    contract fields (missing values first), so the active subscription with the largest number is
    the *main* one — the largest MRR, the latest started among equals, and a total order on every
    engine. Ranked once over the subscriptions, not once per as_of.
    """
    order = [ibis.asc(subscriptions[column], nulls_first=True) for column in _MAIN_ORDER]
    return subscriptions.mutate(**{SUBSCRIPTION_NUMBER: ibis.row_number().over(order_by=order)})


def subscription_contracts(subscriptions: ir.Table) -> ir.Table:
    """The contract fields of each subscription, by :data:`SUBSCRIPTION_NUMBER`
    (``subscriptions``: :func:`numbered_subscriptions`): what the frame takes from the main one."""
    return subscriptions.select(
        SUBSCRIPTION_NUMBER,
        period_start=subscriptions[START],
        sub_plan=subscriptions[PLAN],
        billing_period_months=subscriptions[BILLING_PERIOD_MONTHS],
        discount=subscriptions[DISCOUNT],
        auto_renew=subscriptions[AUTO_RENEW].cast("float64"),
    )


def subscription_state(subscriptions: ir.Table, grid: AsOfGrid) -> ir.Table:
    """Commercial state per (account_number, j) from the subscriptions active at as_of.

    MRR and seats are summed over active subscriptions. The contract fields
    (plan, billing period, discount, auto-renew, period start) belong to the
    *main* subscription, :data:`MAIN_SUBSCRIPTION`: the active one with the largest
    :data:`SUBSCRIPTION_NUMBER` — the largest MRR, the latest started among equals,
    so a small monthly add-on bought after an annual contract does not hide the
    annual renewal. The frame takes its fields from :func:`subscription_contracts`
    by that number (:mod:`pes_ml.features.assemble`): one aggregate here instead of
    a per-as_of search for the largest MRR and an ordered pick of each field
    (12 as_of dates at 10M events: 0.6 s for this part before). One join of the
    subscriptions started by as_of, then filtered aggregates: active now, active 90
    days earlier, first start. ``active_now`` counts the subscriptions active at
    as_of: the accounts present in subscription mode are the rows where it is positive.

    ``subscriptions`` are :func:`numbered_subscriptions`, keyed by
    :data:`~pes_ml.features.definitions.ACCOUNT_NUMBER` (:func:`~pes_ml.features.definitions.numbered`).
    """
    asof = grid.as_of_table()
    started = subscriptions.join(asof, subscriptions[START] <= asof[AS_OF])
    now, before = _active_at(started, started[AS_OF]), _active_at(started, started[AS_OF_90D])
    return started.group_by([ACCOUNT_NUMBER, J]).aggregate(
        active_now=started.count(where=now),
        mrr=started[MRR].sum(where=now),
        sub_seats=started[SEATS].sum(where=now),
        **{MAIN_SUBSCRIPTION: started[SUBSCRIPTION_NUMBER].max(where=now)},
        mrr_90d_ago=started[MRR].sum(where=before),
        active_90d_ago=started.count(where=before),
        first_start=started[START].min(),
    )


def account_attributes(accounts: ir.Table) -> ir.Table:
    """created_at, plan, segment and seats per account number
    (``accounts``: :func:`~pes_ml.features.definitions.numbered`)."""
    return accounts.group_by(ACCOUNT_NUMBER).aggregate(
        created_at=accounts[CREATED_AT].min(),
        account_plan=accounts[PLAN].max(),
        segment=accounts[SEGMENT].max(),
        account_seats=accounts[SEATS].max(),
    )


def _bucket(day: ir.IntegerValue, grid: AsOfGrid) -> ir.IntegerValue:
    """Index of the first as_of a day is before: days in bucket b are seen by as_of j >= b."""
    days = grid.days
    cases = [(day < a, b) for b, a in enumerate(days[:-1])]
    if not cases:
        return ibis.literal(0, type="int64")
    return ibis.cases(*cases, else_=len(days) - 1).cast("int64")


def _so_far() -> ibis.expr.builders.LegacyWindowBuilder:
    """The account's buckets up to and including the current one."""
    return ibis.cumulative_window(group_by=ACCOUNT_NUMBER, order_by=BUCKET)


def _next_bucket(buckets: ir.Table, grid: AsOfGrid) -> ir.Value:
    """The account's next bucket with data; the number of as_of dates after its last one."""
    following = ibis.window(group_by=ACCOUNT_NUMBER, order_by=BUCKET)
    return buckets[BUCKET].lead().over(following).fill_null(len(grid.days)).name(NEXT_BUCKET)


def _spread(running: ir.Table) -> ir.Table:
    """Each (account, bucket) row to every as_of j it stands for: ``bucket <= j < next bucket``,
    one row per j of that range (an unnested integer range: no range join)."""
    spread = running.mutate(**{J: ibis.range(running[BUCKET], running[NEXT_BUCKET]).unnest()})
    return spread.drop(BUCKET, NEXT_BUCKET)


def account_first_days(account_days: ir.Table, n_core: int) -> ir.Table:
    """Each account's first active day and first day with a core event, over all data before the
    last as_of (``account_days``: :func:`~pes_ml.features.definitions.account_days`).

    One static minimum serves every as_of: the first day before a given as_of is this one when it
    falls before that as_of, and there is none otherwise (:mod:`pes_ml.features.finish` checks).
    """
    day = account_days[DAY]
    core_day = day.min(where=account_days[CORE_MASK] != 0) if n_core else ibis.null("int64")
    return account_days.group_by(ACCOUNT_NUMBER).aggregate(first_event_day=day.min(), first_core_day=core_day)


def history_aggregates(
    account_days: ir.Table, first_days: ir.Table, n_core: int, grid: AsOfGrid
) -> tuple[ir.Table, ir.Table]:
    """Running "ever" aggregates per (account_number, j), for every account with data before as_of.

    Parameters
    ----------
    account_days
        :func:`~pes_ml.features.definitions.account_days` (with its ``core_mask``).
    first_days
        :func:`~pes_ml.features.definitions.user_first_days`.
    n_core
        The number of core events (0 when unknown).
    grid
        The as_of grid.

    Returns
    -------
    tuple of ibis.expr.types.Table
        Activity history: last_day, last_core_day (day numbers, NULL when none before
        as_of) and core_events_ever (distinct core events used before as_of); user
        history: last_new_user_day. The first event and first core event need no
        history: :func:`account_first_days` once per account.
    """
    null_int = ibis.null("int64")
    days = account_days.mutate(**{BUCKET: _bucket(account_days[DAY], grid)})
    day = days[DAY]
    per_bucket: dict[str, ir.Value] = {"last_day": day.max()}
    if n_core:
        core_day = ibis.ifelse(days[CORE_MASK] != 0, day, null_int)
        per_bucket.update(last_core_day=core_day.max(), core_used=bit_or(days[CORE_MASK]))
    buckets = days.group_by([ACCOUNT_NUMBER, BUCKET]).aggregate(**per_bucket)
    if not n_core:
        buckets = buckets.mutate(last_core_day=null_int)
    ever = _so_far()
    running: dict[str, ir.Value] = {
        "last_day": buckets["last_day"].max().over(ever),
        "last_core_day": buckets["last_core_day"].max().over(ever),
    }
    # The core events used so far: the running BIT_OR of each bucket's core mask.
    running["core_events_ever"] = (
        bit_count(bit_or(buckets["core_used"]).over(ever)) if n_core else ibis.literal(0, type="int64")
    )
    activity = _spread(buckets.select(ACCOUNT_NUMBER, BUCKET, _next_bucket(buckets, grid), **running))

    users = first_days.mutate(**{BUCKET: _bucket(first_days[FIRST_DAY], grid)})
    users = users.group_by([ACCOUNT_NUMBER, BUCKET]).aggregate(last_new_user_day=users[FIRST_DAY].max())
    last_new = users["last_new_user_day"].max().over(_so_far())
    users = users.select(ACCOUNT_NUMBER, BUCKET, _next_bucket(users, grid), last_new_user_day=last_new)
    return activity, _spread(users)
