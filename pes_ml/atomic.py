"""Durable, atomic file writes: the primitives behind the run store and the exports.

A file is written in full to a temporary name beside its destination, flushed to
disk (fsync), then renamed over the destination with ``os.replace`` — atomic on
POSIX within one filesystem — and the folder is fsynced so the rename itself
survives a power loss. A reader sees the old file or the new one, never half.
"""

from __future__ import annotations

import errno
import json
import os
import uuid
import warnings
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pes_ml.errors import ConfigError, DataContractError, StoreError


def json_default(value: Any) -> Any:
    """``json.dumps`` fallback for dates, numpy scalars, paths and sets."""
    if isinstance(value, (datetime, date, pd.Timestamp)):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (Path, uuid.UUID)):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: Any) -> str:
    """Pretty, stable JSON text of ``value`` (see :func:`json_default`)."""
    return json.dumps(value, default=json_default, indent=2, sort_keys=True)


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (new names, renames) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Create ``path``, let ``write`` fill it, then fsync it."""
    with open(path, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file ``path`` and fsync it."""

    def _write(fh: BinaryIO) -> None:
        fh.write(data)

    write_durable(path, _write)


def arrow_table(frame: pd.DataFrame, name: str) -> pa.Table:
    """Convert a frame to Arrow, turning a type clash into a DataContractError naming ``name``."""
    try:
        with warnings.catch_warnings():
            # pyarrow 25 reads tz-aware columns through Series.values, which pandas 3.1
            # deprecates; the values it gets are still correct UTC instants.
            warnings.filterwarnings("ignore", message="Series.values returning an ndarray that drops")
            return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataContractError(
            f"Cannot store {name}: a column has mixed or unsupported types ({exc})."
        ) from exc


def write_parquet(path: Path, frame: pd.DataFrame) -> int:
    """Write ``frame`` as zstd Parquet to a new file ``path``, fsynced; return its row count."""
    table = arrow_table(frame, path.name)
    write_durable(path, lambda fh: pq.write_table(table, fh, compression="zstd"))
    return int(table.num_rows)


def replace_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through a temporary file and ``os.replace``: all of it or none of it."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    try:
        write_durable(tmp, write)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def write_file_atomically(path: Path, write: Callable[[BinaryIO], None], what: str) -> None:
    """:func:`replace_atomically`, its folders made as needed, for a file the user asked for.

    Raises
    ------
    StoreError
        If the file cannot be written (``what`` names it: "the export x.csv"); an existing file
        is left as it was.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_atomically(path, write)
    except OSError as exc:
        hint = "the disk is full; free space and rerun" if is_disk_full(exc) else str(exc)
        raise StoreError(f"Could not write {what}: {hint}.") from exc


def check_writable_file(path: Path, what: str, example: str) -> None:
    """Check, before any work, that ``path`` can be written as a regular file (its folders made as needed).

    ``what`` names the path for the message (``--out``), ``example`` is a file name to suggest. An
    existing path must be a regular file: a file is written through a temporary file and a rename,
    which would put a file in the place of a link, a device or a pipe. The write itself can still
    fail (a full disk, a special file system); callers turn that OSError into an error of their own.

    Raises
    ------
    ConfigError
        If ``path`` is a folder, a link or another non-regular file, a file stands where a folder
        of it must be made, or the nearest existing folder is not writable.
    """
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder. Give the path of a file to write, such as "
                          f"{path / example}.")
    if path.is_symlink() or (path.exists() and not path.is_file()):
        kind = "a link" if path.is_symlink() else "not a regular file"
        raise ConfigError(f"{what} {path} is {kind}, which the write would replace. Give the path of a "
                          "regular file (new or to overwrite).")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"{what} {path}: {folder} is a file, so no folder can be made in it. "
                          "Choose another path.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path}: the folder {folder} is not writable. "
                          "Choose a folder you can write to.")


def is_disk_full(exc: BaseException) -> bool:
    """Whether an OSError means the disk (or quota) is full."""
    return getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(exc)


__all__ = [
    "arrow_table",
    "check_writable_file",
    "dumps",
    "fsync_dir",
    "is_disk_full",
    "json_default",
    "replace_atomically",
    "write_bytes",
    "write_durable",
    "write_file_atomically",
    "write_parquet",
]
