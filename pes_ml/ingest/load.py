"""The ingest stage: sources -> typed, validated clean tables + quarantine + reconciliation.

Everything happens inside DuckDB, streamed from the sources to Parquet: a source
is read once into a staging file (typed columns plus a reason per row), from
which the clean table (valid rows, exact duplicates removed) and the quarantine
table (rows with a reason, original columns as text) are written.

Rows past ``filter_before`` count as read and are quarantined with the reason
``after filter_before``: they stay visible and the reconciliation still adds up
against the source's own row count.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import duckdb

from pes_ml.config import PesConfig, SourceConfig
from pes_ml.engine import connect_duckdb, out_of_memory
from pes_ml.errors import DataContractError, first_line
from pes_ml.ingest.mapping import MappedSource, map_source
from pes_ml.ingest.quarantine import copy_parquet, publish, remove_stale
from pes_ml.ingest.readers import ident, reading, sql_string
from pes_ml.ingest.reconcile import ReasonCount, Reconciliation, TableCount
from pes_ml.ingest.validate import (
    DUPLICATE,
    NO_SUBSCRIPTION,
    OVERLAPPING_SUBSCRIPTION,
    UNKNOWN_ACCOUNT,
    checks_for,
    clean_sql,
    overlap_sql,
    quarantine_sql,
    staging_sql,
    unknown_accounts_sql,
)
from pes_ml.locking import run_lock
from pes_ml.progress import NoProgress, Progress
from pes_ml.schemas import END, REASON, SOURCE_ROW, START, TABLES, TIMESTAMP

logger = logging.getLogger(__name__)

RECONCILIATION_FILE = "reconciliation.json"


def clean_paths(config: PesConfig) -> dict[str, Path]:
    """Where :func:`ingest` writes each clean table: ``<work_dir>/clean/<table>.parquet``.

    Parameters
    ----------
    config
        The project config.

    Returns
    -------
    dict
        ``{table: path}`` for events, subscriptions and accounts (configured or not).
    """
    return {table: Path(config.work_dir) / "clean" / f"{table}.parquet" for table in TABLES}


def quarantine_paths(config: PesConfig) -> dict[str, Path]:
    """Where :func:`ingest` writes quarantined rows: ``<work_dir>/quarantine/<table>.parquet``."""
    return {table: Path(config.work_dir) / "quarantine" / f"{table}.parquet" for table in TABLES}


def reconciliation_path(config: PesConfig) -> Path:
    """Where :func:`ingest` writes the reconciliation JSON: ``<work_dir>/clean/reconciliation.json``."""
    return Path(config.work_dir) / "clean" / RECONCILIATION_FILE


def _configured(config: PesConfig) -> list[tuple[str, SourceConfig]]:
    sources = config.sources
    return [(t, s) for t in TABLES if (s := getattr(sources, t)) is not None]


def sources_fingerprint(config: PesConfig) -> str:
    """A short hash of the config's ``sources`` (paths, formats, column mappings, lookups...)."""
    payload = json.dumps(config.sources.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def unreadable_clean_table(table: str, path: str | Path, exc: BaseException) -> DataContractError:
    """The error for a clean table a stage cannot read (cut short, overwritten...): how to rebuild it."""
    return DataContractError(
        f"The clean {table} table {str(path)!r} cannot be read ({first_line(exc)}). It is written by "
        "`pes-ml validate`: run that again (or `pes-ml features --ingest`) to rebuild it."
    )


def ingest_needed(config: PesConfig) -> str | None:
    """Why the clean tables must be written before a stage reads them; ``None`` when they are current.

    They are missing, or the last ingest read other sources than the config now names (a source
    added, removed, moved or mapped differently): reading them would silently use the old ones.
    A new export at the same path is not detected: run ``pes-ml validate`` (or ``--ingest``) for it.
    """
    if not clean_paths(config)["events"].is_file():
        return f"no clean events table in {config.work_dir} yet"
    try:
        recorded = Reconciliation.read_json(reconciliation_path(config)).sources
    except (OSError, ValueError, TypeError):  # no reconciliation, or one this version cannot read
        return None
    if recorded and recorded != sources_fingerprint(config):
        return f"the config's sources changed since the clean tables in {config.work_dir} were written"
    return None


INGEST_LOCK_TIMEOUT_SECONDS: Final = 3600.0
"""How long a job waits for another job's ingest or clean-table read in the same work_dir."""


def work_dir_lock(config: PesConfig) -> AbstractContextManager[Path]:
    """Hold the lock of ``<work_dir>/clean``: one ingest or clean-table reader at a time.

    :func:`ingest` rebuilds ``<work_dir>/.staging`` and republishes ``<work_dir>/clean``;
    it takes this lock itself, and jobs that then read the clean tables (training,
    scoring) hold it across ingest and the feature build, so they never see a half
    republished set or delete each other's staging. The lock is re-entrant within a
    process and released by the kernel if the holder dies; another job waits up to
    :data:`INGEST_LOCK_TIMEOUT_SECONDS`.
    """
    lock = Path(config.work_dir) / ".locks" / "ingest.lock"
    return run_lock(lock, f"an ingest into {config.work_dir}", timeout=INGEST_LOCK_TIMEOUT_SECONDS)


def ingest(config: PesConfig, progress: Progress | None = None) -> Reconciliation:
    """Read, map, validate and write every configured source; return the reconciliation.

    Parameters
    ----------
    config
        The project config: ``sources`` (events required; subscriptions and accounts
        optional), ``validation`` and ``work_dir``.
    progress
        Receives one step per table; the CLI draws a progress bar from it.

    Returns
    -------
    Reconciliation
        Per table ``read = loaded + quarantined + deduplicated``, and per reason the
        rows quarantined, deduplicated or flagged. Also written to
        ``<work_dir>/clean/reconciliation.json``.

    Raises
    ------
    DataContractError
        A required column is missing; a file is missing, empty, truncated or not in the
        declared format; or a table has no row, or no valid row (the message gives the
        reasons and the first rejected row). Nothing is written in that case: the
        previous clean tables, quarantine and reconciliation stay as they were.
    ConfigError
        A date setting (``min_timestamp``, ``filter_before``) is not an ISO date.

    Examples
    --------
    >>> from pes_ml import load_config
    >>> recon = ingest(load_config("pipelines/conf/base/pes.yaml"))  # doctest: +SKIP
    >>> recon.balanced  # doctest: +SKIP
    True
    """
    with work_dir_lock(config):
        return _ingest(config, progress or NoProgress())


def _ingest(config: PesConfig, progress: Progress) -> Reconciliation:
    now = datetime.now(UTC)
    work = Path(config.work_dir)
    staging = work / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True, exist_ok=True)
    configured = _configured(config)
    con = connect_duckdb(memory_limit=config.duckdb_memory_limit)
    con.execute(f"SET temp_directory = {sql_string(str(staging / 'spill'))}")
    clean, quarantine = clean_paths(config), quarantine_paths(config)
    counts: list[TableCount] = []
    reasons: list[ReasonCount] = []
    outputs: dict[Path, Path] = {}
    try:
        progress.start("Checking sources against the contract", total=len(configured))
        # Map every source first: a missing column or unusable file stops the load before any work.
        mapped = {table: map_source(con, table, source, f"sources.{table}") for table, source in configured}
        progress.start("Validating and writing clean tables", total=len(configured))
        for table, source in configured:
            count, table_reasons, files = _load_table(con, mapped[table], source, config, now, staging)
            _require_rows(con, mapped[table], count, table_reasons, files[1])
            counts.append(count)
            reasons.extend(table_reasons)
            outputs[clean[table]] = files[0]
            outputs[quarantine[table]] = files[1]
            progress.advance()
        reasons.extend(_flags(con, {t: outputs[clean[t]] for t, _ in configured}))
    except BaseException as exc:
        # Nothing was published: drop the half-done staging folder, keep the previous outputs.
        con.close()
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, duckdb.OutOfMemoryException):
            raise out_of_memory(exc, "ingest", config) from exc
        raise
    con.close()
    recon = Reconciliation(tables=counts, reasons=reasons, created_at=now.isoformat(),
                           sources=sources_fingerprint(config))
    publish(outputs)
    remove_stale([p for t in TABLES if t not in mapped for p in (clean[t], quarantine[t])])
    recon.write_json(reconciliation_path(config))
    shutil.rmtree(staging, ignore_errors=True)
    recon.log()
    return recon


