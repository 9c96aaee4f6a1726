"""Point-in-time state at each as_of: who is present, subscriptions, and "ever" aggregates.

*Present* at as_of (the snapshot population, the same as label eligibility):

- subscription mode: the account has a subscription active at as_of,
  ``start <= as_of < end`` (or ``end`` is null). An account whose subscription
  ended at or before as_of has already churned and is not in the snapshot;
- activity mode (no subscriptions): the account has an event in
  ``[as_of - horizon, as_of)``.

A subscription is known from its ``start`` instant; its recorded ``end`` is only
ever compared with as_of (is it still active?), never used as a date. That is
the leakage rule for contract features: the next renewal comes from the period
start plus the billing period (in :mod:`pes_ml.features.finish`), because an end
date is cut short when an account churns mid-term.

"Ever" features (days since the last event, share of core events ever used...)
need the whole history before each as_of. Rather than join the history once per
as_of, days are put in *buckets* between consecutive as_of dates, aggregated once
per (account, bucket), and accumulated with a running window over the buckets.
"""

from __future__ import annotations

import ibis
import ibis.expr.types as ir

from pes_ml.features.definitions import CORE_N, FIRST_CORE, FIRST_DAY
from pes_ml.features.inputs import AS_OF_90D, DAY, AsOfGrid, J
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

BUCKET = "bucket"
_SPINE_FLAG = "spine"


def _active_at(subs: ir.Table, instant: ir.TimestampValue) -> ir.BooleanValue:
    return (subs[START] <= instant) & (subs[END].isnull() | (subs[END] > instant))


def subscription_spine(subscriptions: ir.Table, grid: AsOfGrid) -> ir.Table:
    """(account_id, j) for every account with a subscription active at as_of."""
    asof = grid.as_of_table()
    active = subscriptions.join(asof, _active_at(subscriptions, asof[AS_OF]))
    return active.select(ACCOUNT_ID, J).distinct()


def activity_candidates(event_days: ir.Table, grid: AsOfGrid) -> ir.Table:
    """(account_id, j) for every account with events: filtered to the horizon later (activity mode)."""
    accounts = event_days.select(ACCOUNT_ID).distinct()
    return accounts.cross_join(grid.as_of_table().select(J))


def subscription_state(subscriptions: ir.Table, grid: AsOfGrid) -> ir.Table:
    """Commercial and contract state per (account_id, j) from the subscriptions active at as_of.

    MRR and seats are summed over active subscriptions; the contract fields
    (plan, billing period, discount, auto-renew, period start) come from the one
    that started last.
    """
    asof = grid.as_of_table()
    active = subscriptions.join(asof, _active_at(subscriptions, asof[AS_OF]))
    start = active[START]
    now = active.group_by([ACCOUNT_ID, J]).aggregate(
        mrr=active[MRR].sum(),
        sub_seats=active[SEATS].sum(),
        period_start=start.max(),
        sub_plan=active[PLAN].argmax(start),
        billing_period_months=active[BILLING_PERIOD_MONTHS].argmax(start),
        discount=active[DISCOUNT].argmax(start),
        auto_renew=active[AUTO_RENEW].cast("float64").argmax(start),
    )
    before = subscriptions.join(asof, _active_at(subscriptions, asof[AS_OF_90D]))
    mrr_90d = before.group_by([ACCOUNT_ID, J]).aggregate(
        mrr_90d_ago=before[MRR].sum(), active_90d_ago=before.count()
    )
    started = subscriptions.join(asof, subscriptions[START] <= asof[AS_OF])
    first = started.group_by([ACCOUNT_ID, J]).aggregate(first_start=started[START].min())
    return now.left_join(mrr_90d, [ACCOUNT_ID, J]).select(~ibis.selectors.endswith("_right")).left_join(
        first, [ACCOUNT_ID, J]
    ).select(~ibis.selectors.endswith("_right"))


