"""The run store: every scoring run's scores, full SHAP reasons and manifest, with history.

Design — a folder of Parquet files with one atomically swapped pointer per as_of::

    runs/
      .locks/as_of=2024-06-01.lock          flock per as_of (pes_ml.locking)
      as_of=2024-06-01/
        CURRENT                              {"run_id": ..., "committed_at": ...}
        run=20240602T031500Z-1a2b3c4d/       scores.parquet, reasons/, manifest.json
        .staging-<run_id>/                   a write in progress (or a crashed one)

Run folder layout (``format_version`` 2, in the manifest's ``run`` section):

- ``scores.parquet`` — one row per account;
- ``reasons/part-00000.parquet``, ``part-00001.parquet``... — the long SHAP table, one
  file per model (in the order the models first reach the store: churn, then expansion),
  each holding one or more row groups per chunk of accounts, accounts in scoring order.
  Reading the parts in name order and concatenating them gives the long table exactly as
  one in-memory pass would have built it (all churn rows, then all expansion rows);
  DuckDB reads them with ``read_parquet('.../reasons/*.parquet')``;
- ``manifest.json`` — the job's facts plus the store's own ``run`` section.

Format 1 (before chunked scoring) held the long table in one ``reasons.parquet``; runs in
that format are still read and verified. :meth:`RunStore.read_reasons` returns the whole
table or, with ``accounts=``/``model=``, only those rows (row groups whose statistics rule
them out are skipped); :meth:`RunStore.open_reasons` keeps a run's files open for many such
reads — change attribution reads the previous run a chunk of accounts at a time this way.

Why not a DuckDB file: DuckDB allows one writing process per database file, so two
scoring jobs for different as_of dates (which must be able to run at once) would
block each other, and a crash mid-transaction relies on WAL replay on next open.
Plain Parquet is read directly by DuckDB, pandas, Spark and BI tools, the Spark
scoring job can write the same layout, and partitions by ``as_of=`` work with
hive-style readers.

The commit protocol makes every write atomic, also when the long table is streamed in
chunks (:meth:`RunStore.begin_run`; :meth:`RunStore.write_run` is one chunk):

1. take the as_of lock and create ``.staging-<run_id>/`` (:meth:`RunStore.begin_run`);
2. stream each chunk's long table into ``.staging-<run_id>/reasons/`` (:meth:`RunWriter.add_reasons`);
3. validate the scores and manifest, write ``scores.parquet``, close and fsync the reason
   parts, write ``manifest.json``, fsync files and folders (:meth:`RunWriter.commit`);
4. rename the staging folder to ``run=<run_id>/`` (atomic within one filesystem);
5. write ``CURRENT.tmp``, fsync, ``os.replace`` it onto ``CURRENT`` — the commit point;
6. garbage-collect every other ``run=``/``.staging-`` folder of that as_of.

An error at any step before the commit point (including an exception raised by the caller
between chunks) removes the staging folder; readers only follow committed ``CURRENT``
pointers, so a crash (SIGKILL, power loss, full disk) at any step leaves either the
previous complete run or the new complete run visible, never a mix; leftovers of a killed
job are removed by the next write of that as_of. Rerunning an as_of replaces its run:
there is exactly one committed run per as_of.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pes_ml import schemas as S
from pes_ml.atomic import arrow_table, dumps, fsync_dir, is_disk_full, write_bytes, write_parquet
from pes_ml.errors import DataContractError, StoreError
from pes_ml.locking import run_lock
from pes_ml.run_contract import (
    MODEL,
    REASON_REQUIRED,
    SCORE_REQUIRED,
    as_of_key,
    check_run_id,
    new_run_id,
    validate_reasons,
    validate_run,
    validate_scores,
)

if TYPE_CHECKING:
    from pes_ml.config import PesConfig

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
"""2: the long SHAP table is ``reasons/part-*.parquet`` (one file per model); 1: ``reasons.parquet``."""
SCORES_FILE = "scores.parquet"
REASONS_DIR = "reasons"
REASONS_FILE = "reasons.parquet"
"""The long SHAP table of a format-1 run (still read)."""
MANIFEST_FILE = "manifest.json"
POINTER_FILE = "CURRENT"

# A test seam: called with the name of each commit step ("scores_written", "renamed",
# "committed"...). The kill-mid-write test sets it in a child process to pause there.
_stage_hook: Callable[[str], None] | None = None


def _stage(name: str) -> None:
    if _stage_hook is not None:
        _stage_hook(name)


@dataclass(frozen=True)
class RunInfo:
    """One committed run, as listed by :meth:`RunStore.runs`."""

    run_id: str
    as_of: date
    created_at: datetime
    committed_at: datetime
    path: Path
    n_scores: int
    n_reasons: int
    model_name: str
    model_version: str
    format_version: int = 1

    def reason_files(self) -> list[Path]:
        """The Parquet file(s) of the run's long SHAP table, in reading order."""
        if self.format_version >= 2:
            return sorted((self.path / REASONS_DIR).glob("part-*.parquet"))
        return [self.path / REASONS_FILE]


