"""The inputs of the feature stage: canonical tables as Ibis relations, and the as_of grid.

Everything here is engine-neutral: the tables are Ibis relations on whichever
backend :func:`pes_ml.engine.ibis_backend` chose, and the grid is small pandas
data turned into Ibis memtables.

Time is counted in *days aligned to as_of*: ``day = floor((epoch_seconds - offset) / 86400)``
where ``offset`` is as_of's second of the UTC day. Day ``A = day(as_of)`` starts
exactly at as_of, so ``timestamp < as_of`` is ``day < A`` and the window
``as_of - n days <= timestamp < as_of`` is ``A - n <= day < A``. Durations come
from epoch seconds, never from engine interval arithmetic (which differs between
engines).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Final

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd
import pyarrow as pa

from pes_ml.engine import epoch_seconds
from pes_ml.errors import DataContractError
from pes_ml.instants import AsOfLike, to_utc
from pes_ml.schemas import (
    ACCOUNT_ID,
    AS_OF,
    AUTO_RENEW,
    BILLING_PERIOD_MONTHS,
    CREATED_AT,
    DISCOUNT,
    END,
    EVENT,
    LIST_MRR,
    MRR,
    PLAN,
    SEATS,
    SEGMENT,
    START,
    TIMESTAMP,
    USER_ID,
    VALUE,
)

logger = logging.getLogger(__name__)

SECONDS_PER_DAY: Final = 86_400
MAX_WINDOW_DAYS: Final = 90
"""The longest look-back window of any windowed feature."""

DAY: Final = "day"
J: Final = "j"
REL: Final = "rel"
A: Final = "a"
AS_OF_90D: Final = "as_of_90d"
BUCKET: Final = "bucket"
IN_7D: Final = "in_7d"
IN_28D: Final = "in_28d"
IN_30D: Final = "in_30d"
PRIOR_30D: Final = "prior_30d"
WEEKS: Final = 12
"""Weeks of the weekly-active-users slope."""
PACKED_DAYS: Final = "packed_days"
WEEK_BIT: Final = "week_bit"
DAYS_BASE: Final = 64
"""Base of :data:`PACKED_DAYS`: one digit each for the 7, 28, 30 and prior 30 days windows (< 64 days)."""


_TYPES: Final[dict[str, dict[str, str]]] = {
    "events": {ACCOUNT_ID: "string", USER_ID: "string", EVENT: "string", TIMESTAMP: "timestamp('UTC')",
               VALUE: "float64"},
    "subscriptions": {ACCOUNT_ID: "string", START: "timestamp('UTC')", END: "timestamp('UTC')",
                      MRR: "float64", LIST_MRR: "float64", SEATS: "float64", PLAN: "string",
                      BILLING_PERIOD_MONTHS: "float64", DISCOUNT: "float64", AUTO_RENEW: "boolean"},
    "accounts": {ACCOUNT_ID: "string", CREATED_AT: "timestamp('UTC')", PLAN: "string", SEGMENT: "string",
                 SEATS: "float64"},
}
_REQUIRED: Final[dict[str, tuple[str, ...]]] = {
    "events": (ACCOUNT_ID, EVENT, TIMESTAMP),
    "subscriptions": (ACCOUNT_ID, START),
    "accounts": (ACCOUNT_ID,),
}


@dataclass(frozen=True)
class FeatureTables:
    """The canonical tables as Ibis relations, with exactly the columns the features use.

    Optional columns the source lacks are typed NULL columns, so every definition
    can refer to them; features that need them come out missing (NaN), never an error.
    """

    events: ir.Table
    subscriptions: ir.Table | None = None
    accounts: ir.Table | None = None
    present: frozenset[str] = frozenset()
    """``table.column`` names the source really has (the others are NULL placeholders)."""

    def has(self, table: str, column: str) -> bool:
        """Whether the source has ``column`` in ``table`` (rather than a NULL placeholder)."""
        return f"{table}.{column}" in self.present

    @classmethod
    def from_relations(
        cls, events: ir.Table, subscriptions: ir.Table | None = None, accounts: ir.Table | None = None
    ) -> FeatureTables:
        """Normalise relations (any column order, optional columns possibly absent)."""
        relations = {"events": events, "subscriptions": subscriptions, "accounts": accounts}
        present = frozenset(
            f"{name}.{column}"
            for name, relation in relations.items()
            if relation is not None
            for column in relation.columns
        )
        return cls(
            events=_conform("events", events),
            subscriptions=None if subscriptions is None else _conform("subscriptions", subscriptions),
            accounts=None if accounts is None else _conform("accounts", accounts),
            present=present,
        )

    @classmethod
    def from_paths(cls, backend: Any, paths: dict[str, Path]) -> FeatureTables:
        """Read the clean Parquet tables (``events`` required; the others when the file exists)."""
        tables: dict[str, ir.Table | None] = {}
        for name in ("events", "subscriptions", "accounts"):
            path = paths.get(name)
            if path is None or ("*" not in str(path) and not Path(path).exists()):
                if name == "events":
                    raise DataContractError(
                        f"The clean events table {str(path)!r} does not exist. "
                        "Run `pes-ml validate --config ...` first to ingest and validate the sources."
                    )
                tables[name] = None
                continue
            try:
                tables[name] = backend.read_parquet(str(path))
            except Exception as exc:  # noqa: BLE001 - each engine raises its own error for a bad file
                from pes_ml.ingest import unreadable_clean_table

                raise unreadable_clean_table(name, path, exc) from exc
        return cls.from_relations(tables["events"], tables["subscriptions"], tables["accounts"])


def _conform(table: str, relation: ir.Table) -> ir.Table:
    present = set(relation.columns)
    missing = [c for c in _REQUIRED[table] if c not in present]
    if missing:
        raise DataContractError(
            f"The {table} table lacks the required column(s) {missing}; it has {sorted(present)}. "
            f"Map them under sources.{table}.columns in the config."
        )
    columns = {
        name: relation[name].cast(dtype) if name in present else ibis.null(dtype)
        for name, dtype in _TYPES[table].items()
    }
    return relation.select(**columns)


@dataclass(frozen=True)
class AsOfGrid:
    """Sorted as_of instants that share one second-of-day ``offset``, as aligned day numbers.

    Parameters
    ----------
    as_of
        Sorted, distinct UTC instants.
    offset
        Their second of the UTC day (all equal).
    """

    as_of: tuple[pd.Timestamp, ...]
    offset: int

    @property
    def days(self) -> list[int]:
        """Day number ``A`` of each as_of (day ``A`` starts exactly at as_of)."""
        return [int((t.value // 1_000_000_000 - self.offset) // SECONDS_PER_DAY) for t in self.as_of]

    def day_start(self, day: pd.Series) -> pd.Series:
        """The UTC instant a day number starts at."""
        seconds = day.astype("float64") * SECONDS_PER_DAY + self.offset
        return pd.to_datetime(seconds, unit="s", utc=True)

    def as_of_table(self) -> ir.Table:
        """One row per as_of: j, a (its day), as_of and as_of - 90 days."""
        micros = [t.value // 1_000 for t in self.as_of]
        utc = pa.timestamp("us", tz="UTC")
        table = pa.table({
            J: pa.array(range(len(micros)), pa.int64()),
            A: pa.array(self.days, pa.int64()),
            AS_OF: pa.array(micros, utc),
            AS_OF_90D: pa.array([m - 90 * SECONDS_PER_DAY * 1_000_000 for m in micros], utc),
        })
        return ibis.memtable(table)

    def window_days_table(self, window: int = MAX_WINDOW_DAYS) -> ir.Table:
        """(j, a, day, rel, indicators) for the ``window`` days before each as_of.

        ``rel`` is the number of whole days before as_of (0 = the last day). Joining on
        ``day`` (an equi-join) assigns every rolled-up day to every as_of whose window
        holds it; this is how many as_of dates share one pass. The 0/1 indicator
        columns (:data:`IN_7D`, :data:`IN_28D`, :data:`IN_30D`, :data:`PRIOR_30D`
        and :func:`week_column` ``k`` for the ``k``-th week before as_of) let a
        window be a product (``n * in_30d``) instead of a filtered aggregate: the
        same number on every engine, without a branch per row.

        For *distinct days* (each day counted at most once), the indicators are also
        packed into one integer, so one ``SUM`` counts the days of every window:
        :data:`PACKED_DAYS` holds ``in_7d + in_28d·64 + in_30d·64² + prior_30d·64³``
        (a window has fewer than 64 days, so digits never carry; far below 2^53, exact
        in int64 and in a double). :data:`WEEK_BIT` is ``2^k`` for a day of week
        ``k < 12`` before as_of (0 before that): a ``BIT_OR`` gives the weeks a user was active in.
        """
        rows = [(j, a, a - 1 - rel, rel) for j, a in enumerate(self.days) for rel in range(window)]
        columns = list(zip(*rows, strict=True)) if rows else [(), (), (), ()]
        names = (J, A, DAY, REL)
        arrays = {name: pa.array(v, pa.int64()) for name, v in zip(names, columns, strict=True)}
        rel = list(columns[3])
        days = np.asarray(rel, dtype=np.int64)
        indicators = {IN_7D: days < 7, IN_28D: days < 28, IN_30D: days < 30,
                      PRIOR_30D: (days >= 30) & (days < 60)}
        for name, flags in indicators.items():
            arrays[name] = pa.array(flags.astype(np.int64), pa.int64())
        packed = sum(
            indicators[name].astype(np.int64) * DAYS_BASE**i
            for i, name in enumerate((IN_7D, IN_28D, IN_30D, PRIOR_30D))
        )
        week_bits = np.where(days < 7 * WEEKS, 1 << np.minimum(days // 7, WEEKS - 1), 0)
        arrays[PACKED_DAYS] = pa.array(np.asarray(packed, dtype=np.int64), pa.int64())
        arrays[WEEK_BIT] = pa.array(week_bits.astype(np.int64), pa.int64())
        return ibis.memtable(pa.table(arrays))


def as_of_grids(as_of_dates: Iterable[AsOfLike] | AsOfLike) -> list[AsOfGrid]:
    """Normalise as_of dates to UTC (:func:`~pes_ml.instants.to_utc`), drop duplicates, and group
    them by second of the day. One date given alone is a list of one.

    Raises
    ------
    DataContractError
        If no date is given, or a date is not ISO 8601, is out of range or has a fraction of a second.
    """
    if isinstance(as_of_dates, str | date | np.datetime64):  # not its characters, one by one
        as_of_dates = [as_of_dates]
    stamps = sorted({to_utc(d) for d in as_of_dates})
    if not stamps:
        raise DataContractError("build_features needs at least one as_of date. Got an empty list instead.")
    grids: dict[int, list[pd.Timestamp]] = {}
    for stamp in stamps:
        if stamp.value % 1_000_000_000:
            raise DataContractError(
                f"as_of dates must be whole seconds. Got {stamp.isoformat()} instead; round it to the second."
            )
        offset = int((stamp.value // 1_000_000_000) % SECONDS_PER_DAY)
        grids.setdefault(offset, []).append(stamp)
    return [AsOfGrid(tuple(v), k) for k, v in sorted(grids.items())]


def day_number(ts: ir.TimestampValue, offset: int) -> ir.IntegerValue:
    """Day number aligned to as_of: ``floor((epoch_seconds - offset) / 86400)``.

    Computed from epoch seconds with a floor, so an instant 1 µs before as_of lands
    on the day before as_of on every engine.
    """
    return ((epoch_seconds(ts) - offset) // SECONDS_PER_DAY).cast("int64")

