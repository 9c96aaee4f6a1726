"""Exports of a scoring run for CRM and CS tools: CSV, Parquet, or an upsert into a SQL table.

One row per account: the score fields, tier, top three reasons as text, the change
since the previous run, model name/version, as_of and run id.

CSV is safe to open in a spreadsheet: a text cell starting with ``=``, ``+``, ``-``,
``@``, tab or carriage return is prefixed with a single quote (OWASP's guidance on CSV
injection), so Excel, LibreOffice or Google Sheets show it as text instead of running
it as a formula. Numeric columns are written as numbers, so a negative ``pes_delta``
stays ``-12.5``. Files are written to a temporary name and renamed into place.

The database export upserts with SQLAlchemy on the key (account_id, as_of): the table
is created when missing, ``INSERT ... ON CONFLICT DO UPDATE`` on PostgreSQL and SQLite,
and delete-then-insert in one transaction elsewhere. Rerunning an export is idempotent.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, BinaryIO, Literal

import pandas as pd
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from pes_ml import schemas as S
from pes_ml.atomic import arrow_table, write_file_atomically
from pes_ml.errors import DataContractError, StoreError, first_line
from pes_ml.run_contract import FEATURE, GROUP, MODEL, PES_POINTS
from pes_ml.store import RunStore

logger = logging.getLogger(__name__)

PES_DELTA = "pes_delta"
WHAT_CHANGED = "what_changed"
REASON_COLUMNS = ("reason_1", "reason_2", "reason_3")
KEY = (S.ACCOUNT_ID, S.AS_OF)
LEADING = (
    S.ACCOUNT_ID,
    S.AS_OF,
    S.TIER,
    S.PES,
    PES_DELTA,
    S.CHURN_PROBABILITY,
    S.EXPANSION_PROBABILITY,
    S.EXPANSION_SCORE,
    *REASON_COLUMNS,
    WHAT_CHANGED,
)
TRAILING = (S.MODEL_NAME, S.MODEL_VERSION, S.RUN_ID)
# OWASP CSV injection: characters that make a spreadsheet treat a cell as a formula.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

Format = Literal["csv", "parquet"]


def _fallback_reasons(reasons: pd.DataFrame, k: int) -> pd.DataFrame:
    """Top-k reasons per account from the long SHAP table, when scoring did not write them.

    Uses the churn model's contributions (they move PES), largest absolute PES points first.
    """
    if reasons.empty:
        return pd.DataFrame(columns=[S.ACCOUNT_ID, *REASON_COLUMNS[:k]])
    churn = reasons[reasons[MODEL].astype(str).str.contains("churn")]
    rows = churn if not churn.empty else reasons
    rows = rows.assign(_size=rows[PES_POINTS].abs()).sort_values(
        [S.ACCOUNT_ID, "_size"], ascending=[True, False]
    )
    top = rows.groupby(S.ACCOUNT_ID, sort=False).head(k)
    text = top[FEATURE].astype(str) + " (" + top[GROUP].astype(str) + "): "
    text = text + top[PES_POINTS].map(lambda p: f"{p:+.1f} PES points")
    top = top.assign(_text=text, _rank=top.groupby(S.ACCOUNT_ID, sort=False).cumcount())
    wide = top.pivot(index=S.ACCOUNT_ID, columns="_rank", values="_text")
    wide.columns = [REASON_COLUMNS[i] for i in wide.columns]
    return wide.reset_index()


def build_export(store: RunStore, run: str = "latest") -> pd.DataFrame:
    """One row per account of a committed run, ready for a CRM.

    Parameters
    ----------
    store
        The run store.
    run
        A run id, or ``"latest"`` (the committed run with the latest as_of).

    Returns
    -------
    pandas.DataFrame
        account_id, as_of (a date), tier, pes, pes_delta, probabilities, expansion_score,
        reason_1..reason_3, what_changed, any further score columns (classic PES, arr...),
        model_name, model_version, run_id.

    Raises
    ------
    StoreError
        If the run does not exist.
    """
    info = store.get_run(run)
    scores = store.read_scores(info.run_id)
    if not all(c in scores.columns for c in REASON_COLUMNS):
        fallback = _fallback_reasons(store.read_reasons(info.run_id), len(REASON_COLUMNS))
        scores = scores.drop(columns=[c for c in REASON_COLUMNS if c in scores.columns])
        scores = scores.merge(fallback, on=S.ACCOUNT_ID, how="left")
    if PES_DELTA not in scores.columns:
        previous = store.previous_run(info.as_of)
        if previous is not None:
            before = store.read_scores(previous.run_id)[[S.ACCOUNT_ID, S.PES]].rename(
                columns={S.PES: "_before"}
            )
            scores = scores.merge(before, on=S.ACCOUNT_ID, how="left")
            scores[PES_DELTA] = scores[S.PES] - scores.pop("_before")
        else:
            scores[PES_DELTA] = float("nan")
    for column in (*REASON_COLUMNS, WHAT_CHANGED):
        if column not in scores.columns:
            scores[column] = pd.Series(pd.NA, index=scores.index, dtype="str")
    scores[S.AS_OF] = pd.to_datetime(scores[S.AS_OF], utc=True).dt.date
    first = [c for c in LEADING if c in scores.columns]
    last = [c for c in TRAILING if c in scores.columns]
    middle = [c for c in scores.columns if c not in first and c not in last]
    export = scores[first + middle + last].sort_values(S.ACCOUNT_ID, kind="stable").reset_index(drop=True)
    logger.info("Export of run %s (as_of %s): %d accounts", info.run_id, info.as_of, len(export))
    return export


def _escape_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def escape_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """Prefix text cells that a spreadsheet would run as a formula with a single quote.

    Only text columns are touched; numeric columns keep their numbers (``-3.5`` stays a number).

    Examples
    --------
    >>> escape_formulas(pd.DataFrame({"name": ["=1+1", "ok"], "delta": [-3.5, 2.0]}))["name"].tolist()
    ["'=1+1", 'ok']
    """
    escaped = frame.copy()
    for column in escaped.columns:
        series = escaped[column]
        if pd.api.types.is_string_dtype(series.dtype) or series.dtype == object:
            escaped[column] = series.map(_escape_cell, na_action="ignore").astype(series.dtype)
    return escaped


def write_export(frame: pd.DataFrame, out: str | Path, fmt: Format = "csv") -> Path:
    """Write an export atomically as CSV (formula-escaped, UTF-8) or Parquet.

    Raises
    ------
    StoreError
        If the file cannot be written (e.g. the disk is full); an existing file is left as it was.
    """
    path = Path(out)
    if fmt == "csv":
        safe = escape_formulas(frame)

        def write(fh: BinaryIO) -> None:
            # CRLF (RFC 4180) also makes the csv writer quote a bare CR inside a cell.
            safe.to_csv(fh, index=False, encoding="utf-8", lineterminator="\r\n")

    elif fmt == "parquet":
        table = arrow_table(frame, path.name)

        def write(fh: BinaryIO) -> None:
            pq.write_table(table, fh, compression="zstd")

    else:
        raise DataContractError(f"The export format must be 'csv' or 'parquet'. Got {fmt!r} instead.")
    write_file_atomically(path, write, f"the export {path}")
    logger.info("Wrote %d rows to %s (%s)", len(frame), path, fmt)
    return path


def _sql_type(series: pd.Series) -> sa.types.TypeEngine[Any]:
    if series.name == S.ACCOUNT_ID:
        return sa.String(255)
    if series.name == S.AS_OF:
        return sa.Date()
    if pd.api.types.is_bool_dtype(series.dtype):
        return sa.Boolean()
    if pd.api.types.is_integer_dtype(series.dtype):
        return sa.BigInteger()
    if pd.api.types.is_float_dtype(series.dtype):
        return sa.Double()
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return sa.DateTime(timezone=True)
    if pd.api.types.is_datetime64_dtype(series.dtype):
        return sa.DateTime()
    return sa.Text()


def _table(frame: pd.DataFrame, name: str, engine: sa.Engine) -> sa.Table:
    """The target table, created from the frame's columns when missing; checked when present."""
    schema, _, table_name = name.rpartition(".")
    metadata = sa.MetaData(schema=schema or None)
    if not sa.inspect(engine).has_table(table_name, schema=schema or None):
        columns = [sa.Column(str(c), _sql_type(frame[c]), nullable=c not in KEY) for c in frame.columns]
        table = sa.Table(table_name, metadata, *columns, sa.PrimaryKeyConstraint(*KEY))
        metadata.create_all(engine, tables=[table])
        logger.info("Created table %s with key (account_id, as_of)", name)
        return table
    table = sa.Table(table_name, metadata, autoload_with=engine)
    missing = [c for c in frame.columns if c not in table.columns]
    if missing:
        raise DataContractError(
            f"Table {name!r} lacks column(s) {', '.join(map(str, missing))} that the export writes. "
            f"Add them (ALTER TABLE {name} ADD COLUMN ...) or export to a new --table."
        )
    return table


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    plain = frame.astype(object).where(frame.notna(), None)
    records: list[dict[str, Any]] = plain.to_dict(orient="records")
    return records


