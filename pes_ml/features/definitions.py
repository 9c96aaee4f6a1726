"""Windowed feature definitions as Ibis expressions: written once, compiled for DuckDB and Spark.

The event log is cut at the last as_of and given an aligned day number once
(:func:`events_before`); every definition reads that relation. One scan
counts the event types (:func:`event_counts`: the mask bits and the top
types); two small rollups are materialised — distinct ``account x user x day``
with the event-type masks (:func:`user_days`, from which the core events are
chosen) and events per ``account x day`` (:func:`account_days`, with the
per-type counts and the masks as columns) — and every window of
every as_of is computed from them by an equi-join with the small ``(j, day,
rel)`` grid of :meth:`~pes_ml.features.inputs.AsOfGrid.window_days_table`,
where ``rel`` is the number of whole days before as_of (0 = the last 24 hours).
A window of ``n`` days is ``rel < n``: the half-open
``as_of - n days <= timestamp < as_of``.

Distinct counts of event *names* in a window (breadth, adoption) are bit masks:
each event type owns one bit (:func:`event_bits`), a rollup row keeps the
``BIT_OR`` of its events' bits, and a window's distinct types are the
``BIT_COUNT`` of the ``BIT_OR`` over its days — exact, additive over days, and
computed inside the two rollup aggregations instead of a separate distinct over
the raw events of every window (which cost more than both rollups together at
12 as_of dates). Core events get a second, dense mask (:data:`CORE_MASK`, bit
``i`` = core event ``i``), so "which core events" is one ``BIT_OR`` too, and
the core-event choice itself reads the user-day masks rather than the log.
``BIT_OR``, ``BIT_COUNT`` and ``&`` are built into DuckDB and Spark SQL alike.

An ``account x user x event x day`` rollup would barely shrink a sparse log
(10M events -> 8.4M rows) and cost a second hash aggregation of that size, so
there is none; nor is ``account_days`` derived from a ``user_days`` carrying
the per-type counts: re-grouping 1.6M user-days costs more (0.7 s at 10M
events) than the second scan it saves.

The functions return *raw* aggregates (counts, sums, distinct counts) per
account and as_of ``j``. Each part leaves the engine keyed by the account's
integer :data:`ACCOUNT_NUMBER` (its rank in ``account_id`` order,
:func:`account_numbers`: the events take it before :func:`account_days` groups
them, users through :func:`user_first_days`, subscriptions and accounts by a join
of their small tables), and :mod:`pes_ml.features.assemble` lays the parts side
by side by position instead of joining them on strings. Ratios are taken by
:mod:`pes_ml.features.finish`, once, for both engines. The window counts of one
(account, as_of) are summed several to an int64 (:class:`PackedSums`, with bounds
read off the data), since a grouping over a million pairs pays for each aggregate
it keeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.operations as ops
import ibis.expr.types as ir
import pyarrow as pa

from pes_ml.features.inputs import (
    DAY,
    DAYS_BASE,
    IN_7D,
    IN_30D,
    MAX_WINDOW_DAYS,
    PACKED_DAYS,
    PRIOR_30D,
    WEEK_BIT,
    WEEKS,
    A,
    AsOfGrid,
    J,
    day_number,
)
from pes_ml.schemas import ACCOUNT_ID, EVENT, TIMESTAMP, USER_ID, VALUE

N: Final = "n"
VALUE_SUM: Final = "value_sum"
FIRST_DAY: Final = "first_day"
USER_KEY: Final = (ACCOUNT_ID, USER_ID)
ACCOUNT_NUMBER: Final = "account_number"
"""An account's integer key: its rank in ``account_id`` order, from 0 (:func:`account_numbers`)."""
USER_NUMBER: Final = "user_number"
"""A user's integer key (``account_id``, ``user_id`` in sorted order): cheaper to group by than strings."""
CORE_MASK: Final = "core_mask"
"""Bit ``i`` set: core event ``i`` was used that day (:func:`account_days`, :func:`numbered_user_days`)."""
BITS_PER_WORD: Final = 62
"""Event-type bits per int64 mask column: ``2**61`` is the largest, far from the sign bit."""


@ibis.udf.agg.builtin(name="bit_or")  # type: ignore[untyped-decorator]
def bit_or(value: dt.int64) -> dt.int64:
    """Bitwise OR of a group (``BIT_OR`` on DuckDB and Spark SQL)."""


