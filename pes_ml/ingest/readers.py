"""Readers: expose one configured source as a DuckDB view, without loading it into Python.

Supported: Parquet (file, folder, glob), CSV and CSV.gz (delimiter from config or
sniffed; ``delimiter: whitespace`` for files aligned with runs of spaces, like
cdnow), JSON lines, and a table of a DuckDB database file.

CSV is read with every column as text: DuckDB's type sniffer only samples the
start of a file, so one bad value deep in a large file would otherwise stop the
whole read. Text columns are cast (and bad values quarantined) by
:mod:`pes_ml.ingest.mapping`.

An unusable input (missing path, empty file, wrong format, truncated gzip) raises
:class:`~pes_ml.errors.DataContractError` naming the file, the config key and the fix.
"""

from __future__ import annotations

import glob
import gzip
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path

import duckdb

from pes_ml.config import EventLookup, JoinConfig, SourceConfig
from pes_ml.errors import DataContractError

logger = logging.getLogger(__name__)

WHITESPACE = "whitespace"
_WHITESPACE_ALIASES = {WHITESPACE, r"\s+", " +"}
_PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
_CSV_SUFFIXES = (".csv", ".tsv", ".txt", ".dat", ".psv")
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
_DUCKDB_SUFFIXES = (".duckdb", ".db", ".ddb")
_COMPRESSION_SUFFIXES = (".gz", ".gzip", ".zst")
_FORMATS = ("parquet", "csv", "jsonl", "duckdb")
# Errors that mean "this input cannot be read"; binder or internal errors are bugs and propagate.
_READ_ERRORS = (duckdb.IOException, duckdb.InvalidInputException, duckdb.ConversionException)


@dataclass(frozen=True)
class ReaderSpec:
    """How to read one file, folder or glob; ``config_key`` is used in error messages."""

    path: str
    config_key: str
    format: str = "auto"
    table: str | None = None
    delimiter: str | None = None
    header: bool = True

    @classmethod
    def from_source(cls, source: SourceConfig, config_key: str) -> ReaderSpec:
        return cls(source.path, config_key, source.format, source.table, source.delimiter, source.header)

    @classmethod
    def from_join(cls, join: JoinConfig, config_key: str) -> ReaderSpec:
        return cls(join.path, config_key, join.format, join.table, join.delimiter, True)

    @classmethod
    def from_lookup(cls, lookup: EventLookup, config_key: str) -> ReaderSpec:
        return cls(lookup.path, config_key)


@dataclass(frozen=True)
class SourceView:
    """A DuckDB view over a source, with its columns and their DuckDB types (in order)."""

    view: str
    spec: ReaderSpec
    format: str
    files: tuple[str, ...]
    columns: dict[str, str]
    numbered: str
    """SELECT of every row with its 1-based number in read order (:data:`SOURCE_ROW_NUMBER`), then the
    view's columns (:func:`_numbered_sql`)."""
    duplicate_columns: tuple[str, ...] = ()


SOURCE_ROW_NUMBER = "__pes_source_row"
"""The column of :attr:`SourceView.numbered` that numbers the source rows from 1, in read order."""