def _load_table(
    con: duckdb.DuckDBPyConnection,
    mapped: MappedSource,
    source: SourceConfig,
    config: PesConfig,
    now: datetime,
    staging: Path,
) -> tuple[TableCount, list[ReasonCount], tuple[Path, Path]]:
    table = mapped.table
    checks = checks_for(mapped, source, config, now)
    staged_path = staging / f"{table}.staged.parquet"
    started = time.perf_counter()
    with reading(mapped.source.spec, mapped.source.format):
        staged_rows = copy_parquet(con, staging_sql(mapped, checks), staged_path)
    logger.debug("%s: %d rows read and checked in %.1fs", table, staged_rows, time.perf_counter() - started)
    staged = f"read_parquet({sql_string(str(staged_path))})"
    by_reason = con.execute(
        f"SELECT {ident(REASON)}, count(*), max(source_row) FROM {staged} GROUP BY 1"
    ).fetchall()
    read = int(max((r[2] or 0 for r in by_reason), default=0))
    valid = sum(int(r[1]) for r in by_reason if r[0] is None)
    # Accounts are keyed by account_id: identical rows are always collapsed.
    dedupe = source.deduplicate or table == "accounts"
    clean_tmp = staging / f"{table}.clean.parquet"
    quarantine_tmp = staging / f"{table}.quarantine.parquet"
    started = time.perf_counter()
    loaded = copy_parquet(con, clean_sql(mapped, staged, dedupe), clean_tmp)
    quarantined = copy_parquet(con, quarantine_sql(mapped, staged), quarantine_tmp)
    logger.debug("%s: clean and quarantine tables written in %.1fs", table, time.perf_counter() - started)
    deduplicated = valid - loaded
    if staged_rows != read:
        logger.error(
            "%s: %d source rows became %d rows after mapping; a join or lookup multiplied rows.",
            table,
            read,
            staged_rows,
        )
    order = {c.reason: i for i, c in enumerate(checks)}
    reasons = [
        ReasonCount(table, str(r[0]), int(r[1]), "quarantined")
        for r in sorted((r for r in by_reason if r[0] is not None), key=lambda r: order.get(r[0], len(order)))
    ]
    if deduplicated:
        reasons.append(ReasonCount(table, DUPLICATE, deduplicated, "deduplicated"))
    count = TableCount(
        table=table,
        source=mapped.source.spec.path,
        read=read,
        loaded=loaded,
        quarantined=quarantined,
        deduplicated=deduplicated,
    )
    staged_path.unlink()
    return count, reasons, (clean_tmp, quarantine_tmp)


