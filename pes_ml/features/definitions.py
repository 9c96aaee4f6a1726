"""Windowed feature definitions as Ibis expressions: written once, compiled for DuckDB and Spark.

The event log is read once and rolled up to ``account x user x event x day``
(:func:`rollup_events`); every window of every as_of is computed from that
rollup by an equi-join with the small ``(j, day, rel)`` grid of
:meth:`~pes_ml.features.inputs.AsOfGrid.window_days_table`, where ``rel`` is
the number of whole days before as_of (0 = the last 24 hours). A window of
``n`` days is ``rel < n``: the half-open ``as_of - n days <= timestamp < as_of``.

The functions return *raw* aggregates (counts, sums, distinct counts) per
``(account_id, j)``; ratios are taken by :mod:`pes_ml.features.finish`, once,
for both engines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import ibis
import ibis.expr.types as ir

from pes_ml.features.inputs import DAY, MAX_WINDOW_DAYS, REL, A, AsOfGrid, J, day_number
from pes_ml.schemas import ACCOUNT_ID, EVENT, TIMESTAMP, USER_ID, VALUE

N: Final = "n"
VALUE_SUM: Final = "value_sum"
FIRST_DAY: Final = "first_day"
USER_KEY: Final = (ACCOUNT_ID, USER_ID)


def rollup_events(events: ir.Table, grid: AsOfGrid) -> ir.Table:
    """Events before the last as_of, counted per account, user, event and aligned day.

    This is the only scan of the event log. Events at or after the last as_of
    are dropped here, before anything else can see them.
    """
    last = grid.as_of[-1].to_pydatetime()
    kept = events.filter(events[TIMESTAMP] < ibis.literal(last, type="timestamp('UTC')"))
    return kept.group_by(
        [kept[ACCOUNT_ID], kept[USER_ID], kept[EVENT], day_number(kept[TIMESTAMP], grid.offset).name(DAY)]
    ).aggregate(**{N: kept.count(), VALUE_SUM: kept[VALUE].sum()})


def user_days(rollup: ir.Table) -> ir.Table:
    """Distinct (account, user, day) with a known user."""
    return rollup.filter(rollup[USER_ID].notnull()).select(ACCOUNT_ID, USER_ID, DAY).distinct()


def account_event_days(rollup: ir.Table) -> ir.Table:
    """Events and value per (account, event, day)."""
    return rollup.group_by([ACCOUNT_ID, EVENT, DAY]).aggregate(
        **{N: rollup[N].sum(), VALUE_SUM: rollup[VALUE_SUM].sum()}
    )


def user_first_days(days: ir.Table) -> ir.Table:
    """The first active day of every user (over all data before the last as_of).

    A user active before as_of has its first day before as_of too, so this one
    static minimum serves every as_of without looking past it.
    """
    return days.group_by(list(USER_KEY)).aggregate(**{FIRST_DAY: days[DAY].min()})


def event_aggregates(
    event_days: ir.Table, grid: AsOfGrid, event_types: Sequence[str], core_events: Sequence[str]
) -> ir.Table:
    """Account-level window counts per (account_id, j): events, values, breadth, active days, types."""
    w = event_days.join(grid.window_days_table(), DAY)
    rel, n = w[REL], w[N]
    last30, prior30 = rel < 30, (rel >= 30) & (rel < 60)
    metrics: dict[str, ir.Value] = {
        "events_7d": n.sum(where=rel < 7),
        "events_30d": n.sum(where=last30),
        "events_90d": n.sum(),
        "events_prior_30d": n.sum(where=prior30),
        "value_sum_30d": w[VALUE_SUM].sum(where=last30),
        "value_sum_90d": w[VALUE_SUM].sum(),
        "event_types_30d": w[EVENT].nunique(where=last30),
        "active_days_30d": w[DAY].nunique(where=last30),
        "active_days_prior_30d": w[DAY].nunique(where=prior30),
    }
    if core_events:
        metrics["core_events_used_30d"] = w[EVENT].nunique(where=last30 & w[EVENT].isin(list(core_events)))
    for i, event in enumerate(event_types):
        metrics[f"_type_{i}"] = n.sum(where=last30 & (w[EVENT] == event))
    return w.group_by([ACCOUNT_ID, J]).aggregate(**metrics)


def user_aggregates(days: ir.Table, first_days: ir.Table, grid: AsOfGrid) -> ir.Table:
    """User-level window counts per (account_id, j): active users, user-days, power users, growth, WAU slope.

    ``wau_slope_num`` is the numerator of the least-squares slope of weekly active
    users over 12 weeks: week ``k`` ago (``k = 0..11``) sits at ``x = 11 - k``; with
    ``x̄ = 5.5`` and ``Σ(x - x̄)² = 143`` the slope is ``Σ_k (5.5 - k)·WAU_k / 143
    = Σ_(user, week) (11 - 2k) / 286``: an exact integer on every engine, missing
    weeks counting 0 users.
    """
    w = days.join(grid.window_days_table(), DAY)
    rel = w[REL]
    weeks = {f"w{k}": (rel // 7 == k).any().cast("int64") for k in range(12)}
    per_user = w.group_by([ACCOUNT_ID, USER_ID, J, A]).aggregate(
        d7=w.count(where=rel < 7),
        d28=w.count(where=rel < 28),
        d30=w.count(where=rel < 30),
        d_prior=w.count(where=(rel >= 30) & (rel < 60)),
        **weeks,
    )
    u = per_user.join(first_days, list(USER_KEY))
    # Whole days between the user's first day and as_of: < 30 means first seen in the last 30 days.
    first_rel = u[A] - 1 - u[FIRST_DAY]
    d7, d28, d30, prior = u["d7"], u["d28"], u["d30"], u["d_prior"]
    slope = sum((11 - 2 * k) * u[f"w{k}"] for k in range(12))
    return u.group_by([ACCOUNT_ID, J]).aggregate(
        active_users_7d=u.count(where=d7 > 0),
        active_users_30d=u.count(where=d30 > 0),
        active_users_90d=u.count(),
        user_days_7d=d7.sum(),
        user_days_30d=d30.sum(),
        power_users_7d=u.count(where=d7 >= 5),
        users_28d=u.count(where=d28 > 0),
        l28_1to7_28d=u.count(where=(d28 >= 1) & (d28 <= 7)),
        l28_8to14_28d=u.count(where=(d28 >= 8) & (d28 <= 14)),
        l28_15to21_28d=u.count(where=(d28 >= 15) & (d28 <= 21)),
        l28_22to28_28d=u.count(where=d28 >= 22),
        prior_users_30d=u.count(where=prior > 0),
        new_users_30d=u.count(where=(d30 > 0) & (first_rel < 30)),
        # Not active 31-60 days ago and first seen earlier: back after more than 30 days away.
        resurrected_users_30d=u.count(where=(d30 > 0) & (prior == 0) & (first_rel >= 30)),
        dropped_users_30d=u.count(where=(prior > 0) & (d30 == 0)),
        wau_slope_num=slope.sum(),  # type: ignore[union-attr]
    )


def adoption_aggregates(rollup: ir.Table, grid: AsOfGrid, core_events: Sequence[str]) -> ir.Table:
    """Distinct (user, core event) pairs in the last 30 days per (account_id, j) — the adoption numerator."""
    core = rollup.filter(rollup[USER_ID].notnull() & rollup[EVENT].isin(list(core_events)))
    w = core.select(ACCOUNT_ID, USER_ID, EVENT, DAY).join(grid.window_days_table(30), DAY)
    pairs = w.select(ACCOUNT_ID, USER_ID, EVENT, J).distinct()
    return pairs.group_by([ACCOUNT_ID, J]).aggregate(core_user_events_30d=pairs.count())


def vocabulary_window(rollup: ir.Table, grid: AsOfGrid) -> ir.Table:
    """Rollup rows in the 90 days before the *earliest* as_of: the data vocabularies are chosen from."""
    first = grid.days[0]
    return rollup.filter((rollup[DAY] >= first - MAX_WINDOW_DAYS) & (rollup[DAY] < first))


def top_event_types_expr(window: ir.Table, n: int) -> ir.Table:
    """The ``n`` most frequent event types of ``window`` (ties by name)."""
    counts = window.group_by(EVENT).aggregate(**{N: window[N].sum()})
    return counts.order_by([ibis.desc(N), EVENT]).limit(n)


def core_events_expr(window: ir.Table, accounts: ir.Table | None, n: int) -> ir.Table:
    """The ``n`` events used by the most users of ``accounts`` in ``window`` (ties by name).

    ``accounts`` are those present (retained so far) at the earliest as_of.
    """
    rows = window.filter(window[USER_ID].notnull())
    if accounts is not None:
        rows = rows.join(accounts, ACCOUNT_ID)
    pairs = rows.select(ACCOUNT_ID, USER_ID, EVENT).distinct()
    users = pairs.group_by(EVENT).aggregate(users=pairs.count())
    return users.order_by([ibis.desc("users"), EVENT]).limit(n)