def account_attributes(accounts: ir.Table) -> ir.Table:
    """created_at, plan, segment and seats per account (one row per account)."""
    return accounts.group_by(ACCOUNT_ID).aggregate(
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


def history_aggregates(
    account_days: ir.Table,
    first_days: ir.Table,
    core_firsts: ir.Table | None,
    spine: ir.Table,
    grid: AsOfGrid,
) -> ir.Table:
    """Running "ever" aggregates per (account_id, j) of the spine.

    Parameters
    ----------
    account_days
        :func:`~pes_ml.features.definitions.account_days` (with ``core_n`` when core events are known).
    first_days
        :func:`~pes_ml.features.definitions.user_first_days`.
    core_firsts
        :func:`~pes_ml.features.definitions.core_first_days`, or None without core events.
    spine
        (account_id, j) of the snapshot population.
    grid
        The as_of grid.

    Returns
    -------
    ibis.expr.types.Table
        last_day, last_core_day, last_new_user_day (day numbers, NULL when none
        before as_of), core_events_ever (distinct core events used before as_of),
        first_event_day and first_core_day (NULL when none before as_of).
    """
    per_bucket = account_days.mutate(**{BUCKET: _bucket(account_days[DAY], grid)})
    null_int = ibis.null("int64")

    def shaped(table: ir.Table, **values: ir.Value) -> ir.Table:
        columns = {"last_day": null_int, "last_core_day": null_int, "last_new_user_day": null_int,
                   "core_first": null_int, "first_event_day": null_int, "first_core_day": null_int, **values}
        return table.select(
            ACCOUNT_ID,
            BUCKET,
            **{name: value.cast("int64") for name, value in columns.items()},
            **{J: null_int, _SPINE_FLAG: ibis.literal(0, type="int64")},
        )

    if CORE_N in per_bucket.columns:
        core_day = ibis.ifelse(per_bucket[CORE_N] > 0, per_bucket[DAY], null_int)
    else:
        core_day = null_int
    activity = per_bucket.mutate(core_day=core_day)
    activity = activity.group_by([ACCOUNT_ID, BUCKET]).aggregate(
        last_day=activity[DAY].max(),
        last_core_day=activity["core_day"].max(),
        first_day=activity[DAY].min(),
        first_core_day=activity["core_day"].min(),
    )
    parts = [shaped(activity, last_day=activity["last_day"], last_core_day=activity["last_core_day"],
                    first_event_day=activity["first_day"], first_core_day=activity["first_core_day"])]
    users = first_days.mutate(**{BUCKET: _bucket(first_days[FIRST_DAY], grid)})
    users = users.group_by([ACCOUNT_ID, BUCKET]).aggregate(last_new_user_day=users[FIRST_DAY].max())
    parts.append(shaped(users, last_new_user_day=users["last_new_user_day"]))
    if core_firsts is not None:
        firsts = core_firsts.mutate(**{BUCKET: _bucket(core_firsts[FIRST_CORE], grid)})
        firsts = firsts.group_by([ACCOUNT_ID, BUCKET]).aggregate(core_first=firsts.count())
        parts.append(shaped(firsts, core_first=firsts["core_first"]))
    spine_rows = spine.select(
        ACCOUNT_ID,
        **{BUCKET: spine[J].cast("int64")},
        last_day=null_int, last_core_day=null_int, last_new_user_day=null_int, core_first=null_int,
        first_event_day=null_int, first_core_day=null_int,
        **{J: spine[J].cast("int64"), _SPINE_FLAG: ibis.literal(1, type="int64")},
    )
    rows = ibis.union(*parts, spine_rows)
    # Data rows of bucket j sort before the spine row of as_of j: the running window sees them.
    window = ibis.window(group_by=ACCOUNT_ID, order_by=[BUCKET, _SPINE_FLAG], preceding=None, following=0)
    running = rows.mutate(
        last_day=rows["last_day"].max().over(window),
        last_core_day=rows["last_core_day"].max().over(window),
        last_new_user_day=rows["last_new_user_day"].max().over(window),
        core_events_ever=rows["core_first"].sum().over(window),
        first_event_day=rows["first_event_day"].min().over(window),
        first_core_day=rows["first_core_day"].min().over(window),
    )
    return running.filter(running[_SPINE_FLAG] == 1).select(
        ACCOUNT_ID, J, "last_day", "last_core_day", "last_new_user_day", "core_events_ever",
        "first_event_day", "first_core_day",
    )