def sql_string(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _strip_compression(name: str) -> str:
    lower = name.lower()
    for suffix in _COMPRESSION_SUFFIXES:
        if lower.endswith(suffix):
            return lower[: -len(suffix)]
    return lower


def _format_of(name: str) -> str | None:
    base = _strip_compression(name)
    if base.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    if base.endswith(_CSV_SUFFIXES):
        return "csv"
    if base.endswith(_JSONL_SUFFIXES):
        return "jsonl"
    if base.endswith(_DUCKDB_SUFFIXES):
        return "duckdb"
    return None


def _is_remote(path: str) -> bool:
    return "://" in path


def _list_files(spec: ReaderSpec) -> tuple[list[str], str]:
    """The files a spec points at, and the path expression DuckDB should read."""
    path = spec.path
    if _is_remote(path):
        return [path], path
    if any(ch in path for ch in "*?["):
        files = sorted(f for f in glob.glob(path, recursive=True) if Path(f).is_file())
        if not files:
            raise DataContractError(
                f"No file matches {path!r} ({spec.config_key}.path). "
                f"Check the pattern and the working directory ({Path.cwd()}); relative paths are "
                "resolved against the directory you run pes-ml from."
            )
        return files, path
    p = Path(path)
    if p.is_dir():
        files = sorted(str(f) for f in p.rglob("*") if f.is_file() and not f.name.startswith((".", "_")))
        known = [f for f in files if _format_of(f) in ("parquet", "csv", "jsonl")]
        if not known:
            raise DataContractError(
                f"Folder {path!r} ({spec.config_key}.path) holds no Parquet, CSV or JSON lines files "
                f"(found {len(files)} other files). Point {spec.config_key}.path at the data files."
            )
        fmt = spec.format if spec.format != "auto" else _format_of(known[0])
        same = [f for f in known if _format_of(f) == fmt]
        return same, str(p / "**" / "*")
    if not p.exists():
        raise DataContractError(
            f"Input {path!r} ({spec.config_key}.path) does not exist (working directory: {Path.cwd()}). "
            "Fix the path in the config, or create the file first (e.g. `pes-ml simulate`)."
        )
    return [str(p)], str(p)


def _check_file(spec: ReaderSpec, file: str, fmt: str) -> None:
    """Cheap checks before DuckDB reads a file: not empty, magic bytes match the format."""
    if _is_remote(file):
        return
    size = Path(file).stat().st_size
    if size == 0:
        raise DataContractError(
            f"Input file {file!r} ({spec.config_key}) is empty (0 bytes). "
            "Re-export it, or remove it from the folder/glob."
        )
    with open(file, "rb") as handle:
        head = handle.read(16)
    is_gzip = head[:2] == b"\x1f\x8b"
    if fmt == "parquet" and head[:4] != b"PAR1":
        raise DataContractError(
            f"Input file {file!r} ({spec.config_key}) is not Parquet (it does not start with the Parquet "
            f"magic bytes 'PAR1'; starts with {head[:8]!r}). Set {spec.config_key}.format to its real "
            "format (csv, jsonl) or re-export it as Parquet."
        )
    if fmt in ("csv", "jsonl") and head[:4] == b"PAR1":
        raise DataContractError(
            f"Input file {file!r} ({spec.config_key}) is declared {fmt} but is a Parquet file. "
            f"Set {spec.config_key}.format: parquet."
        )
    if file.lower().endswith((".gz", ".gzip")) and not is_gzip:
        raise DataContractError(
            f"Input file {file!r} ({spec.config_key}) ends in .gz but is not gzip-compressed. "
            "Rename it without .gz, or compress it with gzip."
        )
    if fmt == "duckdb" and head[8:12] != b"DUCK":
        raise DataContractError(
            f"Input file {file!r} ({spec.config_key}) is not a DuckDB database. "
            f"Set {spec.config_key}.format to its real format, or point at a .duckdb file."
        )


def _resolve_format(spec: ReaderSpec, files: list[str]) -> str:
    if spec.format != "auto":
        return spec.format
    fmt = _format_of(files[0])
    if fmt is None:
        raise DataContractError(
            f"Cannot tell the format of {files[0]!r} from its name ({spec.config_key}). "
            f"Set {spec.config_key}.format to one of: {', '.join(_FORMATS)}."
        )
    return fmt


def _path_list(files: list[str]) -> str:
    return "[" + ", ".join(sql_string(f) for f in files) + "]"


def _first_line(file: str) -> str:
    opener = gzip.open if file.lower().endswith((".gz", ".gzip")) else open
    with opener(file, "rt", encoding="utf-8", errors="replace") as handle:
        return str(handle.readline())


def _whitespace_sql(spec: ReaderSpec, files: list[str]) -> str:
    """Split each line on runs of whitespace: files aligned with spaces, such as cdnow."""
    if len(files) != 1:
        raise DataContractError(
            f"{spec.config_key}: whitespace-separated sources must be a single file; {spec.path!r} "
            f"matches {len(files)}. Concatenate them, or convert them to CSV or Parquet."
        )
    first = _first_line(files[0]).strip().split()
    names = first if spec.header else [f"column{i}" for i in range(len(first))]
    fields = ", ".join(f"__f[{i + 1}] AS {ident(n)}" for i, n in enumerate(names))
    # \x1f (unit separator) never occurs in text files: each line is read whole, then split.
    lines = (
        f"SELECT string_split_regex(trim(line, ' \t\r'), '\\s+') AS __f, row_number() OVER () AS __line "
        f"FROM read_csv({sql_string(files[0])}, columns={{'line': 'VARCHAR'}}, delim='\x1f', header=false, "
        "quote='', escape='', auto_detect=false) WHERE line IS NOT NULL AND trim(line, ' \t\r') <> ''"
    )
    skip = "WHERE __line > 1" if spec.header else ""
    return f"SELECT {fields} FROM ({lines}) {skip}"


def _delimiter(configured: str) -> str:
    """The CSV delimiter character of a configured ``delimiter`` (``tab`` and ``\\t`` are a tab)."""
    return "\t" if configured in ("\\t", "tab") else configured


def _parquet_sql(files: list[str]) -> str:
    return f"read_parquet({_path_list(files)}, union_by_name=true)"


def _numbered_sql(con: duckdb.DuckDBPyConnection, fmt: str, files: list[str], view: str) -> str:
    """SELECT of the source's rows numbered from 1 in read order (files in list order), then its columns.

    Parquet rows are numbered from the reader's ``file_index`` and ``file_row_number`` and
    each file's row count in its footer, in parallel. Other formats use ``row_number() OVER ()``,
    which DuckDB runs on one thread: on 10M Parquet events it made the read-and-check step
    9.2 s instead of 5.4 s.
    """
    if fmt != "parquet":
        return f"SELECT row_number() OVER () AS {SOURCE_ROW_NUMBER}, * FROM {ident(view)}"
    before = "0"  # rows in the files read before this one
    if len(files) > 1:  # one file (a local or remote path) needs no footer read
        footers = f"SELECT file_name, num_rows FROM parquet_file_metadata({_path_list(files)})"
        rows = dict(con.execute(footers).fetchall())
        offsets = accumulate((int(rows[file]) for file in files[:-1]), initial=0)
        before = f"CAST([{', '.join(map(str, offsets))}] AS BIGINT[])[CAST(file_index AS BIGINT) + 1]"
    return f"SELECT {before} + file_row_number + 1 AS {SOURCE_ROW_NUMBER}, * FROM {_parquet_sql(files)}"


def _reader_sql(
    con: duckdb.DuckDBPyConnection, spec: ReaderSpec, fmt: str, files: list[str], view: str
) -> str:
    if fmt == "parquet":
        return f"SELECT * FROM {_parquet_sql(files)}"
    if fmt == "csv":
        if spec.delimiter is not None and spec.delimiter in _WHITESPACE_ALIASES:
            return _whitespace_sql(spec, files)
        options = ["all_varchar=true", f"header={'true' if spec.header else 'false'}", "union_by_name=true"]
        if spec.delimiter is not None:
            options.append(f"delim={sql_string(_delimiter(spec.delimiter))}")
        return f"SELECT * FROM read_csv({_path_list(files)}, {', '.join(options)})"
    if fmt == "jsonl":
        return (
            f"SELECT * FROM read_json({_path_list(files)}, format='newline_delimited', "
            "union_by_name=true, sample_size=-1)"
        )
    if fmt == "duckdb":
        if not spec.table:
            raise DataContractError(
                f"{spec.config_key}.format is duckdb but no table is given. "
                f"Set {spec.config_key}.table to the table to read."
            )
        alias = f"{view}_db"
        con.execute(f"ATTACH {sql_string(files[0])} AS {ident(alias)} (READ_ONLY)")
        parts = spec.table.split(".")
        tables = [
            r[0]
            for r in con.execute(
                "SELECT DISTINCT table_name FROM duckdb_tables() WHERE database_name = ? "
                "UNION SELECT DISTINCT view_name FROM duckdb_views() WHERE database_name = ?",
                [alias, alias],
            ).fetchall()
        ]
        if parts[-1] not in tables:
            raise DataContractError(
                f"DuckDB database {files[0]!r} has no table {spec.table!r} ({spec.config_key}.table). "
                f"Tables found: {', '.join(sorted(tables)) or 'none'}."
            )
        return f"SELECT * FROM {ident(alias)}.{'.'.join(ident(p) for p in parts)}"
    raise DataContractError(
        f"Unknown format {fmt!r} for {spec.config_key}. Use one of: {', '.join(_FORMATS)}."
    )


def _read_hint(message: str, spec: ReaderSpec, fmt: str) -> str:
    lower = message.lower()
    if "gzip" in lower or "zlib" in lower:
        return "The gzip stream ends early: the file is truncated. Re-download or re-export it."
    if "unicode" in lower or "utf-8" in lower or "utf8" in lower:
        return (
            "The file is not UTF-8 encoded (invalid bytes on the line named above). Re-export it as UTF-8, "
            "or convert it, e.g. `iconv -f latin1 -t utf-8 in.csv > out.csv`."
        )
    if "malformed json" in lower:
        return "Fix or remove that line (each line must be one complete JSON object), then rerun."
    return (
        f"Check that the file is complete and really is {fmt}, or set {spec.config_key}.format "
        "(and delimiter/header for CSV) to match it."
    )


@contextmanager
def reading(spec: ReaderSpec, fmt: str) -> Iterator[None]:
    """Turn a DuckDB error raised while reading ``spec`` into a DataContractError naming the file."""
    try:
        yield
    except _READ_ERRORS as exc:
        message = str(exc).strip()
        lines = [line.strip() for line in message.splitlines()]
        detail = lines[0] if lines and lines[0] else type(exc).__name__
        # DuckDB names the failing file of a folder or glob in a "file = ..." line of its CSV errors.
        named = next((line[len("file = ") :] for line in lines if line.startswith("file = ")), None)
        where = repr(spec.path) if named is None or named == spec.path else f"{named!r} of {spec.path!r}"
        raise DataContractError(
            f"Could not read {where} ({spec.config_key}, format {fmt}): {detail}. "
            f"{_read_hint(message, spec, fmt)}"
        ) from exc


def open_source(con: duckdb.DuckDBPyConnection, spec: ReaderSpec, view: str) -> SourceView:
    """Create the DuckDB view ``view`` over a source and return its columns.

    Parameters
    ----------
    con
        The DuckDB connection of the load.
    spec
        Path, format and CSV options of the source.
    view
        Name of the view to create (replaced if it exists).

    Returns
    -------
    SourceView
        The view name, resolved format, files and ``{column: duckdb_type}``.

    Raises
    ------
    DataContractError
        If the path does not exist, a file is empty, is not the declared format, or cannot be read.
    """
    files, _ = _list_files(spec)
    fmt = _resolve_format(spec, files)
    for file in files[:20]:
        _check_file(spec, file, fmt)
    ragged = fmt == "csv" and spec.delimiter not in _WHITESPACE_ALIASES
    try:
        with reading(spec, fmt):
            sql = _reader_sql(con, spec, fmt, files, view)
            con.execute(f"CREATE OR REPLACE TEMP VIEW {ident(view)} AS {sql}")
            described = con.execute(f"DESCRIBE SELECT * FROM {ident(view)}").fetchall()
    except DataContractError:
        if ragged:  # a line with a different number of fields defeats DuckDB's dialect sniffer
            _raise_on_ragged_line(con, spec, files)
        raise
    columns = {str(row[0]): str(row[1]) for row in described}
    if ragged and len(columns) == 1 and spec.header:
        _raise_on_ragged_line(con, spec, files)
    duplicates = _duplicate_header_names(con, spec, fmt, files, columns)
    logger.debug(
        "%s: %s read as %s from %d file(s): %s", spec.config_key, spec.path, fmt, len(files), columns
    )
    with reading(spec, fmt):
        numbered = _numbered_sql(con, fmt, files, view)
    return SourceView(
        view=view, spec=spec, format=fmt, files=tuple(files), columns=columns, duplicate_columns=duplicates,
        numbered=numbered,
    )


def _raise_on_ragged_line(con: duckdb.DuckDBPyConnection, spec: ReaderSpec, files: list[str]) -> None:
    """Raise naming the first line whose number of fields differs from the header's, if any.

    Only called when a CSV could not be read as a table: the file is read once
    more with DuckDB's rejects table, which records such lines instead of failing.
    """
    options = ["all_varchar=true", f"header={'true' if spec.header else 'false'}", "ignore_errors=true",
               "store_rejects=true", "rejects_table='pes_ml_rejects'", "rejects_scan='pes_ml_reject_scans'"]
    if spec.delimiter is not None:
        options.append(f"delim={sql_string(_delimiter(spec.delimiter))}")
    for file in files[:20]:
        try:
            con.execute(f"SELECT count(*) FROM read_csv({sql_string(file)}, {', '.join(options)})").fetchall()
            first = con.execute(
                "SELECT line, error_message FROM pes_ml_rejects "
                "WHERE error_type IN ('TOO MANY COLUMNS', 'TOO FEW COLUMNS') ORDER BY line LIMIT 1"
            ).fetchone()
        except duckdb.Error:
            return  # not readable this way either: the original error stands
        finally:
            con.execute("DROP TABLE IF EXISTS pes_ml_rejects; DROP TABLE IF EXISTS pes_ml_reject_scans")
        if first is not None:
            line, detail = first
            raise DataContractError(
                f"Line {line} of {file!r} ({spec.config_key}) has a different number of fields than the "
                f"header ({detail}): a value that contains the delimiter is probably not quoted. Quote that "
                "value or remove the extra delimiter, then rerun. Nothing was loaded."
            )


def _duplicate_header_names(
    con: duckdb.DuckDBPyConnection, spec: ReaderSpec, fmt: str, files: list[str], columns: dict[str, str]
) -> tuple[str, ...]:
    """Names that a CSV header repeats (DuckDB renames the second ``x`` to ``x_1``)."""
    renamed = [c for c in columns if c.rpartition("_")[2].isdigit() and c.rpartition("_")[0] in columns]
    if fmt != "csv" or not spec.header or not renamed or spec.delimiter in _WHITESPACE_ALIASES:
        return ()
    options = ["all_varchar=true", "header=false"]
    if spec.delimiter is not None:
        options.append(f"delim={sql_string(_delimiter(spec.delimiter))}")
    duplicates: set[str] = set()
    for file in files[:20]:
        query = f"SELECT * FROM read_csv({sql_string(file)}, {', '.join(options)}) LIMIT 1"
        with reading(spec, fmt):
            row = con.execute(query).fetchone()
        names = [str(v).strip() for v in (row or ()) if v is not None]
        duplicates.update(n for n in names if names.count(n) > 1)
    return tuple(sorted(duplicates))
