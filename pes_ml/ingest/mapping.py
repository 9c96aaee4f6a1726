"""Column mapping: turn a source's own columns into the canonical, typed columns of the contract.

For every canonical column of a table (``schemas.COLUMN_TYPES``) the value comes
from, in order: ``constants`` in config; the source column named in ``columns``;
a source column with the canonical name itself; else NULL (optional columns
only — a missing required column raises :class:`~pes_ml.errors.DataContractError`).
``event_lookup`` turns event codes into names; ``join`` brings columns from a
second file on a unique key; ``value_maps`` rewrite text values before the cast.

Casting never fails: each canonical column yields a typed SQL expression (NULL
when the text does not parse) and a ``present`` flag (the source had a value), so
:mod:`pes_ml.ingest.validate` can tell "missing" from "unparseable". Naive
timestamps are read as UTC (the connection's time zone is UTC); ids become text.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass, field

import duckdb

from pes_ml.config import EPOCH_FORMATS, SourceConfig
from pes_ml.errors import DataContractError
from pes_ml.ingest.readers import ReaderSpec, SourceView, ident, open_source, sql_string
from pes_ml.schemas import ACCOUNT_ID, COLUMN_TYPES, EVENT, REQUIRED_COLUMNS, TIMESTAMP, USER_ID

logger = logging.getLogger(__name__)

_NUMERIC_TYPES = (
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
    "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "DECIMAL",
)  # fmt: skip
_NAIVE_TEMPORAL = ("TIMESTAMP", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S", "DATE")
_AWARE_TEMPORAL = ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ")
_FLOAT_TYPES = ("FLOAT", "DOUBLE", "DECIMAL")
# Text that means "no value" in exports (pandas, R, Excel, SQL dumps). In number columns
# 'NaN' stays a value, quarantined as non-numeric, as the contract says.
_NULL_TOKENS = ("null", "none", "n/a", "nan")
_NUMBER_NULL_TOKENS = ("null", "none", "n/a")
# Epoch numbers outside years 1..9999 cannot be timestamps: NULL (unparseable) rather than an error.
_EPOCH_SECONDS_RANGE = (-62135596800, 253402300799)


@dataclass(frozen=True)
class Column:
    """One canonical column as SQL over the source row.

    ``typed`` is the value in its canonical type (NULL when absent or unparseable);
    ``present`` is true when the source holds a non-empty value. Constants and
    absent optional columns have ``present`` NULL: nothing to check.
    """

    name: str
    duck_type: str
    typed: str
    present: str | None
    source_column: str | None = None


@dataclass(frozen=True)
class MappedSource:
    """A source mapped onto the contract, ready for validation.

    ``from_sql`` numbers the source rows (:data:`~pes_ml.ingest.readers.SOURCE_ROW_NUMBER`, 1-based, in read
    order) before any join, so a join that multiplied rows would show up as
    ``read != staged rows``.
    """

    table: str
    config_key: str
    source: SourceView
    from_sql: str
    columns: dict[str, Column]
    raw_columns: list[tuple[str, str]]
    passthrough: list[tuple[str, str]] = field(default_factory=list)
    join_miss: str | None = None
    join_label: str | None = None
    lookup_miss: str | None = None


def _suggest(wanted: str, found: list[str], key: str | None = None) -> str:
    """Columns of ``found`` close to ``wanted``, as the mapping to write (```key: column```) when the
    contract column ``key`` is being mapped, else as column names."""
    hints = {
        TIMESTAMP: ("time", "date", "ts"),
        ACCOUNT_ID: ("account", "customer", "user", "id"),
        EVENT: ("event",),
    }
    guesses = difflib.get_close_matches(wanted, found, n=2, cutoff=0.5)
    for col in found:
        if col not in guesses and any(h in col.lower() for h in hints.get(key or wanted, ())):
            guesses.append(col)
    if not guesses:
        return ""
    return " Perhaps: " + ", ".join(f"`{key}: {g}`" if key else f"`{g}`" for g in guesses[:3]) + "."


_SPACE_CHARACTERS = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
"""Every character Python's ``str.isspace`` accepts. DuckDB's one-argument ``trim`` keeps tabs
and line breaks, so an id of only those (``"\\t\\x0b"``) was loaded as an id instead of quarantined
as missing (found by the ingest fuzz test)."""


def _text(expr: str, duck_type: str) -> str:
    """A text column trimmed of :data:`_SPACE_CHARACTERS` at both ends; NULL when nothing is left.

    Only a value whose first or last character is one of them (or an empty one) goes through
    ``trim``: DuckDB's ``trim`` with a list of characters cost 4.2 s per 10M values, the check of
    both ends 0.35 s, and most values have nothing to trim. ``left``/``right`` count code points,
    as ``trim`` does, so the result is the same for every value.
    """
    value = expr if duck_type == "VARCHAR" else f"CAST({expr} AS VARCHAR)"
    spaces = sql_string(_SPACE_CHARACTERS)
    ends_in_space = f"contains({spaces}, left({value}, 1)) OR contains({spaces}, right({value}, 1))"
    return f"NULLIF(CASE WHEN {ends_in_space} THEN trim({value}, {spaces}) ELSE {value} END, '')"


def _null_tokens(text: str, tokens: tuple[str, ...]) -> str:
    listed = ", ".join(sql_string(t) for t in tokens)
    return f"(CASE WHEN lower({text}) IN ({listed}) THEN NULL ELSE {text} END)"


def _epoch(number: str, unit: str) -> str:
    """TIMESTAMPTZ from seconds or milliseconds since 1970 (NULL when not finite or out of range)."""
    scale = 1000 if unit == "epoch_ms" else 1
    low, high = (bound * scale for bound in _EPOCH_SECONDS_RANGE)
    return (
        f"(CASE WHEN isfinite({number}) AND {number} BETWEEN {low} AND {high} "
        f"THEN to_timestamp({number} / {scale}) END)"
    )


def _value_map(text: str, mapping: dict[str, str | float | int | bool]) -> str:
    cases = " ".join(f"WHEN {sql_string(str(k))} THEN {sql_string(str(v))}" for k, v in mapping.items())
    return f"(CASE {text} {cases} ELSE {text} END)"


def _typed_column(
    name: str,
    target: str,
    expr: str,
    source_type: str,
    source: SourceConfig,
) -> tuple[str, str]:
    """``(typed, present)`` SQL for one source column cast to the canonical type."""
    mapping = source.value_maps.get(name)
    native = mapping is None
    if native and target == "DOUBLE" and source_type.startswith(_NUMERIC_TYPES):
        return f"CAST({expr} AS DOUBLE)", f"({expr} IS NOT NULL)"
    if native and target == "TIMESTAMPTZ" and source_type in _AWARE_TEMPORAL:
        return f"CAST({expr} AS TIMESTAMPTZ)", f"({expr} IS NOT NULL)"
    if native and target == "TIMESTAMPTZ" and source_type in _NAIVE_TEMPORAL:
        # The connection's time zone is UTC, so a naive timestamp is read as UTC.
        return f"CAST(CAST({expr} AS TIMESTAMP) AS TIMESTAMPTZ)", f"({expr} IS NOT NULL)"
    if native and target == "BOOLEAN" and source_type == "BOOLEAN":
        return expr, f"({expr} IS NOT NULL)"
    epoch = source.timestamp_format if source.timestamp_format in EPOCH_FORMATS else None
    if native and target == "TIMESTAMPTZ" and epoch and source_type.startswith(_NUMERIC_TYPES):
        return _epoch(f"CAST({expr} AS DOUBLE)", epoch), f"({expr} IS NOT NULL)"
    if native and target == "VARCHAR" and source_type.startswith(_FLOAT_TYPES):
        # Integer ids stored as floats (pandas turns an int column with nulls into float64) must
        # read "17", not "17.0", or they would not match the same id written as an integer elsewhere.
        expr = (
            f"(CASE WHEN {expr} = trunc({expr}) AND abs({expr}) < 9007199254740992 "
            f"THEN CAST(CAST({expr} AS BIGINT) AS VARCHAR) ELSE CAST({expr} AS VARCHAR) END)"
        )
        source_type = "VARCHAR"
    text = _text(expr, source_type)
    text = _null_tokens(text, _NUMBER_NULL_TOKENS if target in ("DOUBLE", "BOOLEAN") else _NULL_TOKENS)
    if mapping is not None:
        text = _value_map(text, mapping)
    present = f"({text} IS NOT NULL)"
    if target == "VARCHAR":
        return text, present
    if target == "TIMESTAMPTZ":
        if epoch:
            return _epoch(f"TRY_CAST({text} AS DOUBLE)", epoch), present
        if source.timestamp_format:
            return (
                f"CAST(try_strptime({text}, {sql_string(source.timestamp_format)}) AS TIMESTAMPTZ)",
                present,
            )
        return f"TRY_CAST({text} AS TIMESTAMPTZ)", present
    return f"TRY_CAST({text} AS {target})", present


def _literal(value: str | float | int | bool, target: str) -> str:
    if isinstance(value, bool):
        return f"CAST({'true' if value else 'false'} AS {target})"
    if isinstance(value, int | float):
        return f"CAST({value!r} AS {target})"
    return f"CAST({sql_string(value)} AS {target})"


def _check_keys(table: str, config_key: str, source: SourceConfig) -> None:
    canonical = list(COLUMN_TYPES[table])
    for option, keys in (
        ("columns", source.columns),
        ("constants", source.constants),
        ("value_maps", source.value_maps),
    ):
        for key in keys:
            if key not in canonical:
                match = difflib.get_close_matches(key, canonical, n=1)
                hint = f" Did you mean {match[0]!r}?" if match else ""
                raise DataContractError(
                    f"{config_key}.{option} has {key!r}, which is not a column of the {table} contract."
                    f"{hint} "
                    f"Canonical columns of {table}: {', '.join(canonical)}. Keys are canonical names; "
                    "values are your source's column names."
                )


def _unique_key_check(
    con: duckdb.DuckDBPyConnection, view: str, key: str, label: str, config_key: str
) -> None:
    dupes = con.execute(
        f"SELECT CAST({ident(key)} AS VARCHAR), count(*) FROM {ident(view)} "
        f"GROUP BY 1 HAVING count(*) > 1 ORDER BY 2 DESC LIMIT 3"
    ).fetchall()
    if dupes:
        examples = ", ".join(f"{k!r} ({n} rows)" for k, n in dupes)
        raise DataContractError(
            f"{label} must have one row per {key!r} ({config_key}), but some keys repeat: {examples}. "
            "A join on a repeated key would multiply source rows. "
            "De-duplicate the file or choose a unique key."
        )


def _delimiter_hint(view: SourceView, found: list[str]) -> str:
    """When a CSV reads as one column whose name holds a separator, the delimiter is wrong."""
    if view.format != "csv" or len(found) != 1:
        return ""
    for delimiter, label in ((";", ";"), ("\t", "tab"), ("|", "|"), (",", ",")):
        if delimiter in found[0]:
            return (
                f"The whole header was read as one column, and it contains {label!r}: the file is "
                f"{label!r}-separated but was read with another delimiter. Set "
                f"`{view.spec.config_key}.delimiter: {label!r}` (or remove `delimiter` to let pes-ml "
                "detect it)."
            )
    return ""


def _check_every_file_has(con: duckdb.DuckDBPyConnection, view: SourceView, column: str, key: str) -> None:
    """Parquet files of one folder/glob are read together by column name: each must hold ``column``."""
    if view.format != "parquet" or len(view.files) < 2:
        return
    rows = con.execute(
        "SELECT file_name, list(name) FROM parquet_schema(["
        + ", ".join(sql_string(f) for f in view.files)
        + "]) GROUP BY file_name"
    ).fetchall()
    odd = sorted(str(file) for file, names in rows if column not in names)
    if odd:
        columns = next(names for file, names in rows if str(file) == odd[0])
        raise DataContractError(
            f"Parquet file {odd[0]!r} in {view.spec.path!r} has no column {column!r} ({key}), "
            "which the other "
            f"files have{f' (and {len(odd) - 1} more files like it)' if len(odd) > 1 else ''}. "
            f"Its columns: {', '.join(str(c) for c in columns[1:])}. Files of one source are combined "
            "by column name: move that file out of the folder/glob, or re-export it with the same columns."
        )


def map_source(
    con: duckdb.DuckDBPyConnection, table: str, source: SourceConfig, config_key: str
) -> MappedSource:
    """Open a source and map its columns onto the ``table`` contract.

    Parameters
    ----------
    con
        The DuckDB connection of the load (time zone UTC).
    table
        ``events``, ``subscriptions`` or ``accounts``.
    source
        The source's config.
    config_key
        Where the source sits in the config, e.g. ``sources.events``; used in messages.

    Returns
    -------
    MappedSource
        SQL for every canonical column, plus the original columns for quarantine.

    Raises
    ------
    DataContractError
        If a required column is missing, a mapped column does not exist, or a join or
        lookup file is unusable.
    """
    _check_keys(table, config_key, source)
    main = open_source(con, ReaderSpec.from_source(source, config_key), f"raw_{table}")
    found = list(main.columns)
    con.execute(f"CREATE OR REPLACE TEMP VIEW {ident('src_' + table)} AS {main.numbered}")
    available: dict[str, tuple[str, str]] = {c: (f"s.{ident(c)}", t) for c, t in main.columns.items()}
    raw_columns = [(c, f"s.{ident(c)}") for c in found]
    from_sql = f"{ident('src_' + table)} AS s"
    join_miss = join_label = None

    if source.join is not None:
        join = source.join
        jkey = f"{config_key}.join"
        joined = open_source(con, ReaderSpec.from_join(join, jkey), f"join_{table}")
        source_key = join.source_key or join.key
        for col, where, cols, key in (
            (join.key, join.path, joined.columns, f"{jkey}.key"),
            (source_key, source.path, main.columns, f"{jkey}.source_key"),
            *((c, join.path, joined.columns, f"{jkey}.columns") for c in join.columns),
        ):
            if col not in cols:
                raise DataContractError(
                    f"{key} names column {col!r}, but {where!r} has no such column. "
                    f"Columns found: {', '.join(cols)}.{_suggest(col, list(cols))}"
                )
        clash = [c for c in join.columns if c in main.columns]
        if clash:
            raise DataContractError(
                f"{jkey}.columns {clash} also exist in {source.path!r}; the source's own column would be "
                "ambiguous. Bring only columns the source lacks."
            )
        _unique_key_check(con, joined.view, join.key, f"Joined file {join.path!r}", f"{jkey}.key")
        picked = ", ".join(ident(c) for c in join.columns)
        from_sql += (
            f" LEFT JOIN (SELECT CAST({ident(join.key)} AS VARCHAR) AS __pes_join_key, {picked}, "
            f"true AS __pes_join_matched FROM {ident(joined.view)}) AS j "
            f"ON CAST(s.{ident(source_key)} AS VARCHAR) = j.__pes_join_key"
        )
        for c in join.columns:
            available[c] = (f"j.{ident(c)}", joined.columns[c])
            raw_columns.append((c, f"j.{ident(c)}"))
        join_miss = "(j.__pes_join_matched IS NULL)"
        join_label = f"{source_key} not found in join file"
        found = found + list(join.columns)

    columns: dict[str, Column] = {}
    used: set[str] = set()
    lookup_miss = None
    for name, target in COLUMN_TYPES[table].items():
        if name in source.constants:
            columns[name] = Column(name, target, _literal(source.constants[name], target), None)
            continue
        mapped = source.columns.get(name)
        if mapped is not None and mapped not in available:
            raise DataContractError(
                f"{config_key}.columns.{name} maps to {mapped!r}, but {source.path!r} has no such column. "
                f"Columns found: {', '.join(found)}.{_suggest(mapped, found, key=name)} "
                f"Fix {config_key}.columns.{name}."
            )
        src_col = mapped if mapped is not None else (name if name in available else None)
        if src_col is None:
            if name in REQUIRED_COLUMNS[table]:
                delimiter_hint = _delimiter_hint(main, found)
                raise DataContractError(
                    f"Required column {name!r} of {table} is missing from {source.path!r}. "
                    f"Columns found: {', '.join(found)}. "
                    + (
                        delimiter_hint
                        or f"Set `{config_key}.columns.{name}` to the name of "
                        f"your {name} column{_suggest(name, found, key=name) or '.'}"
                        + (
                            f" Or give a fixed value with `{config_key}.constants.{name}`."
                            if name == EVENT
                            else ""
                        )
                    )
                )
            columns[name] = Column(name, target, f"CAST(NULL AS {target})", None)
            continue
        if src_col in main.duplicate_columns:
            raise DataContractError(
                f"The header of {source.path!r} ({config_key}) names column {src_col!r} more than once, "
                f"so it is ambiguous which one holds {table}.{name}. Rename the repeated column in the "
                "export (or drop one), then rerun."
            )
        if name in REQUIRED_COLUMNS[table] and src_col in main.columns:
            _check_every_file_has(con, main, src_col, f"{config_key}.columns.{name}")
        used.add(src_col)
        expr, source_type = available[src_col]
        if name == EVENT and source.event_lookup is not None:
            lookup = source.event_lookup
            lkey = f"{config_key}.event_lookup"
            lk = open_source(con, ReaderSpec.from_lookup(lookup, lkey), f"lookup_{table}")
            for col, key in ((lookup.key, f"{lkey}.key"), (lookup.name, f"{lkey}.name")):
                if col not in lk.columns:
                    raise DataContractError(
                        f"{key} names column {col!r}, but lookup file {lookup.path!r} has no such column. "
                        f"Columns found: {', '.join(lk.columns)}."
                    )
            _unique_key_check(con, lk.view, lookup.key, f"Event lookup {lookup.path!r}", f"{lkey}.key")
            code = _text(expr, source_type)
            from_sql += (
                f" LEFT JOIN (SELECT {_text(ident(lookup.key), lk.columns[lookup.key])} AS __pes_code, "
                f"{_text(ident(lookup.name), lk.columns[lookup.name])} AS __pes_name "
                f"FROM {ident(lk.view)}) AS l ON {code} = l.__pes_code"
            )
            columns[name] = Column(name, target, "l.__pes_name", f"({code} IS NOT NULL)", src_col)
            lookup_miss = f"({code} IS NOT NULL AND l.__pes_code IS NULL)"
            continue
        typed, present = _typed_column(name, target, expr, source_type, source)
        columns[name] = Column(name, target, typed, present, src_col)

    if table == "events" and columns[USER_ID].source_column is None and USER_ID not in source.constants:
        # An account-level log (no user column): each account counts as its own single user, so
        # user, stickiness and adoption features describe the account instead of being empty.
        account = columns[ACCOUNT_ID]
        columns[USER_ID] = Column(USER_ID, columns[USER_ID].duck_type, account.typed, None)

    passthrough: list[tuple[str, str]] = []
    if table == "accounts":
        # Accounts may carry any attribute (segment, industry...): keep unmapped columns as they are.
        passthrough = [(c, available[c][0]) for c in main.columns if c not in used and c not in columns]
    mapping = {
        n: (c.source_column or ("<constant>" if n in source.constants else None)) for n, c in columns.items()
    }
    logger.info("%s: %s mapped as %s", config_key, source.path, {k: v for k, v in mapping.items() if v})
    return MappedSource(
        table=table,
        config_key=config_key,
        source=main,
        from_sql=from_sql,
        columns=columns,
        raw_columns=raw_columns,
        passthrough=passthrough,
        join_miss=join_miss,
        join_label=join_label,
        lookup_miss=lookup_miss,
    )
