"""The one place that knows which engine runs the SQL: DuckDB (default) or Spark.

DuckDB runs in process: nothing to start. Spark is used when ``engine: spark``
is configured; its session is created lazily and shared.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import uuid
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

if TYPE_CHECKING:
    from pes_ml.config import PesConfig
    from pes_ml.errors import PesError

logger = logging.getLogger(__name__)

_SPARK: Any = None


def connect_duckdb(
    database: str | Path = ":memory:", threads: int | None = None, memory_limit: str | None = None
) -> duckdb.DuckDBPyConnection:
    """Open a DuckDB connection with UTC as the session time zone.

    Timestamps are compared and truncated in UTC everywhere; a local time zone
    would move day boundaries and break point-in-time windows. ``memory_limit``
    (e.g. ``"2GB"``) caps DuckDB's memory; set a ``temp_directory`` for it to spill to.
    """
    con = duckdb.connect(str(database))
    con.execute("SET TimeZone = 'UTC'")
    if threads is not None:
        con.execute(f"SET threads = {int(threads)}")
    if memory_limit is not None:
        con.execute(f"SET memory_limit = '{_size(memory_limit)}'")
    return con


def _size(memory_limit: str) -> str:
    """A memory size as DuckDB reads it: digits and a unit only (the config validates the pattern)."""
    return "".join(ch for ch in memory_limit if ch.isalnum() or ch == ".")


def out_of_memory(exc: duckdb.OutOfMemoryException, stage: str, config: PesConfig) -> PesError:
    """A one-line, actionable error for DuckDB running out of memory in ``stage``."""
    from pes_ml.errors import ConfigError, first_line

    limit = config.duckdb_memory_limit or "unset (DuckDB's default, 80% of RAM)"
    return ConfigError(
        f"DuckDB ran out of memory during {stage} with duckdb_memory_limit {limit}: {first_line(exc)}. "
        "Raise duckdb_memory_limit in the config (or unset it), free memory on this machine, "
        "or process fewer as_of dates at a time."
    )


def spill_directory(config: PesConfig) -> Path:
    """A fresh folder under ``<work_dir>/.spill`` for this process's DuckDB temporary files."""
    root = Path(config.work_dir) / ".spill"
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=root))


def spark_session(master: str = "local[*]") -> Any:
    """Return the shared SparkSession, creating it on first use (UTC session time zone)."""
    global _SPARK
    if _SPARK is not None:
        return _SPARK
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:  # pragma: no cover - depends on the install
        from pes_ml.errors import ConfigError

        raise ConfigError(
            "engine: spark needs PySpark. Install it with `pip install 'pes_ml[spark]'` "
            "(and Java 17), or set engine: duckdb."
        ) from exc
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Python workers (mapInPandas scoring) must run the driver's interpreter, which has pes_ml.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    _SPARK = (
        SparkSession.builder.master(master)
        .appName("pes_ml")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "4g")
        .getOrCreate()
    )
    logger.info("Started Spark session on %s", master)
    return _SPARK


def ibis_backend(config: PesConfig) -> Any:
    """An Ibis backend for the configured engine."""
    import ibis

    if config.engine == "spark":
        return ibis.pyspark.connect(spark_session(config.spark_master))
    con = ibis.duckdb.connect()
    con.raw_sql("SET TimeZone = 'UTC'")
    # Results are sorted where order matters; letting DuckDB drop insertion order
    # saves memory and time on every materialised intermediate.
    con.raw_sql("SET preserve_insertion_order = false")
    if config.duckdb_memory_limit is not None:
        con.raw_sql(f"SET memory_limit = '{_size(config.duckdb_memory_limit)}'")
        spill = spill_directory(config)
        # The folder goes with the connection (or at exit): a run leaves no empty folder behind.
        weakref.finalize(con, shutil.rmtree, spill, ignore_errors=True)
        quoted = str(spill).replace("'", "''")
        con.raw_sql(f"SET temp_directory = '{quoted}'")
    return con


def epoch_seconds(ts: Any) -> Any:
    """Seconds since 1970-01-01 UTC of an Ibis UTC timestamp expression, compiled cheaply for its engine.

    Ibis compiles ``epoch_seconds()`` on DuckDB as ``EPOCH(CAST(ts AS TIMESTAMP))``,
    a per-row time-zone conversion that costs ~5x the ``EPOCH(ts)`` of the
    ``TIMESTAMPTZ`` itself (its fractional seconds are harmless under a floor by whole
    seconds). Other engines, and unbound expressions, use Ibis's own operation.
    """
    try:
        name = ts._find_backend(use_default=True).name
    except Exception:  # noqa: BLE001 - unbound expression: no engine to specialise for
        name = None
    if name == "duckdb":
        return _duckdb_epoch()(ts)
    return ts.epoch_seconds()


def _duckdb_epoch() -> Any:
    import ibis
    import ibis.expr.datatypes as dt

    return ibis.udf.scalar.builtin(
        lambda ts: None, name="epoch", signature=((dt.Timestamp(timezone="UTC"),), dt.float64)
    )


@contextmanager
def materialized(expr: Any) -> Iterator[Any]:
    """Compute an Ibis table expression once and reuse it: a DuckDB temp table or a cached Spark view.

    Released when the block exits. Ibis's own ``cache()`` cannot release on
    DuckDB 2 with the installed sqlglot (its DROP statement loses the table
    name), so DuckDB tables are created and dropped here.
    """
    backend = expr._find_backend(use_default=True)
    if backend.name != "duckdb":
        # Register the in-memory tables the expression reads: Spark's cache() does not.
        backend._run_pre_execute_hooks(expr)
        cached = expr.cache()
        try:
            yield cached
        finally:
            cached.release()
        return
    name = f"_pes_ml_{uuid.uuid4().hex}"
    table = backend.create_table(name, expr, temp=True)
    try:
        yield table
    finally:
        backend.raw_sql(f'DROP TABLE IF EXISTS temp.main."{name}"')


def to_arrow(expr: Any) -> Any:
    """Execute an Ibis table expression and return a pyarrow Table, on either engine.

    On Spark, Ibis converts through pandas (slow, and it trips a pandas 3 deprecation
    on tz-aware columns); Spark 4's ``DataFrame.toArrow`` is used instead.
    """
    backend = expr._find_backend(use_default=True)
    if backend.name == "pyspark":
        backend._run_pre_execute_hooks(expr)
        return backend._session.sql(backend.compile(expr)).toArrow()
    return expr.to_pyarrow()
