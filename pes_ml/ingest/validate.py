"""Row checks, run inside DuckDB: each row gets at most one reason, the first check it fails.

Priority order (first failing check wins; the reason strings are stable):

events
    1. ``join key not found`` (when ``join`` is configured)
    2. ``missing account_id``
    3. ``missing event``
    4. ``unknown event code`` (when ``event_lookup`` is configured)
    5. ``event longer than 1024 characters`` (a blob in the event column, not an event name)
    6. ``missing timestamp``
    7. ``unparseable timestamp``
    8. ``timestamp before min_timestamp`` (``validation.min_timestamp``)
    9. ``after filter_before`` (at or after ``filter_before``: past the end of the data)
    10. ``timestamp in the far future`` (after now + ``validation.max_future_days``)
    11. ``non-numeric value`` (text, NaN or infinite)
    12. ``negative value`` (unless ``validation.allow_negative_values``)
subscriptions
    join key not found, missing account_id, missing start, unparseable start,
    unparseable end, start before min_timestamp, after filter_before (on start),
    end before start, then per numeric column ``non-numeric <col>`` and
    ``negative <col>`` (mrr, list_mrr, seats, billing_period_months), ``unparseable auto_renew``
accounts
    join key not found, missing account_id, unparseable created_at, non-numeric /
    negative seats, then ``duplicate account_id`` (a second row for the same
    account with *different* attributes; the first row in source order is kept)

Every quarantined row keeps all its original columns as text plus ``reason`` and
``source_row``. Exact duplicates of a valid row are not quarantined but
deduplicated (and counted). Flags are counted on the loaded rows and kept:
``overlapping subscription``, ``account_id not in accounts`` and, for events,
``account_id has no subscription``.

"Missing" covers empty text and the export spellings of null (``NULL``, ``None``,
``N/A``, and ``NaN`` outside number columns), see :mod:`pes_ml.ingest.mapping`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pes_ml.config import PesConfig, SourceConfig
from pes_ml.errors import ConfigError
from pes_ml.ingest.mapping import MappedSource
from pes_ml.ingest.readers import SOURCE_ROW_NUMBER, ident
from pes_ml.schemas import (
    ACCOUNT_ID,
    AUTO_RENEW,
    BILLING_PERIOD_MONTHS,
    CREATED_AT,
    END,
    EVENT,
    LIST_MRR,
    MRR,
    REASON,
    SEATS,
    SOURCE_ROW,
    START,
    TIMESTAMP,
    VALUE,
)

JOIN_KEY_NOT_FOUND = "join key not found"
DUPLICATE = "exact duplicate"
DUPLICATE_ACCOUNT = "duplicate account_id"
BEFORE_MIN = "before min_timestamp"
AFTER_FILTER = "after filter_before"
FAR_FUTURE = "timestamp in the far future"
END_BEFORE_START = "end before start"
UNKNOWN_EVENT_CODE = "unknown event code"
OVERLAPPING_SUBSCRIPTION = "overlapping subscription"
UNKNOWN_ACCOUNT = "account_id not in accounts"
NO_SUBSCRIPTION = "account_id has no subscription"
MAX_EVENT_LENGTH = 1024
EVENT_TOO_LONG = f"event longer than {MAX_EVENT_LENGTH} characters"

_NON_NEGATIVE = {
    "events": (),
    "subscriptions": (MRR, LIST_MRR, SEATS, BILLING_PERIOD_MONTHS),
    "accounts": (SEATS,),
}


@dataclass(frozen=True)
class Check:
    """A quarantine rule: rows where ``predicate`` is true get ``reason``."""

    reason: str
    predicate: str


def _instant(value: str, key: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ConfigError(
            f"The {key!r} setting must be an ISO date such as '2020-07-01'. Got {value!r} instead."
        ) from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _ts(value: datetime) -> str:
    return f"TIMESTAMPTZ '{value.isoformat()}'"


def _t(name: str) -> str:
    return ident(f"__t_{name}")


def _p(name: str) -> str:
    return ident(f"__p_{name}")


def checks_for(mapped: MappedSource, source: SourceConfig, config: PesConfig, now: datetime) -> list[Check]:
    """The ordered checks of one mapped source (see the module docstring for the order).

    Parameters
    ----------
    mapped
        The source mapped onto its contract.
    source
        Its config (``filter_before``).
    config
        The project config (``validation``).
    now
        The load's clock (UTC), for the far-future check.

    Returns
    -------
    list of Check
        In priority order: the first true predicate gives a row its reason.
    """
    table = mapped.table
    validation = config.validation
    cols = mapped.columns
    checks: list[Check] = []
    if mapped.join_miss is not None:
        checks.append(Check(JOIN_KEY_NOT_FOUND, "__join_miss"))

    def has(name: str) -> bool:
        return name in cols and cols[name].present is not None

    def missing(name: str) -> None:
        # "missing" means the source has no value; a value that does not parse is "unparseable".
        predicate = f"NOT {_p(name)}" if has(name) else f"{_t(name)} IS NULL"
        checks.append(Check(f"missing {name}", predicate))

    def unparseable(name: str) -> None:
        if has(name):
            checks.append(Check(f"unparseable {name}", f"{_p(name)} AND {_t(name)} IS NULL"))

    def numeric(name: str, allow_negative: bool = False) -> None:
        if not has(name):
            return
        checks.append(
            Check(f"non-numeric {name}", f"{_p(name)} AND ({_t(name)} IS NULL OR NOT isfinite({_t(name)}))")
        )
        if not allow_negative:
            checks.append(Check(f"negative {name}", f"{_t(name)} < 0"))

    min_ts = _instant(validation.min_timestamp, "validation.min_timestamp")
    filter_before = (
        _instant(source.filter_before, f"{mapped.config_key}.filter_before") if source.filter_before else None
    )
    missing(ACCOUNT_ID)
    if table == "events":
        missing(EVENT)
        if mapped.lookup_miss is not None:
            # A code the lookup lacks, and a known code whose name is empty, are told apart.
            checks.append(Check(UNKNOWN_EVENT_CODE, "__lookup_miss"))
            checks.append(Check(f"missing {EVENT}", f"{_t(EVENT)} IS NULL"))
        checks.append(Check(EVENT_TOO_LONG, f"length({_t(EVENT)}) > {MAX_EVENT_LENGTH}"))
        missing(TIMESTAMP)
        unparseable(TIMESTAMP)
        checks.append(Check(f"{TIMESTAMP} {BEFORE_MIN}", f"{_t(TIMESTAMP)} < {_ts(min_ts)}"))
        if filter_before is not None:
            checks.append(Check(AFTER_FILTER, f"{_t(TIMESTAMP)} >= {_ts(filter_before)}"))
        horizon = now + timedelta(days=validation.max_future_days)
        checks.append(Check(FAR_FUTURE, f"{_t(TIMESTAMP)} > {_ts(horizon)}"))
        numeric(VALUE, allow_negative=validation.allow_negative_values)
    elif table == "subscriptions":
        missing(START)
        unparseable(START)
        unparseable(END)
        checks.append(Check(f"{START} {BEFORE_MIN}", f"{_t(START)} < {_ts(min_ts)}"))
        if filter_before is not None:
            checks.append(Check(AFTER_FILTER, f"{_t(START)} >= {_ts(filter_before)}"))
        checks.append(Check(END_BEFORE_START, f"{_t(END)} < {_t(START)}"))
        for name, target in mapped.columns.items():
            if target.duck_type == "DOUBLE":
                numeric(name, allow_negative=name not in _NON_NEGATIVE["subscriptions"])
        unparseable(AUTO_RENEW)
    else:
        unparseable(CREATED_AT)
        for name, target in mapped.columns.items():
            if target.duck_type == "DOUBLE":
                numeric(name, allow_negative=name not in _NON_NEGATIVE["accounts"])
        for name, target in mapped.columns.items():
            if target.duck_type == "TIMESTAMPTZ" and name != CREATED_AT:
                unparseable(name)
    return checks


def staging_sql(mapped: MappedSource, checks: list[Check]) -> str:
    """SELECT of every source row: canonical typed columns, ``reason``, ``source_row``, raw text.

    Raw columns (``__raw_<i>``) are filled only for rows with a reason, so the
    staging file stays small; valid rows carry only their typed columns.
    """
    typed = [f"s.{SOURCE_ROW_NUMBER} AS {ident('__source_row')}"]
    for name, col in mapped.columns.items():
        typed.append(f"{col.typed} AS {_t(name)}")
        typed.append(f"{col.present or 'NULL'} AS {_p(name)}")
    if mapped.join_miss is not None:
        typed.append(f"{mapped.join_miss} AS __join_miss")
    if mapped.lookup_miss is not None:
        typed.append(f"{mapped.lookup_miss} AS __lookup_miss")
    for i, (_, expr) in enumerate(mapped.raw_columns):
        typed.append(f"{expr} AS {ident(f'__r{i}')}")
    for i, (_, expr) in enumerate(mapped.passthrough):
        typed.append(f"{expr} AS {ident(f'__x{i}')}")
    whens = " ".join(f"WHEN coalesce({c.predicate}, false) THEN '{c.reason}'" for c in checks)
    reason = f"CASE {whens} END" if checks else "CAST(NULL AS VARCHAR)"
    layers = [
        f"typed AS (SELECT {', '.join(typed)} FROM {mapped.from_sql})",
        f"checked AS (SELECT *, {reason} AS __reason FROM typed)",
    ]
    source = "checked"
    if mapped.table == "accounts":
        # A second row for the same account with different attributes is quarantined; an identical
        # one is an exact duplicate, removed (and counted) when the clean table is written.
        values = [_t(n) for n in mapped.columns] + [ident(f"__x{i}") for i in range(len(mapped.passthrough))]
        row = f"struct_pack({', '.join(f'c{i} := {v}' for i, v in enumerate(values))})"
        layers.append(
            f"dups AS (SELECT * REPLACE (CASE WHEN __reason IS NULL AND {row} IS DISTINCT FROM "
            f"first_value({row}) OVER (PARTITION BY {_t(ACCOUNT_ID)}, __reason IS NULL "
            "ORDER BY __source_row) "
            f"THEN '{DUPLICATE_ACCOUNT}' ELSE __reason END AS __reason) FROM checked)"
        )
        source = "dups"
    out = [f"{_t(n)} AS {ident(n)}" for n in mapped.columns]
    out += [f"{ident(f'__x{i}')} AS {ident(f'__x{i}')}" for i in range(len(mapped.passthrough))]
    out += [f"__reason AS {ident(REASON)}", f"__source_row AS {ident(SOURCE_ROW)}"]
    out += [
        f"CASE WHEN __reason IS NOT NULL THEN CAST({ident(f'__r{i}')} AS VARCHAR) END AS {ident(f'__r{i}')}"
        for i in range(len(mapped.raw_columns))
    ]
    return f"WITH {', '.join(layers)} SELECT {', '.join(out)} FROM {source}"


def clean_sql(mapped: MappedSource, staged: str, deduplicate: bool = True) -> str:
    """SELECT (DISTINCT) of the valid rows, in canonical columns, sorted for fast downstream scans."""
    cols = [ident(n) for n in mapped.columns]
    cols += [f"{ident(f'__x{i}')} AS {ident(name)}" for i, (name, _) in enumerate(mapped.passthrough)]
    order = {
        "events": [ACCOUNT_ID, TIMESTAMP, EVENT],
        "subscriptions": [ACCOUNT_ID, START, END],
        "accounts": [ACCOUNT_ID],
    }[mapped.table]
    distinct = "DISTINCT " if deduplicate else ""
    return (
        f"SELECT {distinct}{', '.join(cols)} FROM {staged} WHERE {ident(REASON)} IS NULL "
        f"ORDER BY {', '.join(ident(c) for c in order)}"
    )


def quarantine_sql(mapped: MappedSource, staged: str) -> str:
    """SELECT of the quarantined rows: original columns as text, then ``reason`` and ``source_row``."""
    taken = {REASON, SOURCE_ROW}
    cols = []
    for i, (name, _) in enumerate(mapped.raw_columns):
        out = name if name not in taken else f"source_{name}"
        taken.add(out)
        cols.append(f"{ident(f'__r{i}')} AS {ident(out)}")
    cols += [ident(REASON), ident(SOURCE_ROW)]
    where = f"WHERE {ident(REASON)} IS NOT NULL ORDER BY {ident(SOURCE_ROW)}"
    return f"SELECT {', '.join(cols)} FROM {staged} {where}"


def overlap_sql(clean: str) -> str:
    """Count subscriptions that start before an earlier subscription of the same account ended.

    Periods are half-open ``[start, end)``: a renewal starting the day the previous
    period ends is not an overlap. An open subscription (end NULL) never ends.
    """
    return (
        f"SELECT count(*) FROM (SELECT {ident(START)}, max(coalesce({ident(END)}, 'infinity'::TIMESTAMPTZ)) "
        f"OVER (PARTITION BY {ident(ACCOUNT_ID)} ORDER BY {ident(START)}, {ident(END)} "
        f"ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_end FROM {clean}) "
        f"WHERE {ident(START)} < prev_end"
    )


def unknown_accounts_sql(clean: str, accounts: str) -> str:
    """Count rows (and distinct accounts) of a clean table whose account is not in ``accounts``.

    ``accounts`` is any clean table with an ``account_id`` column (accounts, or subscriptions
    for events of accounts that never subscribed).
    """
    return (
        f"SELECT count(*), count(DISTINCT {ident(ACCOUNT_ID)}) FROM {clean} "
        f"WHERE {ident(ACCOUNT_ID)} NOT IN (SELECT {ident(ACCOUNT_ID)} FROM {accounts})"
    )