def _require_rows(
    con: duckdb.DuckDBPyConnection,
    mapped: MappedSource,
    count: TableCount,
    reasons: list[ReasonCount],
    quarantine: Path,
) -> None:
    """Stop the load when a configured table has no row, or no valid row.

    An empty table, or one where every row failed, is a broken export or a wrong
    mapping (a changed timestamp format), not dirty data: continuing would score
    nobody, silently.
    """
    key, path = mapped.config_key, mapped.source.spec.path
    if count.read == 0:
        raise DataContractError(
            f"Input {path!r} ({key}) holds no rows (a header only, or files without data). "
            f"Re-export it with its rows, or remove {key} from the config."
        )
    if count.loaded > 0:
        return
    listed = ", ".join(f"{r.reason} ({r.rows:,})" for r in reasons if r.action == "quarantined")
    first = con.execute(f"SELECT * FROM read_parquet({sql_string(str(quarantine))}) LIMIT 1").fetchone()
    names = [d[0] for d in con.description or ()]
    example = ""
    if first is not None:
        values = dict(zip(names, first, strict=True))
        shown = ", ".join(
            f"{n}={'empty' if v is None else repr(str(v)[:40])}"
            for n, v in values.items()
            if n not in (REASON, SOURCE_ROW)
        )
        example = f" First rejected row (source row {values.get(SOURCE_ROW)}): {shown}."
    raise DataContractError(
        f"None of the {count.read:,} rows of {path!r} ({key}) passed validation: {listed}.{example} "
        f"{_all_rejected_hint(con, mapped, quarantine, reasons)}"
    )


