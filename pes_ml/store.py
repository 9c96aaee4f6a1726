"""The run store: every scoring run's scores, full SHAP reasons and manifest, with history.

Design — a folder of Parquet files with one atomically swapped pointer per as_of::

    runs/
      .locks/as_of=2024-06-01.lock          flock per as_of (pes_ml.locking)
      as_of=2024-06-01/
        CURRENT                              {"run_id": ..., "committed_at": ...}
        run=20240602T031500Z-1a2b3c4d/       scores.parquet, reasons.parquet, manifest.json
        .staging-<run_id>/                   a write in progress (or a crashed one)

Why not a DuckDB file: DuckDB allows one writing process per database file, so two
scoring jobs for different as_of dates (which must be able to run at once) would
block each other, and a crash mid-transaction relies on WAL replay on next open.
Plain Parquet is read directly by DuckDB, pandas, Spark and BI tools, the Spark
scoring job can write the same layout, and partitions by ``as_of=`` work with
hive-style readers.

The commit protocol makes every write atomic:

1. validate the frames (a :class:`DataContractError` names missing columns);
2. write scores, reasons and manifest into ``.staging-<run_id>/``, fsync files and folder;
3. rename the staging folder to ``run=<run_id>/`` (atomic within one filesystem);
4. write ``CURRENT.tmp``, fsync, ``os.replace`` it onto ``CURRENT`` — the commit point;
5. garbage-collect every other ``run=``/``.staging-`` folder of that as_of.

Readers only follow committed ``CURRENT`` pointers, so a crash (SIGKILL, power loss,
full disk) at any step leaves either the previous complete run or the new complete
run visible, never a mix; leftovers are removed by the next write of that as_of.
Rerunning an as_of replaces its run: there is exactly one committed run per as_of.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pes_ml import schemas as S
from pes_ml.atomic import dumps, fsync_dir, is_disk_full, write_bytes, write_parquet
from pes_ml.errors import DataContractError, StoreError
from pes_ml.locking import run_lock
from pes_ml.run_contract import (
    REASON_REQUIRED,
    SCORE_REQUIRED,
    as_of_key,
    new_run_id,
    validate_run,
)

if TYPE_CHECKING:
    from pes_ml.config import PesConfig

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
SCORES_FILE = "scores.parquet"
REASONS_FILE = "reasons.parquet"
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
        the same as_of is replaced (and deleted after the commit).

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
        key, run_id = validate_run(as_of, scores, reasons, run_id)
        scores = scores.assign(**{S.RUN_ID: run_id})
        created_at = datetime.now(UTC)
        try:
            manifest_json = dumps(
                {**manifest, "run": self._run_section(run_id, key, created_at, scores, reasons)}
            )
        except (TypeError, ValueError) as exc:
            raise DataContractError(f"The run manifest is not JSON serialisable: {exc}.") from exc
        _stage("validated")
        with self.lock(key):
            self._commit(key, run_id, scores, reasons, manifest_json)
        logger.info(
            "Run %s committed for as_of %s: %d scores, %d reasons", run_id, key, len(scores), len(reasons)
        )
        return run_id

    @staticmethod
    def _run_section(
        run_id: str, key: str, created_at: datetime, scores: pd.DataFrame, reasons: pd.DataFrame
    ) -> dict[str, Any]:
        def _joined(column: str) -> str:
            return ",".join(sorted({str(v) for v in scores[column].dropna().unique()}))

        return {
            "run_id": run_id,
            "as_of": key,
            "created_at": created_at.isoformat(),
            "format_version": FORMAT_VERSION,
            "rows": {"scores": len(scores), "reasons": len(reasons)},
            "model_name": _joined(S.MODEL_NAME),
            "model_version": _joined(S.MODEL_VERSION),
        }

    def _commit(
        self, key: str, run_id: str, scores: pd.DataFrame, reasons: pd.DataFrame, manifest: str
    ) -> None:
        partition = self.path / f"as_of={key}"
        staging = partition / f".staging-{run_id}"
        final = partition / f"run={run_id}"
        if final.exists() and self._pointer(partition) == run_id:
            raise StoreError(f"Run {run_id} is already committed in {self.path}; use a new run id.")
        # Leftovers of a crashed attempt with this very run id (we hold the as_of lock).
        shutil.rmtree(final, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
        tmp = partition / f"{POINTER_FILE}.tmp"
        try:
            staging.mkdir(parents=True, exist_ok=False)
            write_parquet(staging / SCORES_FILE, scores)
            _stage("scores_written")
            write_parquet(staging / REASONS_FILE, reasons)
            _stage("reasons_written")
            write_bytes(staging / MANIFEST_FILE, manifest.encode("utf-8"))
            fsync_dir(staging)
            _stage("staged")
            os.rename(staging, final)
            fsync_dir(partition)
            _stage("renamed")
            pointer = {"run_id": run_id, "committed_at": datetime.now(UTC).isoformat()}
            write_bytes(tmp, json.dumps(pointer).encode("utf-8"))
            _stage("pointer_written")
            os.replace(tmp, partition / POINTER_FILE)  # the commit point
        except BaseException as exc:
            # Not committed: remove what this attempt wrote; the previous pointer is untouched.
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(final, ignore_errors=True)
            tmp.unlink(missing_ok=True)
            if not isinstance(exc, OSError):
                raise
            if is_disk_full(exc):
                raise StoreError(
                    f"The run store at {self.path} ran out of disk space while writing run {run_id} "
                    f"for as_of {key}; the previous run is intact. Free space and rerun."
                ) from exc
            raise StoreError(
                f"Could not write run {run_id} to the run store at {self.path}: {exc}. "
                "The previous run is intact; fix the cause and rerun."
            ) from exc
        try:
            fsync_dir(partition)
        except OSError as exc:  # committed and visible; only its durability is in doubt
            logger.warning("Run %s is committed, but syncing %s to disk failed: %s", run_id, partition, exc)
        _stage("committed")
        self._collect_garbage(partition, keep=run_id)

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
        manifest = self._read_manifest_at(partition / f"run={run_id}")
        run = manifest.get("run", {})
        return RunInfo(
            run_id=run_id,
            as_of=date.fromisoformat(partition.name.removeprefix("as_of=")),
            created_at=datetime.fromisoformat(run["created_at"]),
            committed_at=datetime.fromisoformat(pointer["committed_at"]),
            path=partition / f"run={run_id}",
            n_scores=int(run["rows"]["scores"]),
            n_reasons=int(run["rows"]["reasons"]),
            model_name=str(run.get("model_name", "")),
            model_version=str(run.get("model_version", "")),
        )

    @staticmethod
    def _read_manifest_at(folder: Path) -> dict[str, Any]:
        try:
            result: dict[str, Any] = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StoreError(f"Cannot read the manifest of {folder}: {exc}.") from exc
        return result

    def _committed(self) -> list[RunInfo]:
        """Every committed run, oldest as_of first; retried when a rerun commits meanwhile."""
        if not self.path.is_dir():
            return []
        infos = []
        for partition in sorted(self.path.glob("as_of=*")):
            for _attempt in range(5):
                pointer = self._read_pointer(partition)
                if pointer is None:
                    break
                try:
                    infos.append(self._run_info(partition, pointer))
                    break
                except StoreError:
                    if self._pointer(partition) == pointer["run_id"]:
                        raise
            else:
                raise StoreError(f"The runs of {partition} keep changing; retry when the scoring job ends.")
        return infos

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
        """The committed run with the latest as_of (strictly before ``before_as_of`` if given)."""
        infos = self._committed()
        if before_as_of is not None:
            limit = date.fromisoformat(as_of_key(before_as_of))
            infos = [i for i in infos if i.as_of < limit]
        return infos[-1] if infos else None

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
        for info in self._committed():
            if info.run_id == run_id:
                return info
        raise StoreError(
            f"No committed run {run_id!r} in the run store at {self.path} "
            "(a rerun of its as_of replaces it). List runs with RunStore.runs() or use 'latest'."
        )

    def _read_file(self, run_id: str, name: str) -> pd.DataFrame:
        for _attempt in range(5):
            info = self.get_run(run_id)
            try:
                return pd.read_parquet(info.path / name)
            except FileNotFoundError:
                continue  # a rerun replaced the run between lookup and read; look it up again
            except (OSError, pa.ArrowInvalid) as exc:
                raise StoreError(f"Cannot read {info.path / name}: {exc}.") from exc
        raise StoreError(f"Run {run_id!r} was replaced while being read; retry.")

    def read_scores(self, run_id: str = "latest") -> pd.DataFrame:
        """The scores of one committed run (``"latest"``: the run with the latest as_of)."""
        return self._read_file(run_id, SCORES_FILE)

    def read_reasons(self, run_id: str = "latest") -> pd.DataFrame:
        """The long SHAP table of one committed run."""
        return self._read_file(run_id, REASONS_FILE)

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
            for name, expected in ((SCORES_FILE, info.n_scores), (REASONS_FILE, info.n_reasons)):
                try:
                    rows = pq.ParquetFile(info.path / name).metadata.num_rows
                except (OSError, pa.ArrowInvalid) as exc:
                    problems.append(f"{info.path / name}: unreadable ({exc})")
                    continue
                if rows != expected:
                    problems.append(f"{info.path / name}: {rows} rows, manifest says {expected}")
        return problems


__all__ = [
    "REASON_REQUIRED",
    "SCORE_REQUIRED",
    "RunInfo",
    "RunStore",
    "as_of_key",
    "new_run_id",
]