@ibis.udf.scalar.builtin(name="bit_count")  # type: ignore[untyped-decorator]
def _bit_count(value: dt.int64) -> dt.int64:
    """``BIT_COUNT`` on DuckDB and Spark SQL: an 8-bit integer on DuckDB, 32-bit on Spark."""


def _int64(value: ir.IntegerValue) -> ir.IntegerValue:
    """``CAST(value AS BIGINT)`` for a value Ibis already types int64 but the engine may not.

    Built as the operation itself: ``.cast("int64")`` on an Ibis int64 is dropped as a no-op.
    """
    return ops.Cast(value, to=dt.int64).to_expr()


def bit_count(value: ir.IntegerValue) -> ir.IntegerValue:
    """Number of set bits, as an int64: DuckDB's own 8-bit result overflowed when the counts of
    several mask words were added (past 127 event types) or multiplied."""
    return _int64(_bit_count(value))


def whole_sum(values: ir.IntegerValue) -> ir.IntegerValue:
    """The sum of integers as an int64.

    DuckDB sums integers into a 128-bit HUGEINT, which leaves the engine as a
    ``decimal128`` that then has to be cast row by row (and, inside a query, makes every
    later shift and comparison 128-bit); Spark's sum of int64 is already int64. The
    sums here count events and days, far below 2**63.
    """
    return _int64(values.sum())


def mask_column(word: int) -> str:
    """Name of the ``word``-th event-type bit mask column of :func:`account_days` and :func:`user_days`."""
    return f"_mask_{word}"


