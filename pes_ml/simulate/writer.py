"""Stream simulated events to Parquet part files, and write the small tables.

Events arrive as integer-coded numpy arrays (account, user, event code,
microseconds, value); ids become strings only in the Parquet file, written as
dictionary arrays over the batch's id lists, so no Python string is made per
event and memory is bounded by ``chunk_events``. The files read back as the
contract's plain ``string`` and ``timestamp[us, tz=UTC]`` columns.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pes_ml.schemas import ACCOUNT_ID, EVENT, TIMESTAMP, USER_ID, VALUE
from pes_ml.simulate.config import EVENT_NAMES

logger = logging.getLogger(__name__)

UTC_US: Final = pa.timestamp("us", tz="UTC")
EVENTS_SCHEMA: Final = pa.schema(
    [
        pa.field(ACCOUNT_ID, pa.string(), nullable=False),
        pa.field(USER_ID, pa.string(), nullable=False),
        pa.field(EVENT, pa.string(), nullable=False),
        pa.field(TIMESTAMP, UTC_US, nullable=False),
        pa.field(VALUE, pa.float64()),
    ]
)


class EventWriter:
    """Buffer event arrays and write ``part-NNNNN.parquet`` files of ``chunk_events`` rows.

    Part files are written by one background thread while the next chunk is
    simulated; the last part of each batch may be shorter. Call :meth:`close` at the end.

    Parameters
    ----------
    events_dir
        Folder of the part files (created; old ``part-*.parquet`` files are removed).
    chunk_events
        Rows per part file at most.
    compression
        Parquet compression codec.
    """

    def __init__(self, events_dir: Path, chunk_events: int, compression: str) -> None:
        self.events_dir = events_dir
        self.chunk_events = chunk_events
        self.compression = compression
        self.files: list[Path] = []
        self.n_events = 0
        self._buffer: list[tuple[np.ndarray, ...]] = []
        self._buffered = 0
        self._account_ids: pa.Array = pa.array([], pa.string())
        self._events_dictionary = pa.array(EVENT_NAMES, pa.string())
        self._user_ids: list[str] = []
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pes-sim-writer")
        self._pending: Future[None] | None = None
        events_dir.mkdir(parents=True, exist_ok=True)
        stale = sorted(events_dir.glob("part-*.parquet"))
        for path in stale:
            path.unlink()
        if stale:
            logger.info("Removed %d part files of a previous simulation in %s", len(stale), events_dir)

    def begin_batch(self, account_ids: list[str], user_ids: list[str]) -> None:
        """Start a batch: events' account and user codes index these lists (``user_ids`` may grow)."""
        self.flush()
        self._account_ids = pa.array(account_ids, pa.string())
        self._user_ids = user_ids

    def add(
        self, account: np.ndarray, user: np.ndarray, code: np.ndarray, micros: np.ndarray, value: np.ndarray
    ) -> None:
        """Buffer events (fresh arrays, not modified afterwards); write full chunks as they fill."""
        if account.size == 0:
            return
        self._buffer.append((account, user, code, micros, value))
        self._buffered += account.size
        if self._buffered >= self.chunk_events:
            columns = [np.concatenate(parts) for parts in zip(*self._buffer, strict=True)]
            self._buffer.clear()
            self._buffered = 0
            for lo in range(0, columns[0].size, self.chunk_events):
                part = tuple(c[lo : lo + self.chunk_events] for c in columns)
                if part[0].size < self.chunk_events:
                    self._buffer.append(tuple(c.copy() for c in part))
                    self._buffered = part[0].size
                else:
                    self._submit(part)

    def flush(self) -> None:
        """Write what is buffered (the end of a batch), and wait until every part file is written."""
        if self._buffered:
            columns = tuple(np.concatenate(parts) for parts in zip(*self._buffer, strict=True))
            self._buffer.clear()
            self._buffered = 0
            self._submit(columns)
        self._wait()

    def close(self) -> None:
        """Flush and stop the writer thread."""
        self.flush()
        self._pool.shutdown()

    def _submit(self, columns: tuple[np.ndarray, ...]) -> None:
        # One part file in flight at most: the next chunk is generated while this one is
        # encoded (pyarrow releases the GIL), and memory stays at about two chunks.
        self._wait()
        path = self.events_dir / f"part-{len(self.files):05d}.parquet"
        self.files.append(path)
        self.n_events += columns[0].size
        users = pa.array(self._user_ids, pa.string())
        self._pending = self._pool.submit(self._write, path, columns, self._account_ids, users)

    def _wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def _write(
        self, path: Path, columns: tuple[np.ndarray, ...], accounts: pa.Array, users: pa.Array
    ) -> None:
        account, user, code, micros, value = columns
        # Dictionary arrays go to Parquet's dictionary encoding without hashing strings;
        # store_schema=False makes readers see plain strings (and UTC timestamps).
        table = pa.Table.from_arrays(
            [
                pa.DictionaryArray.from_arrays(pa.array(account), accounts),
                pa.DictionaryArray.from_arrays(pa.array(user), users),
                pa.DictionaryArray.from_arrays(pa.array(code), self._events_dictionary),
                pa.array(micros, type=UTC_US),
                pa.array(value, type=pa.float64(), from_pandas=True),
            ],
            names=EVENTS_SCHEMA.names,
        )
        pq.write_table(table, path, compression=self.compression, store_schema=False)
        logger.debug("Wrote %s (%d events)", path, table.num_rows)


def write_table(table: pa.Table, path: Path) -> Path:
    """Write a small table to one Parquet file."""
    pq.write_table(table, path, compression="zstd")
    logger.info("Wrote %s (%d rows)", path, table.num_rows)
    return path