def upsert_to_database(
    frame: pd.DataFrame, url: str, table: str = "pes_scores", chunk_size: int = 5000
) -> int:
    """Upsert an export into a SQL table on (account_id, as_of); create the table if missing.

    Parameters
    ----------
    frame
        The export (see :func:`build_export`).
    url
        A SQLAlchemy URL, e.g. ``postgresql+psycopg://user@host/db`` or ``sqlite:///crm.db``.
    table
        Table name, optionally schema-qualified (``crm.pes_scores``).
    chunk_size
        Rows per statement.

    Returns
    -------
    int
        Rows written.

    Raises
    ------
    DataContractError
        If an existing table lacks columns of the export.
    StoreError
        If the database cannot be reached or refuses the write (nothing is half-written:
        the whole upsert is one transaction).
    """
    try:
        engine = sa.create_engine(url)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise StoreError(f"Cannot use the database URL for the export: {exc}.") from exc
    shown = engine.url.render_as_string(hide_password=True)
    records = _records(frame)
    try:
        target = _table(frame, table, engine)
        updates = [c for c in frame.columns if c not in KEY]
        with engine.begin() as connection:
            for start in range(0, len(records), chunk_size):
                chunk = records[start : start + chunk_size]
                if engine.dialect.name in ("postgresql", "sqlite"):
                    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
                    insert = dialect.insert(target)
                    statement = insert.on_conflict_do_update(
                        index_elements=list(KEY), set_={c: insert.excluded[c] for c in updates}
                    )
                    connection.execute(statement, chunk)
                else:
                    keys = sa.tuple_(target.c[S.ACCOUNT_ID], target.c[S.AS_OF])
                    wanted = [(r[S.ACCOUNT_ID], r[S.AS_OF]) for r in chunk]
                    connection.execute(sa.delete(target).where(keys.in_(wanted)))
                    connection.execute(sa.insert(target), chunk)
    except sa.exc.SQLAlchemyError as exc:
        reason = first_line(getattr(exc, "orig", None) or exc)  # the driver's own error, when it has one
        raise StoreError(
            f"Could not upsert into table {table!r} at {shown}: {reason}. "
            "Check the URL, that the server is up, and that the table's key is (account_id, as_of)."
        ) from exc
    finally:
        engine.dispose()
    logger.info("Upserted %d rows into %s at %s", len(records), table, shown)
    return len(records)


__all__ = ["build_export", "escape_formulas", "upsert_to_database", "write_export"]