def n_mask_words(n_event_names: int) -> int:
    """Mask columns :func:`event_bits` makes for ``n_event_names`` event types."""
    return max(1, -(-n_event_names // BITS_PER_WORD))


def mask_columns(n_event_names: int) -> list[str]:
    """The mask columns of ``n_event_names`` event types, in word order."""
    return [mask_column(word) for word in range(n_mask_words(n_event_names))]


def masks_of(table: ir.Table) -> list[str]:
    """The mask columns ``table`` carries (a rollup of :func:`account_days` or :func:`user_days`)."""
    return [mask_column(word) for word in range(len(table.columns)) if mask_column(word) in table.columns]


def _name_bit(k: int) -> tuple[int, int]:
    """The mask word and the bit value of event name number ``k``."""
    return k // BITS_PER_WORD, 2 ** (k % BITS_PER_WORD)


def event_bits(event_names: Sequence[str]) -> ir.Table:
    """One row per event type: its bit in the mask columns.

    Event ``k`` (in the given order) sets bit ``k % 62`` of :func:`mask_column` ``k // 62``.
    """
    columns: dict[str, pa.Array] = {EVENT: pa.array(list(event_names), pa.string())}
    for word, column in enumerate(mask_columns(len(event_names))):
        bits = [bit if w == word else 0 for w, bit in map(_name_bit, range(len(event_names)))]
        columns[column] = pa.array(bits, pa.int64())
    return ibis.memtable(pa.table(columns))


def _coded(events: ir.Table, event_names: Sequence[str]) -> ir.Table:
    """``events`` with the bits of :func:`event_bits` (0 for an event type not in ``event_names``)."""
    coded = events.left_join(event_bits(event_names), EVENT)
    return coded.select(*events.columns, **{c: coded[c].fill_null(0) for c in mask_columns(len(event_names))})


def type_column(i: int) -> str:
    """Name of the raw count column of the ``i``-th counted event type."""
    return f"_type_{i}"


def events_before(events: ir.Table, grid: AsOfGrid) -> ir.Table:
    """Events before the last as_of with their aligned day number: the input of every definition.

    Events at or after the last as_of are dropped here, before anything else can see them.
    """
    last = grid.as_of[-1].to_pydatetime()
    kept = events.filter(events[TIMESTAMP] < ibis.literal(last, type="timestamp('UTC')"))
    return kept.select(
        ACCOUNT_ID, USER_ID, EVENT, VALUE, TIMESTAMP, **{DAY: day_number(kept[TIMESTAMP], grid.offset)}
    )


def account_days(
    events: ir.Table,
    numbers: ir.Table,
    event_types: Sequence[str],
    core_events: Sequence[str],
    event_names: Sequence[str],
) -> ir.Table:
    """Events, value, each counted event type, the event-type masks and the :data:`CORE_MASK`
    per (account_number, day).

    The events take their :data:`ACCOUNT_NUMBER` (``numbers``: :func:`account_numbers`)
    before they are grouped: grouping by an integer is cheaper than by the ``account_id``
    string, here and in every window and history read from this rollup (10M events:
    0.60-0.63 s for this rollup, against 0.70-0.81 s for the string grouping and then
    numbering its rows; the account windows and history at 12 as_of dates ~0.4 s faster).
    Per-name counts are filtered counts (``count(*) FILTER (WHERE event = name)``
    on DuckDB): a third cheaper than sums of 0/1 casts there, the same number everywhere.
    ``event_names`` are all event types of ``events`` (:func:`event_bits`).
    """
    coded = numbered(_coded(events, event_names), numbers)
    event = coded[EVENT]
    metrics: dict[str, ir.Value] = {N: coded.count(), VALUE_SUM: coded[VALUE].sum()}
    for word in mask_columns(len(event_names)):
        metrics[word] = bit_or(coded[word])
    for i, name in enumerate(event_types):
        metrics[type_column(i)] = coded.count(where=event == name)
    days = coded.group_by([ACCOUNT_NUMBER, DAY]).aggregate(**metrics)
    return days.mutate(**{CORE_MASK: _core_mask(days, core_events, event_names)})


def user_days(events: ir.Table, event_names: Sequence[str]) -> ir.Table:
    """(account, user, day) with a known user, and the event-type masks of that day (:func:`event_bits`).

    Built before the core events are chosen: :func:`core_event_users` reads it.
    """
    known = _coded(events.filter(events[USER_ID].notnull()), event_names)
    masks = {word: bit_or(known[word]) for word in mask_columns(len(event_names))}
    return known.group_by([ACCOUNT_ID, USER_ID, DAY]).aggregate(**masks)


def _core_mask(days: ir.Table, core_events: Sequence[str], event_names: Sequence[str]) -> ir.Value:
    """The :data:`CORE_MASK` of a row of event-type masks: bit ``i`` from core event ``i``'s bit."""
    position = {name: k for k, name in enumerate(event_names)}
    mask: ir.IntegerValue = ibis.literal(0, type="int64")
    for i, name in enumerate(core_events):
        if name in position:  # a pinned core event absent from the data is never used
            word, bit = _name_bit(position[name])
            mask = mask + ibis.ifelse((days[mask_column(word)] & bit) != 0, 2**i, 0)
    return mask.cast("int64")


def account_numbers(events: ir.Table, subscriptions: ir.Table | None) -> ir.Table:
    """Every account with events (``events``: :func:`events_before`) or subscriptions once,
    with its :data:`ACCOUNT_NUMBER`.

    Numbers follow ``account_id`` in byte (code point) order on every engine, so
    sorting by number sorts by ``account_id``.
    """
    ids = events.select(ACCOUNT_ID).distinct()
    if subscriptions is not None:
        ids = ids.union(subscriptions.select(ACCOUNT_ID).distinct(), distinct=True)
    return ids.mutate(**{ACCOUNT_NUMBER: ibis.row_number().over(order_by=ids[ACCOUNT_ID])})


def numbered(table: ir.Table, numbers: ir.Table) -> ir.Table:
    """``table`` with :data:`ACCOUNT_NUMBER` in place of ``account_id`` (``numbers``:
    :func:`account_numbers`)."""
    joined = table.join(numbers, ACCOUNT_ID)
    return joined.select(ACCOUNT_NUMBER, *(c for c in table.columns if c != ACCOUNT_ID))


def user_first_days(days: ir.Table, numbers: ir.Table) -> ir.Table:
    """Every user's account number, integer key and first active day (over all data before the last as_of).

    A user active before as_of has its first day before as_of too, so this one
    static minimum serves every as_of without looking past it.
    """
    first = days.group_by(list(USER_KEY)).aggregate(**{FIRST_DAY: days[DAY].min()})
    first = first.join(numbers, ACCOUNT_ID)
    number = ibis.row_number().over(order_by=[first[ACCOUNT_ID], first[USER_ID]])
    return first.mutate(**{USER_NUMBER: number})


def numbered_user_days(
    days: ir.Table, first_days: ir.Table, core_events: Sequence[str], event_names: Sequence[str]
) -> ir.Table:
    """:func:`user_days` keyed by the integer :data:`USER_NUMBER` of :func:`user_first_days`,
    with the :data:`CORE_MASK` of the core events used that day."""
    joined = days.join(first_days, list(USER_KEY))
    return joined.select(USER_NUMBER, DAY, **{CORE_MASK: _core_mask(joined, core_events, event_names)})


def busiest_day(days: ir.Table) -> ir.Table:
    """One row, ``events``: the most events of one account on one day (``days``:
    :func:`account_days`), the bound of the packed window sums of :func:`recent_event_aggregates`
    and :func:`quarter_event_aggregates`."""
    return days.aggregate(events=days[N].max().fill_null(0))


def recent_event_aggregates(
    days: ir.Table, grid: AsOfGrid, n_types: int, n_core: int, max_events: int
) -> ir.Table:
    """Account-level counts of the last 30 (and 7) days per (account_number, j): events, values, active
    days, event types, per-type counts, core events used.

    ``days`` is :func:`account_days`: one row per active day, so a count of rows is
    a count of days. Distinct event types are the set bits of the masks' ``BIT_OR``
    over the window's days; distinct core events, the set bits of the core masks'
    ``BIT_OR``. Joined with the 30-day grid only: most aggregates need no more, and
    a row of the 90-day join feeding all of them cost twice the work at 12 as_of dates.
    The counts are :class:`PackedSums`, bounded by ``max_events`` a day (:func:`busiest_day`).
    """
    w = days.join(grid.window_days_table(30), DAY)
    n = w[N]
    values: dict[str, ir.IntegerValue] = {"events_7d": n * w[IN_7D], "events_30d": n,
                                          "active_days_30d": ibis.literal(1, type="int64")}
    bounds = {"events_7d": 7 * max_events, "events_30d": 30 * max_events, "active_days_30d": 30}
    for i in range(n_types):
        values[type_column(i)], bounds[type_column(i)] = w[type_column(i)], 30 * max_events
    types = [bit_count(bit_or(w[word])) for word in masks_of(days)]
    others: dict[str, ir.Value] = {
        "value_sum_30d": w[VALUE_SUM].sum(), "event_types_30d": sum(types[1:], types[0]),
    }
    if n_core:
        others["core_events_used_30d"] = bit_count(bit_or(w[CORE_MASK]))
    return PackedSums.layout(bounds).aggregate(w, [ACCOUNT_NUMBER, J], values, **others)


def quarter_event_aggregates(days: ir.Table, grid: AsOfGrid, max_events: int) -> ir.Table:
    """Account-level counts of the last 90 days and of the 30 days before the last 30,
    per (account_number, j).

    ``days`` is :func:`account_days`; the counts are :class:`PackedSums`, bounded by
    ``max_events`` a day (:func:`busiest_day`).
    """
    w = days.join(grid.window_days_table(), DAY)
    n, prior = w[N], w[PRIOR_30D]
    packing = PackedSums.layout(
        {"events_90d": 90 * max_events, "events_prior_30d": 30 * max_events, "active_days_prior_30d": 30}
    )
    values = {"events_90d": n, "events_prior_30d": n * prior, "active_days_prior_30d": prior}
    return packing.aggregate(w, [ACCOUNT_NUMBER, J], values, value_sum_90d=w[VALUE_SUM].sum())


def _digit(packed: ir.IntegerValue, base: int, position: int) -> ir.IntegerValue:
    """Digit ``position`` of a non-negative integer written in ``base`` (a power of two): a shift
    and a mask, where a floor division compiles to a float division on both engines."""
    bits = base.bit_length() - 1
    assert base == 1 << bits, f"base {base} is not a power of two"
    return (packed >> (bits * position)) & (base - 1)


_WEEKS_WITH_BIT: Final = tuple(sum(1 << k for k in range(WEEKS) if k >> t & 1) for t in range(4))
"""Per bit ``t``: the mask of the weeks ``k < 12`` whose number has bit ``t`` set."""


WORD_BITS: Final = 63
"""Bits of a non-negative int64: the room :class:`PackedSums` fills."""


@dataclass(frozen=True)
class PackedSums:
    """Several sums of small non-negative integers, carried by a few int64 sums.

    A hash aggregation over many groups pays for every aggregate it keeps per group (12 as_of
    dates at 10M events: the 17 user counts per account and as_of cost 0.55 s over 1.1M groups,
    one count alone 0.08 s). When each sum is known never to exceed a bound, several fit in one
    int64: field ``f`` takes ``bound.bit_length()`` bits at its own shift, a group's word is the
    sum of every row's values shifted into their fields, and since no field's sum can outgrow its
    bits, none carries into the next and each unpacks exactly (:meth:`unpacked`). Integer sums,
    shifts and masks only: the same numbers on every engine.

    ``fields`` are ``(name, word, shift, width)``, laid out by :meth:`layout`.
    """

    fields: tuple[tuple[str, int, int, int], ...]

    @classmethod
    def layout(cls, bounds: dict[str, int]) -> PackedSums:
        """Fields in the given order, filling each 63-bit word before the next.

        ``bounds``: per field, the largest sum any group can reach (at least 0).
        """
        fields, word, used = [], 0, 0
        for name, bound in bounds.items():
            width = max(1, int(bound).bit_length())
            if width > WORD_BITS:
                raise ValueError(f"{name}: a sum up to {bound} does not fit an int64")
            if used + width > WORD_BITS:
                word, used = word + 1, 0
            fields.append((name, word, used, width))
            used += width
        return cls(tuple(fields))

    @staticmethod
    def word(w: int) -> str:
        """Name of packed word ``w``."""
        return f"_packed_{w}"

    def sums(self, values: dict[str, ir.IntegerValue]) -> dict[str, ir.Value]:
        """One aggregate per word: the sum of each row's field values, each shifted into its field."""
        words: dict[int, ir.IntegerValue] = {}
        for name, word, shift, _ in self.fields:
            term = _int64(values[name]) * (1 << shift) if shift else _int64(values[name])
            words[word] = words[word] + term if word in words else term
        return {self.word(w): whole_sum(value) for w, value in words.items()}

    def unpacked(self, table: ir.Table) -> dict[str, ir.IntegerValue]:
        """Each field's sum, read back from the words of an aggregated ``table``."""
        return {
            name: (table[self.word(word)] >> shift) & ((1 << width) - 1)
            for name, word, shift, width in self.fields
        }

    def aggregate(
        self, table: ir.Table, by: list[str], values: dict[str, ir.IntegerValue], **others: ir.Value
    ) -> ir.Table:
        """``table`` grouped ``by``: each field's sum of ``values`` (packed, then unpacked) and the
        ``others`` aggregates, one column each."""
        sums = table.group_by(by).aggregate(**self.sums(values), **others)
        return sums.select(*by, **self.unpacked(sums), **{name: sums[name] for name in others})


def most_users(first_days: ir.Table) -> ir.Table:
    """One row, ``users``: the largest number of users of one account
    (``first_days``: :func:`user_first_days`), the bound of :func:`user_aggregates`' counts."""
    per_account = first_days.group_by(ACCOUNT_NUMBER).aggregate(users=first_days.count())
    return per_account.aggregate(users=per_account["users"].max().fill_null(0))


def user_aggregates(
    days: ir.Table, first_days: ir.Table, grid: AsOfGrid, max_users: int, n_core: int
) -> ir.Table:
    """User-level window counts per (account_number, j): active users, user-days, power users, growth,
    WAU slope.

    ``days`` is :func:`numbered_user_days`: one row per user and active day. One
    grouping per (user, as_of) counts the user's active days in every window with
    one sum of the packed indicators of
    :meth:`~pes_ml.features.inputs.AsOfGrid.window_days_table`, unpacked here, and
    collects the weeks the user was active in as one ``BIT_OR`` of their week bits.

    The per-account counts are :class:`PackedSums`: an account's count of users is at most
    ``max_users`` (:func:`most_users`), its user-days at most that times the window's days,
    its (user, core event) pairs at most that times ``n_core``.

    ``wau_slope_num`` is the numerator of the least-squares slope of weekly active
    users over 12 weeks: week ``k`` ago (``k = 0..11``) sits at ``x = 11 - k``; with
    ``x̄ = 5.5`` and ``Σ(x - x̄)² = 143`` the slope is ``Σ_k (5.5 - k)·WAU_k / 143
    = Σ_(user, week) (11 - 2k) / 286``: an exact integer on every engine, missing
    weeks counting 0 users.
    """
    w = days.join(grid.window_days_table(), DAY)
    per_user = w.group_by([USER_NUMBER, J, A]).aggregate(
        packed_days=whole_sum(w[PACKED_DAYS]),
        active_weeks=bit_or(w[WEEK_BIT]),
        core_30d=bit_or(w[CORE_MASK] * w[IN_30D]),
    )
    u = per_user.join(first_days, USER_NUMBER)
    packed, weeks = u["packed_days"], u["active_weeks"]
    d7, d28, d30, prior = (_digit(packed, DAYS_BASE, i) for i in range(4))
    # Whole days between the user's first day and as_of: < 30 means first seen in the last 30 days.
    first_rel = u[A] - 1 - u[FIRST_DAY]
    # Σ_k (11 - 2k)·active_k = 11·Σ_k active_k - 2·Σ_k k·active_k, and Σ_k k·active_k adds
    # 2^t for every active week whose number has bit t: five bit counts instead of twelve digits.
    k_sum = sum((1 << t) * bit_count(weeks & _WEEKS_WITH_BIT[t]) for t in range(4))
    slope = (WEEKS - 1) * bit_count(weeks) - 2 * k_sum
    counts: dict[str, ir.BooleanValue] = {
        "active_users_7d": d7 > 0,
        "active_users_30d": d30 > 0,
        "active_users_90d": ibis.literal(True),
        "power_users_7d": d7 >= 5,
        "users_28d": d28 > 0,
        "l28_1to7_28d": (d28 >= 1) & (d28 <= 7),
        "l28_8to14_28d": (d28 >= 8) & (d28 <= 14),
        "l28_15to21_28d": (d28 >= 15) & (d28 <= 21),
        "l28_22to28_28d": d28 >= 22,
        "prior_users_30d": prior > 0,
        "new_users_30d": (d30 > 0) & (first_rel < 30),
        # Not active 31-60 days ago and first seen earlier: back after more than 30 days away.
        "resurrected_users_30d": (d30 > 0) & (prior == 0) & (first_rel >= 30),
        "dropped_users_30d": (prior > 0) & (d30 == 0),
    }
    values: dict[str, ir.IntegerValue] = {name: condition.cast("int64") for name, condition in counts.items()}
    bounds = dict.fromkeys(counts, max_users)
    # core_user_events_30d: distinct (user, core event) pairs of the last 30 days, the adoption numerator.
    values.update(user_days_7d=d7, user_days_30d=d30, core_user_events_30d=bit_count(u["core_30d"]))
    bounds.update(user_days_7d=7 * max_users, user_days_30d=30 * max_users,
                  core_user_events_30d=n_core * max_users)
    return PackedSums.layout(bounds).aggregate(u, [ACCOUNT_NUMBER, J], values, wau_slope_num=whole_sum(slope))


def event_counts(events: ir.Table, grid: AsOfGrid) -> ir.Table:
    """Every event type of ``events`` once, with its events in the 90 days before
    the *earliest* as_of (``n``): the names of :func:`event_bits` and the counts the default
    per-type columns are chosen by, in one scan."""
    first = grid.as_of[0].to_pydatetime()
    start = first - timedelta(days=MAX_WINDOW_DAYS)
    named = events.filter(events[EVENT].notnull())
    # On the stored timestamp (the same rows as day numbers A - 90 <= day < A): no per-row arithmetic.
    stamp = named[TIMESTAMP]
    in_window = (stamp >= ibis.literal(start, type="timestamp('UTC')")) & (
        stamp < ibis.literal(first, type="timestamp('UTC')")
    )
    # group_by, not distinct(): on Spark, distinct().order_by() here returned every row (parity test).
    return named.group_by(EVENT).aggregate(**{N: named.count(where=in_window)})


def core_event_users(
    days: ir.Table, grid: AsOfGrid, accounts: ir.Table | None, event_names: Sequence[str]
) -> ir.Table:
    """Users of ``accounts`` who used each event type in the 90 days before the *earliest* as_of.

    ``days`` is :func:`user_days`; ``accounts`` are those present (retained so
    far) at the earliest as_of. One row, one column per event name (in the
    order of ``event_names``): the numbers the default core events are chosen by.
    """
    first = grid.days[0]
    window = days.filter((days[DAY] >= first - MAX_WINDOW_DAYS) & (days[DAY] < first))
    if accounts is not None:
        window = window.join(accounts, ACCOUNT_ID)
    masks = {word: bit_or(window[word]) for word in mask_columns(len(event_names))}
    users = window.group_by(list(USER_KEY)).aggregate(**masks)
    counts: dict[str, ir.Value] = {}
    for k in range(len(event_names)):
        word, bit = _name_bit(k)
        counts[f"users_{k}"] = users.count(where=(users[mask_column(word)] & bit) != 0)
    if not counts:
        counts["users_none"] = users.count()
    return users.aggregate(**counts)