class _ReasonPart:
    """One Parquet file of the long SHAP table, written a chunk (row groups) at a time."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.rows = 0
        self._file: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed by close() or discard()
        try:
            self._writer = pq.ParquetWriter(self._file, schema, compression="zstd")
        except BaseException:
            self._file.close()
            raise

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table)
        self.rows += table.num_rows

    def close(self) -> None:
        """Write the footer, flush and fsync."""
        self._writer.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def discard(self) -> None:
        """Close without caring whether the file is whole (it is about to be deleted)."""
        for close in (self._writer.close, self._file.close):
            try:
                close()
            except Exception:  # noqa: BLE001 - a full disk fails the footer and the flush; the file goes
                logger.debug("Discarding %s: closing failed", self.path, exc_info=True)


class RunWriter:
    """One run being written: the long SHAP table streamed into staging, then committed with the scores.

    Made by :meth:`RunStore.begin_run`, which holds the as_of lock until :meth:`commit` or
    :meth:`abort`. Use it as a context manager: leaving the block with an exception (or
    without committing) aborts the run — its staging folder is removed and the previous
    run of the as_of stays the committed one.

    Attributes
    ----------
    as_of, run_id
        The run's as_of key and run id.
    reason_rows
        Rows of the long SHAP table written so far.

    Examples
    --------
    >>> with store.begin_run("2024-06-01") as run:  # doctest: +SKIP
    ...     for chunk in chunks:
    ...         run.add_reasons(reasons_of(chunk))
    ...     run.commit(scores, manifest)
    """

    def __init__(self, store: RunStore, as_of: str, run_id: str) -> None:
        self.store = store
        self.as_of = as_of
        self.run_id = run_id
        self.reason_rows = 0
        self._partition = store.path / f"as_of={as_of}"
        self._staging = self._partition / f".staging-{run_id}"
        self._final = self._partition / f"run={run_id}"
        self._tmp = self._partition / f"{POINTER_FILE}.tmp"
        self._created_at = datetime.now(UTC)
        self._parts: dict[str, _ReasonPart] = {}
        self._schema: pa.Schema | None = None
        self._lock = ExitStack()
        self._state = "new"  # new -> open -> committed | aborted
        self._renamed = False

    def __repr__(self) -> str:
        return f"RunWriter({str(self._staging)!r}, {self._state})"

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._state == "open":
            if exc is None:
                logger.warning("Run %s was neither committed nor aborted; aborting it", self.run_id)
            self.abort()

    # --- lifecycle ---------------------------------------------------------------------------
    def _open(self) -> None:
        self._lock.enter_context(self.store.lock(self.as_of))
        try:
            if self._final.exists() and self.store._pointer(self._partition) == self.run_id:
                raise StoreError(
                    f"Run {self.run_id} is already committed in {self.store.path}; use a new run id."
                )
        except BaseException:
            self._lock.close()
            raise
        self._state = "open"
        with self._writing():
            # Leftovers of a crashed attempt with this very run id (we hold the as_of lock).
            shutil.rmtree(self._final, ignore_errors=True)
            shutil.rmtree(self._staging, ignore_errors=True)
            (self._staging / REASONS_DIR).mkdir(parents=True, exist_ok=False)

    def _check_open(self) -> None:
        if self._state != "open":
            raise StoreError(f"Run {self.run_id} is {self._state}; start a new one with RunStore.begin_run.")

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Abort the run on any error; an OSError becomes a StoreError saying the previous run is intact."""
        try:
            yield
        except BaseException as exc:
            self.abort()
            if not isinstance(exc, OSError):
                raise
            if is_disk_full(exc):
                raise StoreError(
                    f"The run store at {self.store.path} ran out of disk space while writing run "
                    f"{self.run_id} for as_of {self.as_of}; the previous run is intact. Free space and rerun."
                ) from exc
            raise StoreError(
                f"Could not write run {self.run_id} to the run store at {self.store.path}: {exc}. "
                "The previous run is intact; fix the cause and rerun."
            ) from exc

    def abort(self) -> None:
        """Remove everything this run wrote and release the as_of lock; the previous run stays committed."""
        if self._state in ("aborted", "committed"):
            return
        self._state = "aborted"
        try:
            for part in self._parts.values():
                part.discard()
            shutil.rmtree(self._staging, ignore_errors=True)
            if self._renamed:
                shutil.rmtree(self._final, ignore_errors=True)
            self._tmp.unlink(missing_ok=True)
        finally:
            self._lock.close()
        logger.info("Run %s for as_of %s aborted; nothing was committed", self.run_id, self.as_of)

    # --- streaming ---------------------------------------------------------------------------
    def add_reasons(self, reasons: pd.DataFrame) -> None:
        """Append one chunk of the long SHAP table (at least ``REASON_REQUIRED``) to the run.

        Every chunk must have the columns and types of the first one. Rows are appended per
        model, so reading the run back gives each model's rows together, in the order written.

        Raises
        ------
        DataContractError
            If the chunk misses a column, holds another as_of, or its columns differ from the
            first chunk's (the run is aborted).
        StoreError
            If the disk is full or the file cannot be written (the run is aborted).
        """
        self._check_open()
        with self._writing():
            validate_reasons(self.as_of, reasons)
            table = self._conform(arrow_table(reasons, REASONS_DIR))
            if table.num_rows == 0:
                return
            # Each run of rows of one model goes to that model's file (score_features gives two runs).
            runs = pc.run_end_encode(table.column(MODEL).combine_chunks().cast(pa.string()))
            models, ends = runs.values.to_pylist(), runs.run_ends.to_pylist()  # noqa: PD011 - Arrow, not pandas
            start = 0
            for model, end in zip(models, ends, strict=True):
                key = str(model)
                part = self._parts.get(key)
                if part is None:
                    path = self._staging / REASONS_DIR / f"part-{len(self._parts):05d}.parquet"
                    part = self._parts[key] = _ReasonPart(path, table.schema)
                part.write(table.slice(start, end - start))
                start = end
            self.reason_rows += table.num_rows

    def _conform(self, table: pa.Table) -> pa.Table:
        """The chunk with the first chunk's schema (a column all missing in one chunk has no type)."""
        if self._schema is None:
            self._schema = table.schema
            return table
        if table.schema.equals(self._schema, check_metadata=False):
            return table.replace_schema_metadata(self._schema.metadata)
        if table.schema.names != self._schema.names:
            raise DataContractError(
                f"A chunk of reasons has the columns {table.schema.names}; the first chunk of run "
                f"{self.run_id} had {self._schema.names}. Every chunk must have the same columns."
            )
        try:
            return table.cast(self._schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise DataContractError(
                f"A chunk of reasons has column types that do not match the first chunk of run "
                f"{self.run_id}: {exc}."
            ) from exc

    # --- the commit --------------------------------------------------------------------------
    def commit(self, scores: pd.DataFrame, manifest: Mapping[str, Any]) -> str:
        """Write the scores and manifest, and make this run the committed run of its as_of.

        Parameters
        ----------
        scores
            One row per account; at least ``SCORE_REQUIRED``. Its ``run_id`` column is
            filled in (or must equal the run id).
        manifest
            JSON-serialisable facts about the run (model versions, fingerprints, timings...).

        Returns
        -------
        str
            The committed run id.

        Raises
        ------
        DataContractError
            If the scores miss a column, hold another as_of or repeat an account, or the
            manifest is not JSON (the run is aborted).
        StoreError
            If the disk is full or the store cannot be written; the previous run stays intact.
        """
        self._check_open()
        with self._writing():
            validate_scores(self.as_of, scores, self.run_id)
            scores = scores.assign(**{S.RUN_ID: self.run_id})
            try:
                manifest_json = dumps({**manifest, "run": self._run_section(scores)})
            except (TypeError, ValueError) as exc:
                raise DataContractError(f"The run manifest is not JSON serialisable: {exc}.") from exc
            _stage("validated")
            write_parquet(self._staging / SCORES_FILE, scores)
            _stage("scores_written")
            self._close_parts()
            _stage("reasons_written")
            write_bytes(self._staging / MANIFEST_FILE, manifest_json.encode("utf-8"))
            fsync_dir(self._staging)
            _stage("staged")
            os.rename(self._staging, self._final)
            self._renamed = True
            fsync_dir(self._partition)
            _stage("renamed")
            pointer = {"run_id": self.run_id, "committed_at": datetime.now(UTC).isoformat()}
            write_bytes(self._tmp, json.dumps(pointer).encode("utf-8"))
            _stage("pointer_written")
            os.replace(self._tmp, self._partition / POINTER_FILE)  # the commit point
            self._state = "committed"
        try:
            try:
                fsync_dir(self._partition)
            except OSError as exc:  # committed and visible; only its durability is in doubt
                logger.warning(
                    "Run %s is committed, but syncing %s to disk failed: %s",
                    self.run_id,
                    self._partition,
                    exc,
                )
            _stage("committed")
            self.store._collect_garbage(self._partition, keep=self.run_id)
        finally:
            self._lock.close()
        logger.info(
            "Run %s committed for as_of %s: %d scores, %d reasons",
            self.run_id,
            self.as_of,
            len(scores),
            self.reason_rows,
        )
        return self.run_id

    def _close_parts(self) -> None:
        if not self._parts:  # no reason row: an empty file keeps the columns readable
            schema = (
                self._schema or arrow_table(pd.DataFrame(columns=list(REASON_REQUIRED)), REASONS_DIR).schema
            )
            self._parts[""] = _ReasonPart(self._staging / REASONS_DIR / "part-00000.parquet", schema)
        for part in self._parts.values():
            part.close()
        self._parts = {}  # closed: nothing left to discard
        fsync_dir(self._staging / REASONS_DIR)

    def _run_section(self, scores: pd.DataFrame) -> dict[str, Any]:
        def _joined(column: str) -> str:
            return ",".join(sorted({str(v) for v in scores[column].dropna().unique()}))

        return {
            "run_id": self.run_id,
            "as_of": self.as_of,
            "created_at": self._created_at.isoformat(),
            "format_version": FORMAT_VERSION,
            "rows": {"scores": len(scores), "reasons": self.reason_rows},
            "model_name": _joined(S.MODEL_NAME),
            "model_version": _joined(S.MODEL_VERSION),
        }


class ReasonReader:
    """The long SHAP table of one committed run, opened once for many filtered reads.

    Made by :meth:`RunStore.open_reasons`. The files are opened up front and stay readable
    until :meth:`close` even if a rerun of that as_of replaces (and deletes) the run meanwhile
    (an open file outlives its deletion on POSIX), so a scoring job that reads the previous
    run chunk by chunk never sees it vanish halfway. Reads go one row group at a time and
    skip row groups whose statistics rule them out, so memory holds only what was asked for.

    Attributes
    ----------
    run
        The run being read.
    """

    def __init__(self, run: RunInfo, handles: list[pa.NativeFile]) -> None:
        self.run = run
        self._handles = handles
        try:
            self._files = [pq.ParquetFile(handle) for handle in handles]
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> ReasonReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the files."""
        for handle in self._handles:
            handle.close()

    def read(self, accounts: Collection[str] | None = None, model: str | None = None) -> pd.DataFrame:
        """The rows of these accounts (default: all) and this model (default: both), in stored order.

        Raises
        ------
        StoreError
            If a file cannot be read.
        """
        wanted = None if accounts is None else sorted({str(a) for a in accounts})
        tables = []
        try:
            for file in self._files:
                for index in range(file.num_row_groups):
                    if self._ruled_out(file, index, MODEL, model, model):
                        continue
                    if wanted is not None and (
                        not wanted or self._ruled_out(file, index, S.ACCOUNT_ID, wanted[0], wanted[-1])
                    ):
                        continue
                    table = file.read_row_group(index)
                    mask = None if model is None else pc.equal(_plain(table.column(MODEL)), model)
                    if wanted is not None:
                        ids = _plain(table.column(S.ACCOUNT_ID))
                        is_wanted = pc.is_in(ids, value_set=pa.array(wanted, type=ids.type))
                        mask = is_wanted if mask is None else pc.and_(mask, is_wanted)
                    tables.append(table if mask is None else table.filter(mask))
        except (OSError, pa.ArrowInvalid) as exc:
            raise StoreError(
                f"Cannot read the reasons of run {self.run.run_id} in {self.run.path}: {exc}."
            ) from exc
        if not tables:
            return self._files[0].schema_arrow.empty_table().to_pandas()
        return pa.concat_tables(tables, promote_options="permissive").to_pandas()

    @staticmethod
    def _ruled_out(file: pq.ParquetFile, index: int, column: str, low: str | None, high: str | None) -> bool:
        """Whether row group ``index`` holds no ``column`` value in [low, high], by its statistics."""
        if low is None or high is None:
            return False
        group = file.metadata.row_group(index)
        for position in range(group.num_columns):
            chunk = group.column(position)
            if chunk.path_in_schema != column:
                continue
            stats = chunk.statistics
            if stats is None or not stats.has_min_max:
                return False
            try:
                return bool(stats.max < low or stats.min > high)
            except TypeError:  # statistics of another type (e.g. bytes): read the group
                return False
        return False


def _plain(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A dictionary-encoded column decoded to its values, for comparisons."""
    if pa.types.is_dictionary(column.type):
        return column.cast(column.type.value_type)
    return column


class RunStore:
    """A folder of scoring runs with atomic, idempotent writes and per-account history.

    Parameters
    ----------
    path
        The store's root folder (default in config: ``<work_dir>/runs``); created on first write.

    Examples
    --------
    >>> store = RunStore("runs")  # doctest: +SKIP
    >>> with store.lock("2024-06-01"):  # doctest: +SKIP
    ...     run_id = store.write_run("2024-06-01", scores, reasons, manifest)
    >>> store.read_scores("latest")  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str], lock_timeout: float = 0.0) -> None:
        self.path = Path(path)
        self.lock_timeout = lock_timeout

    @classmethod
    def from_config(cls, config: PesConfig) -> RunStore:
        """The run store a config points at: ``store.path``, default ``<work_dir>/runs``."""
        path = config.store.path or str(Path(config.work_dir) / "runs")
        return cls(path, lock_timeout=config.store.lock_timeout_seconds)

    def __repr__(self) -> str:
        return f"RunStore({str(self.path)!r})"

    # --- locking -----------------------------------------------------------------------------
    def lock_path(self, as_of: str | date | datetime | pd.Timestamp) -> Path:
        """The lock file of one as_of."""
        return self.path / ".locks" / f"as_of={as_of_key(as_of)}.lock"

    def lock(
        self, as_of: str | date | datetime | pd.Timestamp, timeout: float | None = None
    ) -> AbstractContextManager[Path]:
        """Hold the run lock of ``as_of``: one scoring job per as_of at a time.

        ``timeout`` (seconds to wait for a busy lock) defaults to the store's ``lock_timeout``.

        Raises
        ------
        RunInProgressError
            If another process holds the lock of that as_of for longer than ``timeout`` seconds.
        """
        key = as_of_key(as_of)
        wait = self.lock_timeout if timeout is None else timeout
        return run_lock(self.lock_path(key), f"a scoring run for as_of {key}", timeout=wait)

    # --- writing -----------------------------------------------------------------------------
    def begin_run(self, as_of: str | date | datetime | pd.Timestamp, run_id: str | None = None) -> RunWriter:
        """Start writing a run whose long SHAP table arrives in chunks (see :class:`RunWriter`).

        Takes the as_of lock (unless this process already holds it) and creates the run's
        staging folder; nothing is visible to readers until :meth:`RunWriter.commit`.

        Parameters
        ----------
        as_of
            The run's cutoff date.
        run_id
            The run id; default: a new one.

        Raises
        ------
        DataContractError
            If ``as_of`` is not a date or the run id is not a plain folder name.
        RunInProgressError
            If another process is writing the same as_of.
        StoreError
            If that run id is already committed, or the staging folder cannot be created.
        """
        writer = RunWriter(self, as_of_key(as_of), check_run_id(run_id or new_run_id()))
        writer._open()
        return writer

    def write_run(
        self,
        as_of: str | date | datetime | pd.Timestamp,
        scores: pd.DataFrame,
        reasons: pd.DataFrame,
        manifest: Mapping[str, Any],
        run_id: str | None = None,
    ) -> str:
        """Write one run atomically and make it the committed run of its as_of.

        Takes the as_of lock unless this process already holds it. A previous run of
        the same as_of is replaced (and deleted after the commit). The same as
        :meth:`begin_run`, one :meth:`RunWriter.add_reasons` and :meth:`RunWriter.commit`.

        Parameters
        ----------
        as_of
            The run's cutoff date.
        scores
            One row per account; at least ``SCORE_REQUIRED``. Its ``run_id`` column is
            filled in (or must equal the run id).
        reasons
            The long SHAP table; at least ``REASON_REQUIRED``.
        manifest
            JSON-serialisable facts about the run (model versions, fingerprints, timings...).
        run_id
            The run id; default: the scores' ``run_id`` column when it holds one value, else new.

        Returns
        -------
        str
            The committed run id.

        Raises
        ------
        DataContractError
            If a frame misses a column, holds another as_of, or repeats an account.
        RunInProgressError
            If another process is writing the same as_of.
        StoreError
            If the disk is full or the store cannot be written; the previous run stays intact.
        """
        key, run_id = validate_run(as_of, scores, reasons, run_id)  # before touching the store
        with self.begin_run(key, run_id) as run:
            run.add_reasons(reasons)
            return run.commit(scores, manifest)

    def _collect_garbage(self, partition: Path, keep: str) -> None:
        """Delete every run folder of ``partition`` but the committed one (we hold its lock)."""
        for child in sorted(partition.iterdir()):
            if child.name == f"run={keep}" or not child.is_dir():
                continue
            if child.name.startswith(("run=", ".staging-")):
                shutil.rmtree(child, ignore_errors=True)
                logger.debug("Removed superseded run folder %s", child)
                _stage("gc")

    # --- reading -----------------------------------------------------------------------------
    @staticmethod
    def _read_pointer(partition: Path) -> dict[str, Any] | None:
        try:
            text = (partition / POINTER_FILE).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"Cannot read {partition / POINTER_FILE}: {exc}.") from exc
        try:
            pointer = json.loads(text)
            return {"run_id": str(pointer["run_id"]), "committed_at": str(pointer["committed_at"])}
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(
                f"The run pointer {partition / POINTER_FILE} is corrupt ({text[:80]!r}). "
                "Restore it from a backup or delete that as_of folder and rerun it."
            ) from exc

    def _pointer(self, partition: Path) -> str | None:
        pointer = self._read_pointer(partition)
        return None if pointer is None else str(pointer["run_id"])

    def _run_info(self, partition: Path, pointer: dict[str, Any]) -> RunInfo:
        run_id = str(pointer["run_id"])
        folder = partition / f"run={run_id}"
        manifest = self._read_manifest_at(folder)
        try:
            run = manifest["run"]
            return RunInfo(
                run_id=run_id,
                as_of=date.fromisoformat(partition.name.removeprefix("as_of=")),
                created_at=datetime.fromisoformat(run["created_at"]),
                committed_at=datetime.fromisoformat(pointer["committed_at"]),
                path=folder,
                n_scores=int(run["rows"]["scores"]),
                n_reasons=int(run["rows"]["reasons"]),
                model_name=str(run.get("model_name", "")),
                model_version=str(run.get("model_version", "")),
                format_version=int(run.get("format_version", 1)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # valid JSON, not a manifest
            raise StoreError(
                f"The manifest of {folder} is not a pes_ml run manifest ({type(exc).__name__}: {exc}). "
                "Score that as_of again to replace the run."
            ) from exc

    @staticmethod
    def _read_manifest_at(folder: Path) -> dict[str, Any]:
        try:
            result: dict[str, Any] = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StoreError(f"Cannot read the manifest of {folder}: {exc}.") from exc
        return result

    def _partitions(self) -> list[Path]:
        """The as_of partitions, oldest first."""
        return sorted(self.path.glob("as_of=*")) if self.path.is_dir() else []

    def _partition_run(self, partition: Path) -> RunInfo | None:
        """The committed run of one as_of partition (``None``: none yet); retried when a rerun
        commits meanwhile."""
        for _attempt in range(5):
            pointer = self._read_pointer(partition)
            if pointer is None:
                return None
            try:
                return self._run_info(partition, pointer)
            except StoreError:
                if self._pointer(partition) == pointer["run_id"]:
                    raise
        raise StoreError(f"The runs of {partition} keep changing; retry when the scoring job ends.")

    def _committed(self) -> list[RunInfo]:
        """Every committed run, oldest as_of first."""
        return [info for partition in self._partitions() if (info := self._partition_run(partition))]

    def runs(self) -> pd.DataFrame:
        """One row per committed run, oldest as_of first.

        Returns
        -------
        pandas.DataFrame
            run_id, as_of, created_at, committed_at, model_name, model_version,
            n_scores, n_reasons, path.
        """
        columns = ["run_id", "as_of", "created_at", "committed_at", "model_name", "model_version"]
        columns += ["n_scores", "n_reasons", "path"]
        rows = [{c: getattr(info, c) for c in columns} for info in self._committed()]
        frame = pd.DataFrame(rows, columns=columns)
        frame["path"] = frame["path"].astype(str)
        for column in ("created_at", "committed_at"):
            frame[column] = pd.to_datetime(frame[column], utc=True)
        return frame

    def latest_run(self, before_as_of: str | date | datetime | pd.Timestamp | None = None) -> RunInfo | None:
        """The committed run with the latest as_of (strictly before ``before_as_of`` if given).

        Only the partitions from the latest one down to the first committed run are read, so a
        damaged partition of another as_of does not stop this lookup.
        """
        partitions = self._partitions()
        if before_as_of is not None:
            limit = f"as_of={as_of_key(before_as_of)}"
            partitions = [p for p in partitions if p.name < limit]
        for partition in reversed(partitions):
            info = self._partition_run(partition)
            if info is not None:
                return info
        return None

    def previous_run(self, as_of: str | date | datetime | pd.Timestamp) -> RunInfo | None:
        """The latest committed run with an as_of before ``as_of`` (for change attribution)."""
        return self.latest_run(before_as_of=as_of)

    def get_run(self, run_id: str) -> RunInfo:
        """The committed run ``run_id``, or the latest one for ``"latest"``.

        Raises
        ------
        StoreError
            If no committed run has that id.
        """
        if run_id == "latest":
            info = self.latest_run()
            if info is None:
                raise StoreError(
                    f"The run store at {self.path} holds no committed run yet. Run `pes-ml score`."
                )
            return info
        committed = self._committed()
        for info in committed:
            if info.run_id == run_id:
                return info
        recent = ", ".join(f"{info.run_id} (as_of {info.as_of})" for info in committed[-3:][::-1])
        raise StoreError(
            f"No committed run {run_id!r} in the run store at {self.path} (a rerun of its as_of replaces "
            f"it). Use 'latest' or a run id: the latest are {recent or 'none'}."
        )

    def _unless_replaced(self, run_id: str, info: RunInfo, name: str, exc: OSError) -> None:
        """After a file of ``info`` was not found: return when a rerun replaced the run meanwhile
        (the caller looks it up again); raise when the committed run itself lacks the file."""
        if self.get_run(run_id).path == info.path:
            raise StoreError(
                f"Run {info.run_id} (as_of {info.as_of}) in {info.path} is missing its {name} "
                f"({exc.filename or exc}). Score as_of {info.as_of} again to rewrite the run."
            ) from exc

    def read_scores(self, run_id: str = "latest") -> pd.DataFrame:
        """The scores of one committed run (``"latest"``: the run with the latest as_of)."""
        for _attempt in range(5):
            info = self.get_run(run_id)
            try:
                return pd.read_parquet(info.path / SCORES_FILE)
            except FileNotFoundError as exc:
                self._unless_replaced(run_id, info, SCORES_FILE, exc)
                continue  # a rerun replaced the run between lookup and read; look it up again
            except (OSError, pa.ArrowInvalid) as exc:
                raise StoreError(f"Cannot read {info.path / SCORES_FILE}: {exc}.") from exc
        raise StoreError(f"Run {run_id!r} was replaced while being read; retry.")

    def open_reasons(self, run_id: str = "latest") -> ReasonReader:
        """Open the long SHAP table of one committed run for filtered reads (see :class:`ReasonReader`).

        Raises
        ------
        StoreError
            If there is no such committed run, or its files cannot be opened.
        """
        for _attempt in range(5):
            info = self.get_run(run_id)
            handles: list[pa.NativeFile] = []
            try:
                paths = info.reason_files()
                if not paths:
                    raise FileNotFoundError(info.path / REASONS_DIR)
                for path in paths:
                    handles.append(pa.OSFile(str(path), "r"))
                return ReasonReader(info, handles)
            except FileNotFoundError as exc:
                for handle in handles:
                    handle.close()
                self._unless_replaced(run_id, info, REASONS_DIR, exc)
                continue  # a rerun replaced the run between lookup and open; look it up again
            except (OSError, pa.ArrowInvalid) as exc:
                for handle in handles:
                    handle.close()
                raise StoreError(
                    f"Cannot read the reasons of run {info.run_id} in {info.path}: {exc}."
                ) from exc
        raise StoreError(f"Run {run_id!r} was replaced while being read; retry.")

    def read_reasons(
        self, run_id: str = "latest", *, accounts: Collection[str] | None = None, model: str | None = None
    ) -> pd.DataFrame:
        """The long SHAP table of one committed run, or the rows of some accounts and one model.

        Parameters
        ----------
        run_id
            The run; ``"latest"``: the run with the latest as_of.
        accounts
            Keep only these account ids (row groups that cannot hold them are not even read).
        model
            Keep only this model's rows (``"churn"`` or ``"expansion"``).
        """
        with self.open_reasons(run_id) as reader:
            return reader.read(accounts=accounts, model=model)

    def read_manifest(self, run_id: str = "latest") -> dict[str, Any]:
        """The manifest of one committed run; the store's own facts are under ``"run"``."""
        return self._read_manifest_at(self.get_run(run_id).path)

    def history(self, account_id: str | None = None) -> pd.DataFrame:
        """Scores across all committed runs, oldest as_of first (the PES trend per account).

        Parameters
        ----------
        account_id
            Keep only this account; default: every account.
        """
        filters = [(S.ACCOUNT_ID, "=", str(account_id))] if account_id is not None else None
        tables = []
        for info in self._committed():
            try:
                tables.append(pq.read_table(info.path / SCORES_FILE, filters=filters))
            except FileNotFoundError:
                continue  # replaced by a rerun while reading: the newer run is read next time
        if not tables:
            return pd.DataFrame(columns=list(SCORE_REQUIRED) + [S.RUN_ID])
        frame = pa.concat_tables(tables, promote_options="permissive").to_pandas()
        return frame.sort_values([S.AS_OF, S.ACCOUNT_ID], kind="stable").reset_index(drop=True)

    def verify(self) -> list[str]:
        """Check every committed run: its files exist and their row counts match the manifest.

        Returns
        -------
        list of str
            One line per problem; empty when the store is consistent.
        """
        problems = []
        for info in self._committed():
            checks = [(info.path / SCORES_FILE, [info.path / SCORES_FILE], info.n_scores)]
            reasons = info.reason_files()
            if reasons:
                where = info.path / (REASONS_DIR if info.format_version >= 2 else REASONS_FILE)
                checks.append((where, reasons, info.n_reasons))
            else:
                problems.append(f"{info.path / REASONS_DIR}: no part-*.parquet file")
            for label, paths, expected in checks:
                try:
                    rows = sum(pq.ParquetFile(path).metadata.num_rows for path in paths)
                except (OSError, pa.ArrowInvalid) as exc:
                    problems.append(f"{label}: unreadable ({exc})")
                    continue
                if rows != expected:
                    problems.append(f"{label}: {rows} rows, manifest says {expected}")
        return problems


__all__ = [
    "FORMAT_VERSION",
    "REASON_REQUIRED",
    "SCORE_REQUIRED",
    "ReasonReader",
    "RunInfo",
    "RunStore",
    "RunWriter",
    "as_of_key",
    "new_run_id",
]
