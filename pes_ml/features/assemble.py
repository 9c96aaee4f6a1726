"""Lay the parts of one as_of grid side by side, by position: no join on the engine, no sort after.

Every part the engine computes (:mod:`pes_ml.features.definitions`,
:mod:`pes_ml.features.point_in_time`) is keyed by the integer pair
``(account_number, j)``, each pair at most once. The FeatureFrame's rows are
the pairs *present* at each as_of, laid out in ``(j, account_number)`` order —
which is ``(as_of, account_id)`` order, as account numbers follow ``account_id``
— and every part's values are written into their rows. A pair a part lacks
gets 0 in a window count (nothing happened in the window) and a missing value
(NaN, NaT or NA) elsewhere. The same code runs for DuckDB and Spark.

Numbers and instants are *scattered* with numpy (read in the part's order,
written to their rows): measured several times cheaper here than an Arrow
``take`` with NULL indices, which in turn beat five hash joins of a million
rows on strings and a sort of the collected frame. Text columns are few and go
through Arrow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

from pes_ml.features.definitions import ACCOUNT_NUMBER
from pes_ml.features.inputs import A, AsOfGrid, J

KEY = (ACCOUNT_NUMBER, J)


def _keys(table: pa.Table, n_accounts: int) -> np.ndarray:
    """``j * n_accounts + account_number``: one integer per pair, in ``(j, account_number)`` order."""
    j = np.asarray(table[J].to_numpy(), dtype=np.int64)
    return j * n_accounts + np.asarray(table[ACCOUNT_NUMBER].to_numpy(), dtype=np.int64)


def _values(column: pa.ChunkedArray) -> np.ndarray:
    """A number or instant column as float64 (NaN for NULL) or naive UTC ``datetime64[us]`` (NaT)."""
    if pa.types.is_timestamp(column.type):
        return np.asarray(column.cast(pa.timestamp("us")).to_numpy())
    return np.asarray(column.to_numpy(), dtype=np.float64)


def _is_text(column: pa.ChunkedArray) -> bool:
    return bool(pa.types.is_string(column.type) or pa.types.is_large_string(column.type))


def _gathered(table: pa.Table, key: str, source: np.ndarray) -> dict[str, Any]:
    """The columns of ``table`` (one row per ``key`` value ``0..n-1``) at the key values ``source``
    (-1: missing): a small table read at random.

    Numbers and instants are gathered with numpy; text through Arrow, as ``large_string``
    (the storage of pandas' ``str`` dtype: taken from the small table already cast, the
    million-row result needs no cast of its own).
    """
    number = np.asarray(table[key].to_numpy(), dtype=np.int64)
    row_of_key = np.empty(len(number), dtype=np.int64)
    row_of_key[number] = np.arange(len(number))
    missing = source < 0
    rows = row_of_key[np.where(missing, 0, source)] if len(number) else np.zeros_like(source)
    mask = missing if missing.any() else None
    columns: dict[str, Any] = {}
    for name in table.column_names:
        column = table[name]
        if name == key:
            continue
        if not len(column):  # nothing to take from: every key is missing; take row 0 of one NULL
            column = pa.chunked_array([pa.nulls(1, column.type)])
        if _is_text(column):
            columns[name] = column.cast(pa.large_string()).take(pa.array(rows, mask=mask)).to_pandas()
            continue
        values = _values(column)
        out = values[rows]
        if mask is not None:
            out[mask] = np.datetime64("NaT") if out.dtype.kind == "M" else np.nan
        columns[name] = out
    return columns


def _placed(
    column: pa.ChunkedArray, rows: np.ndarray, kept: np.ndarray | None, n_rows: int, zero: bool
) -> Any:
    """The values of ``column`` at ``rows`` of a column of ``n_rows``; elsewhere 0 (``zero``) or missing.

    ``rows`` holds the row of each element that has one; ``kept`` marks those elements
    (``None``: all of them).
    """
    if _is_text(column):
        source = np.full(n_rows, -1, dtype=np.int64)
        source[rows] = np.arange(len(column)) if kept is None else np.flatnonzero(kept)
        return column.take(pa.array(source, mask=source < 0)).to_pandas()
    if zero:  # integers stay integers (a NULL in the part still makes them float64 with NaN)
        values = np.asarray(column.to_numpy())
        out = np.zeros(n_rows, dtype=values.dtype)
    else:
        values = _values(column)
        missing = np.datetime64("NaT") if values.dtype.kind == "M" else np.nan
        out = np.full(n_rows, missing, dtype=values.dtype)
    out[rows] = values if kept is None else values[kept]
    return out


def assemble(
    present: pa.Table,
    counts: Iterable[pa.Table],
    states: Iterable[pa.Table],
    accounts: pa.Table,
    grid: AsOfGrid,
    lookups: Mapping[str, pa.Table] | None = None,
) -> dict[str, Any]:
    """One row per present ``(account_number, j)``, in ``(j, account_number)`` order, with the parts' columns.

    Parameters
    ----------
    present
        The pairs of the frame (``account_number``, ``j``), each once.
    counts
        Window counts and sums keyed by ``(account_number, j)``, each pair at most
        once: a present pair a part lacks had nothing in the window and gets 0.
        Read one part at a time, each let go once its values are placed: pass
        iterators that collect each part when asked, and only one part is held
        at a time beside the frame.
    states
        Other parts keyed the same way (history, subscription state): a present
        pair a part lacks gets a missing value (NaN, NaT or NA).
    accounts
        One row per ``account_number`` (``0..n-1``, :func:`~pes_ml.features.definitions.account_numbers`)
        with ``account_id`` and the per-account columns.
    grid
        The as_of grid of ``j``.
    lookups
        For a state column that is a row number of a small table (the main
        subscription), that table, keyed by its first column (``0..n-1``): the
        frame gets the table's other columns at that key (missing where the
        number is) in place of the number.

    Returns
    -------
    dict
        The frame's columns by name, each with a value per row: ``j``, ``a`` (as_of's
        day number), the accounts' columns, then each part's columns. Counts are
        int64 arrays, other numbers float64 arrays, instants naive UTC
        ``datetime64[us]`` arrays, text pandas ``str`` Series. Pairs that are not
        present are dropped. A dict rather than a frame, so that
        :func:`~pes_ml.features.finish.finish_features` can let go of each column
        once it has used it.
    """
    lookups = lookups or {}
    n_accounts = accounts.num_rows
    keys = np.sort(_keys(present, n_accounts))
    n_rows = len(keys)
    row_of = np.full(len(grid.days) * n_accounts, -1, dtype=np.int64)
    row_of[keys] = np.arange(n_rows)
    j = keys // n_accounts
    columns: dict[str, Any] = {J: j, A: np.asarray(grid.days, dtype=np.int64)[j]}
    columns.update(_gathered(accounts, ACCOUNT_NUMBER, keys % n_accounts))
    # Columns are placed on two threads: numpy lets go of the GIL while it fills and scatters, and
    # the engine waits meanwhile (with the finish's and the PES ranks' threads, 12 as_of dates at
    # 10M events: ~5.75 -> ~5.4 s).
    with ThreadPoolExecutor(max_workers=2) as pool:
        for zero, parts in ((True, counts), (False, states)):
            for part in parts:
                rows = row_of[_keys(part, n_accounts)]
                present_rows = rows >= 0
                kept = None if present_rows.all() else present_rows
                if kept is not None:
                    rows = rows[kept]
                placed = {
                    name: pool.submit(_placed, part[name], rows, kept, n_rows, zero)
                    for name in part.column_names if name not in KEY and name not in lookups
                }
                for name in part.column_names:
                    if name in lookups:  # a row number of a small table: take that table's columns
                        key = part[name].fill_null(-1).to_numpy().astype(np.int64)
                        source = np.full(n_rows, -1, dtype=np.int64)
                        source[rows] = key if kept is None else key[kept]
                        table = lookups[name]
                        columns.update(_gathered(table, table.column_names[0], source))
                    elif name in placed:
                        columns[name] = placed[name].result()
                del part, rows, present_rows, kept, placed  # before the next part is collected
    return columns