def _all_rejected_hint(
    con: duckdb.DuckDBPyConnection, mapped: MappedSource, quarantine: Path, reasons: list[ReasonCount]
) -> str:
    key = mapped.config_key
    top = max((r for r in reasons if r.action == "quarantined"), key=lambda r: r.rows, default=None)
    top_reason = top.reason if top is not None else ""
    name = next((n for n in (TIMESTAMP, START, END) if top_reason == f"unparseable {n}"), None)
    column = mapped.columns[name].source_column if name is not None and name in mapped.columns else None
    if name is None or column is None:
        return (
            f"Check the column mapping ({key}.columns) against the file, fix the rows, then rerun; "
            "reasons are listed in pes_ml.ingest.validate."
        )
    samples = [
        str(r[0])
        for r in con.execute(
            f"SELECT {ident(column)} FROM read_parquet({sql_string(str(quarantine))}) "
            f"WHERE {ident(REASON)} = {sql_string(f'unparseable {name}')} LIMIT 5"
        ).fetchall()
    ]
    if samples and all(s.strip().lstrip("-").replace(".", "", 1).isdigit() for s in samples):
        digits = len(samples[0].strip().lstrip("-").split(".")[0])
        unit = "epoch_ms" if digits >= 12 else "epoch_s"
        return (
            f"Its {name} values ({', '.join(samples[:3])}) look like numbers since 1970: set "
            f"`{key}.timestamp_format: {unit}` ({'milliseconds' if unit == 'epoch_ms' else 'seconds'})."
        )
    return (
        f"Its {name} values ({', '.join(repr(s[:40]) for s in samples[:3])}) are not ISO 8601 "
        f"(2024-12-31 or 2024-12-31T23:59:59+00:00): set `{key}.timestamp_format` to their strptime "
        "format, e.g. '%d-%m-%Y' for 31-12-2024 or '%m/%d/%Y %H:%M' for 12/31/2024 23:59."
    )


def _flags(con: duckdb.DuckDBPyConnection, clean: dict[str, Path]) -> list[ReasonCount]:
    """Counts of loaded rows that look suspicious but are kept (see :mod:`pes_ml.ingest.validate`)."""
    flags: list[ReasonCount] = []
    rel = {t: f"read_parquet({sql_string(str(p))})" for t, p in clean.items()}
    if "subscriptions" in rel:
        row = con.execute(overlap_sql(rel["subscriptions"])).fetchone()
        overlapping = int(row[0]) if row else 0
        if overlapping:
            flags.append(ReasonCount("subscriptions", OVERLAPPING_SUBSCRIPTION, overlapping, "flagged"))
    if "subscriptions" in rel and "events" in rel:
        row = con.execute(unknown_accounts_sql(rel["events"], rel["subscriptions"])).fetchone()
        rows, accounts = (int(row[0]), int(row[1])) if row else (0, 0)
        if rows:
            logger.warning("events: %d rows of %d accounts that have no subscription", rows, accounts)
            flags.append(ReasonCount("events", NO_SUBSCRIPTION, rows, "flagged"))
    if "accounts" in rel:
        for table in ("subscriptions", "events"):
            if table not in rel:
                continue
            row = con.execute(unknown_accounts_sql(rel[table], rel["accounts"])).fetchone()
            rows, accounts = (int(row[0]), int(row[1])) if row else (0, 0)
            if rows:
                logger.warning(
                    "%s: %d rows of %d accounts missing from the accounts table", table, rows, accounts
                )
                flags.append(ReasonCount(table, UNKNOWN_ACCOUNT, rows, "flagged"))
    return flags
