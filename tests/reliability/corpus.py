"""The bad-input corpus: every kind of broken or dirty input a user's export can hold.

Each :class:`Case` writes its input files with code (no binary fixtures in git) and
returns the ``sources`` (and other keys) of a config. :func:`run_case` runs it the
way a user does, ``pes-ml validate --config <file>``, and returns an
:class:`Outcome`. Expectations:

- *unusable* input (``exit_code != 0``): a non-zero exit, exactly one ``error:``
  line naming the file/column/key and the fix (``message`` fragments), and no
  partial output: the previous clean tables, quarantine and reconciliation are
  byte-for-byte untouched and no staging folder is left behind;
- *usable but dirty* input (``exit_code == 0``): rows loaded, quarantined,
  deduplicated or flagged with the expected reason, and per table
  ``read = loaded + quarantined + deduplicated``.

Run ``python tests/reliability/corpus.py`` to print the results table (each case
through the real ``pes-ml`` executable) that goes into ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import yaml

Build = Callable[[Path], dict[str, Any]]
Check = Callable[[dict[str, pd.DataFrame]], None]

HEADER = "account_id,event,timestamp,value\n"
GOOD_ROWS = (
    "a1,login,2024-03-01T10:00:00Z,1\na1,export,2024-03-02T10:00:00Z,\na2,login,2024-03-03T10:00:00Z,2.5\n"
)
GOOD = HEADER + GOOD_ROWS
# A previous load's outputs: an error case must leave these exact bytes in place.
SENTINELS = {
    "clean/events.parquet": b"PAR1 previous clean events",
    "quarantine/events.parquet": b"PAR1 previous quarantine",
    "clean/reconciliation.json": b'{"previous": true}\n',
}


@dataclass(frozen=True)
class Case:
    """One input the corpus feeds to ``pes-ml validate``.

    ``counts`` maps a table to ``(read, loaded, quarantined, deduplicated)``;
    ``reasons`` maps ``(table, reason)`` to rows (quarantined, deduplicated or flagged),
    and must list every reason the load reports.
    """

    name: str
    expected: str
    build: Build
    exit_code: int = 0
    message: tuple[str, ...] = ()
    counts: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    reasons: dict[tuple[str, str], int] = field(default_factory=dict)
    check: Check | None = None
    raw_config: str | None = None


@dataclass
class Outcome:
    """What one run of ``pes-ml validate`` did."""

    exit_code: int
    stdout: str
    stderr: str
    counts: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    reasons: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]


# --- writers -----------------------------------------------------------------------------------


def _bytes(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def _text(path: Path, text: str) -> str:
    return _bytes(path, text.encode("utf-8"))


def _parquet(path: Path, frame: pd.DataFrame) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return str(path)


def _events(path: str, **options: Any) -> dict[str, Any]:
    return {"sources": {"events": {"path": path, **options}}}


def _csv(text: str, **options: Any) -> Build:
    return lambda d: _events(_text(d / "events.csv", text), **options)


# --- checks on the clean tables ------------------------------------------------------------------


def _instants(*expected: str) -> Check:
    """The clean events' timestamps are UTC and are exactly these instants (sorted)."""

    def check(clean: dict[str, pd.DataFrame]) -> None:
        ts = clean["events"]["timestamp"]
        assert str(ts.dt.tz) == "UTC", ts.dtype
        got = sorted(ts)
        want = sorted(pd.Timestamp(e) for e in expected)
        assert got == want, (got, want)

    return check


def _ids(table: str, *expected: str) -> Check:
    def check(clean: dict[str, pd.DataFrame]) -> None:
        ids = clean[table]["account_id"]
        assert all(isinstance(v, str) for v in ids), list(ids)
        assert sorted(set(ids)) == sorted(expected), sorted(set(ids))

    return check


def _events_named(*expected: str) -> Check:
    def check(clean: dict[str, pd.DataFrame]) -> None:
        assert sorted(clean["events"]["event"]) == sorted(expected), list(clean["events"]["event"])

    return check


# --- builders that need more than one CSV ----------------------------------------------------------


def _truncated_gzip(d: Path) -> dict[str, Any]:
    rows = "".join(f"a{i % 50},login,2024-03-01T{i % 24:02d}:00:00Z,{i}\n" for i in range(20_000))
    data = gzip.compress((HEADER + rows).encode())
    return _events(_bytes(d / "events.csv.gz", data[: len(data) // 2]))


def _truncated_parquet(d: Path) -> dict[str, Any]:
    path = d / "events.parquet"
    _parquet(path, pd.DataFrame({"account_id": ["a1"] * 100, "event": "login", "timestamp": "2024-03-01"}))
    data = path.read_bytes()
    return _events(_bytes(path, data[: len(data) - 40]))


def _ids_int_and_string(d: Path) -> dict[str, Any]:
    events = pd.DataFrame(
        {
            "account_id": [1, 2, 2],
            "event": ["login"] * 3,
            "timestamp": ["2024-03-01", "2024-03-02", "2024-03-03"],
        }
    )
    subs = "account_id,start,end\n1,2024-01-01,\n2,2024-01-01,2024-12-31\n"
    return {
        "sources": {
            "events": {"path": _parquet(d / "events.parquet", events)},
            "subscriptions": {"path": _text(d / "subscriptions.csv", subs)},
            "accounts": {"path": _text(d / "accounts.csv", "account_id,plan\n1,pro\n2,basic\n")},
        }
    }


def _ids_float_with_nulls(d: Path) -> dict[str, Any]:
    # pandas stores an integer column with a missing value as float64: 1.0, 2.0, NaN.
    events = pd.DataFrame(
        {
            "account_id": [1.0, 2.0, float("nan")],
            "event": ["login"] * 3,
            "timestamp": pd.to_datetime(["2024-03-01", "2024-03-02", "2024-03-03"], utc=True),
        }
    )
    subs = "account_id,start,end\n1,2024-01-01,\n2,2024-01-01,\n"
    return {
        "sources": {
            "events": {"path": _parquet(d / "events.parquet", events)},
            "subscriptions": {"path": _text(d / "subscriptions.csv", subs)},
        }
    }


def _epoch_ms_parquet(d: Path) -> dict[str, Any]:
    events = pd.DataFrame(
        {"account_id": ["a1", "a2"], "event": ["login", "login"], "ts": [1709287200000, 1709287200123]}
    )
    return _events(
        _parquet(d / "events.parquet", events), columns={"timestamp": "ts"}, timestamp_format="epoch_ms"
    )


def _with_subscriptions(events: str, subs: str) -> Build:
    return lambda d: {
        "sources": {
            "events": {"path": _text(d / "events.csv", events)},
            "subscriptions": {"path": _text(d / "subscriptions.csv", subs)},
        }
    }


def _parquet_folder(second: pd.DataFrame) -> Build:
    def build(d: Path) -> dict[str, Any]:
        first = pd.DataFrame(
            {"account_id": ["a1"], "event": ["login"], "timestamp": ["2024-03-01T10:00:00Z"]}
        )
        _parquet(d / "events" / "part-0.parquet", first)
        _parquet(d / "events" / "part-1.parquet", second)
        return _events(str(d / "events"))

    return build


def _directory_without_data(d: Path) -> dict[str, Any]:
    _text(d / "events" / "README.md", "exports land here\n")
    return _events(str(d / "events"))


def _missing_accounts_file(d: Path) -> dict[str, Any]:
    config = _events(_text(d / "events.csv", GOOD))
    config["sources"]["accounts"] = {"path": str(d / "accounts.parquet")}
    return config


def _jsonl_malformed(d: Path) -> dict[str, Any]:
    good = json.dumps({"account_id": "a1", "event": "login", "timestamp": "2024-03-01T10:00:00Z"})
    return _events(_text(d / "events.jsonl", f"{good}\n{good[:30]}\n{good}\n"))


def _duckdb_table_missing(d: Path) -> dict[str, Any]:
    path = d / "warehouse.duckdb"
    d.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(path)) as con:
        con.execute(
            "CREATE TABLE product_events AS SELECT 'a1' AS account_id, 'login' AS event, now() AS timestamp"
        )
    return _events(str(path), format="duckdb", table="events")


def _typo_config(d: Path) -> dict[str, Any]:
    return _events(_text(d / "events.csv", GOOD))


# --- the corpus ------------------------------------------------------------------------------------

T0 = "2024-03-01T10:00:00Z"
DIRTY = (
    "account_id,event,timestamp,value\n"
    ",login,2024-03-01T10:00:00Z,1\n"  # empty id
    "NULL,login,2024-03-01T10:00:00Z,1\n"  # the text NULL is no id
    "a1,null,2024-03-01T10:00:00Z,1\n"  # nor an event name
    "a1,login,,1\n"  # empty timestamp
    "a1,login,NaN,1\n"  # NaN timestamp
    "a1,login,2024-03-01T11:00:00Z,NaN\n"  # NaN in a number column: non-numeric
    "a1,login,2024-03-01T12:00:00Z,\n"  # empty optional value: loaded, value null
    "a2,login,2024-03-01T13:00:00Z,None\n"  # None: loaded, value null
)

CASES: list[Case] = [
    Case("empty_file", "error: file is empty", _csv(""), 3, ("events.csv", "empty", "Re-export")),
    Case("header_only", "error: no rows", _csv(HEADER), 3, ("events.csv", "holds no rows", "Re-export")),
    Case("truncated_gzip", "error: truncated", _truncated_gzip, 3, ("events.csv.gz", "truncated")),
    Case(
        "truncated_parquet", "error: unreadable", _truncated_parquet, 3, ("events.parquet", "sources.events")
    ),
    Case(
        "wrong_delimiter",
        "error: suggests delimiter ';'",
        _csv(GOOD.replace(",", ";"), delimiter=","),
        3,
        ("events.csv", "delimiter: ';'"),
    ),
    Case(
        "semicolons_sniffed",
        "loaded (delimiter detected)",
        _csv(GOOD.replace(",", ";")),
        counts={"events": (3, 3, 0, 0)},
    ),
    Case(
        "missing_required_column",
        "error: names column, file and key",
        _csv("account_id,event,value\na1,login,1\n"),
        3,
        ("'timestamp'", "events.csv", "sources.events.columns.timestamp"),
    ),
    Case(
        "renamed_column",
        "error: suggests the mapping",
        _csv(GOOD.replace("timestamp", "event_time")),
        3,
        ("'timestamp'", "`timestamp: event_time`"),
    ),
    Case(
        "renamed_column_mapped",
        "loaded (the suggested mapping works)",
        _csv(GOOD.replace("timestamp", "event_time"), columns={"timestamp": "event_time"}),
        counts={"events": (3, 3, 0, 0)},
    ),
    Case(
        "extra_unknown_columns",
        "loaded (extra columns ignored)",
        _csv(
            "country,account_id,event,timestamp,browser\nfr,a1,login,2024-03-01,ff\nde,a2,login,2024-03-02,\n"
        ),
        counts={"events": (2, 2, 0, 0)},
    ),
    Case(
        "ids_int_vs_string",
        "loaded; ids are text and join across files",
        _ids_int_and_string,
        counts={"events": (3, 3, 0, 0), "subscriptions": (2, 2, 0, 0), "accounts": (2, 2, 0, 0)},
        check=_ids("events", "1", "2"),
    ),
    Case(
        "ids_float_with_nulls",
        "1.0 read as '1'; NaN id quarantined",
        _ids_float_with_nulls,
        counts={"events": (3, 2, 1, 0), "subscriptions": (2, 2, 0, 0)},
        reasons={("events", "missing account_id"): 1},
        check=_ids("events", "1", "2"),
    ),
    Case(
        "mixed_timezone_offsets",
        "loaded; UTC, instant preserved",
        _csv(
            "account_id,event,timestamp\n"
            "a1,e1,2024-03-01T15:00:00+05:00\n"
            "a1,e2,2024-03-01T10:00:00Z\n"
            "a1,e3,2024-03-01T07:00:00-03:00\n"
            "a1,e4,2024-03-01T11:00:00+0100\n"
        ),
        counts={"events": (4, 4, 0, 0)},
        check=_instants(*[T0] * 4),
    ),
    Case(
        "naive_vs_aware",
        "loaded; naive read as UTC",
        _csv(
            "account_id,event,timestamp\n"
            "a1,e1,2024-03-01 10:00:00\n"
            "a1,e2,2024-03-01T10:00:00+00:00\n"
            "a1,e3,2024-03-01T12:00:00+02:00\n"
        ),
        counts={"events": (3, 3, 0, 0)},
        check=_instants(*[T0] * 3),
    ),
    Case(
        "epoch_seconds_configured",
        "loaded with timestamp_format: epoch_s",
        _csv(
            "account_id,event,timestamp\na1,login,1709287200\na2,login,1709287200.5\n",
            timestamp_format="epoch_s",
        ),
        counts={"events": (2, 2, 0, 0)},
        check=_instants(T0, "2024-03-01T10:00:00.5Z"),
    ),
    Case(
        "epoch_milliseconds_configured",
        "loaded with timestamp_format: epoch_ms (Parquet int64)",
        _epoch_ms_parquet,
        counts={"events": (2, 2, 0, 0)},
        check=_instants(T0, "2024-03-01T10:00:00.123Z"),
    ),
    Case(
        "epoch_seconds_unconfigured",
        "error: suggests timestamp_format: epoch_s",
        _csv("account_id,event,timestamp\na1,login,1709287200\na2,login,1709287260\n"),
        3,
        ("None of the 2 rows", "unparseable timestamp", "timestamp_format: epoch_s"),
    ),
    Case(
        "epoch_milliseconds_unconfigured",
        "error: suggests timestamp_format: epoch_ms",
        _csv("account_id,event,timestamp\na1,login,1709287200000\n"),
        3,
        ("timestamp_format: epoch_ms",),
    ),
    Case(
        "dd_mm_yyyy_configured",
        "loaded with timestamp_format: '%d-%m-%Y'",
        _csv(
            "account_id,event,timestamp\na1,login,01-03-2024\na1,login,31-12-2023\n",
            timestamp_format="%d-%m-%Y",
        ),
        counts={"events": (2, 2, 0, 0)},
        check=_instants("2024-03-01T00:00:00Z", "2023-12-31T00:00:00Z"),
    ),
    Case(
        "dd_mm_yyyy_unconfigured",
        "error: suggests a strptime timestamp_format",
        _csv("account_id,event,timestamp\na1,login,01-03-2024\na1,login,31-12-2023\n"),
        3,
        ("'31-12-2023'", "timestamp_format", "%d-%m-%Y"),
    ),
    Case(
        "null_nan_empty_strings",
        "quarantined by reason; empty/None optional value loaded as null",
        _csv(DIRTY),
        counts={"events": (8, 2, 6, 0)},
        reasons={
            ("events", "missing account_id"): 2,
            ("events", "missing event"): 1,
            ("events", "missing timestamp"): 2,
            ("events", "non-numeric value"): 1,
        },
    ),
    Case(
        "negative_values",
        "quarantined: negative value",
        _csv(GOOD + "a3,refund,2024-03-04T10:00:00Z,-20\n"),
        counts={"events": (4, 3, 1, 0)},
        reasons={("events", "negative value"): 1},
    ),
    Case(
        "duplicated_rows",
        "deduplicated and counted",
        _csv(GOOD + GOOD_ROWS.splitlines(keepends=True)[0] * 2),
        counts={"events": (5, 3, 0, 2)},
        reasons={("events", "exact duplicate"): 2},
    ),
    Case(
        "events_without_subscription",
        "loaded and flagged",
        _with_subscriptions(
            GOOD + "a3,login,2024-03-04T10:00:00Z,\n",
            "account_id,start,end\na1,2024-01-01,\na2,2024-01-01,\n",
        ),
        counts={"events": (4, 4, 0, 0), "subscriptions": (2, 2, 0, 0)},
        reasons={("events", "account_id has no subscription"): 1},
    ),
    Case(
        "subscription_ends_before_start",
        "quarantined: end before start",
        _with_subscriptions(GOOD, "account_id,start,end\na1,2024-01-01,\na2,2024-05-01,2024-02-01\n"),
        counts={"events": (3, 3, 0, 0), "subscriptions": (2, 1, 1, 0)},
        reasons={("subscriptions", "end before start"): 1, ("events", "account_id has no subscription"): 1},
    ),
    Case(
        "subscriptions_overlapping",
        "loaded and flagged: overlapping",
        _with_subscriptions(
            GOOD, "account_id,start,end\na1,2024-01-01,2024-06-01\na1,2024-03-01,2024-09-01\na2,2024-01-01,\n"
        ),
        counts={"events": (3, 3, 0, 0), "subscriptions": (3, 3, 0, 0)},
        reasons={("subscriptions", "overlapping subscription"): 1},
    ),
    Case(
        "parquet_folder_odd_schema",
        "error: names the odd file",
        _parquet_folder(pd.DataFrame({"acct": ["a2"], "event": ["login"], "timestamp": ["2024-03-02"]})),
        3,
        ("part-1.parquet", "no column 'account_id'", "move that file"),
    ),
    Case(
        "parquet_folder_extra_column",
        "loaded: files unioned by column name",
        _parquet_folder(
            pd.DataFrame({"account_id": ["a2"], "event": ["x"], "timestamp": ["2024-03-02"], "value": [3.0]})
        ),
        counts={"events": (2, 2, 0, 0)},
    ),
    Case(
        "non_utf8_event_name",
        "error: names file and line, suggests UTF-8",
        lambda d: _events(
            _bytes(d / "events.csv", (HEADER + "a1,log\xe9in,2024-03-01,1\n").encode("latin-1"))
        ),
        3,
        ("events.csv", "Line: 2", "UTF-8"),
    ),
    Case(
        "event_name_10k_characters",
        "quarantined: event longer than 1024 characters",
        _csv(GOOD + f"a1,{'x' * 10_000},2024-03-04T10:00:00Z,\n"),
        counts={"events": (4, 3, 1, 0)},
        reasons={("events", "event longer than 1024 characters"): 1},
    ),
    Case(
        "config_typo_key",
        "error: unknown key, nearest suggested",
        _typo_config,
        2,
        ("timestmp_format", "Did you mean 'timestamp_format'?"),
        raw_config="sources:\n  events:\n    path: {events}\n    timestmp_format: '%d-%m-%Y'\n",
    ),
    Case(
        "config_timestamp_format_without_directive",
        "error: timestamp_format needs % directives or epoch_s/epoch_ms",
        _csv(GOOD, timestamp_format="DD-MM-YYYY"),
        2,
        ("timestamp_format", "strptime", "epoch_s"),
    ),
    Case(
        "bom_at_start",
        "loaded (BOM ignored)",
        lambda d: _events(_bytes(d / "events.csv", b"\xef\xbb\xbf" + GOOD.encode())),
        counts={"events": (3, 3, 0, 0)},
    ),
    Case(
        "crlf_line_endings",
        "loaded; no stray \\r",
        _csv(GOOD.replace("\n", "\r\n")),
        counts={"events": (3, 3, 0, 0)},
        check=_events_named("login", "export", "login"),
    ),
    Case(
        "quoted_delimiters_and_newlines",
        "loaded; field kept whole",
        _csv(
            HEADER
            + 'a1,"report, weekly\nsent",2024-03-01T10:00:00Z,1\na2,"say ""hi""",2024-03-01T10:00:00Z,\n'
        ),
        counts={"events": (2, 2, 0, 0)},
        check=_events_named("report, weekly\nsent", 'say "hi"'),
    ),
    Case(
        "all_rows_bad",
        "error: no valid row, reasons and first row shown",
        _csv(HEADER + ",login,2024-03-01,1\n,login,2024-03-02,1\n"),
        3,
        (
            "None of the 2 rows",
            "missing account_id (2)",
            "First rejected row",
            "source row 1",
            "account_id=empty",
        ),
    ),
    Case(
        "directory_without_data_files",
        "error: folder holds no data files",
        _directory_without_data,
        3,
        ("events", "holds no Parquet, CSV or JSON lines files", "sources.events.path"),
    ),
    Case(
        "glob_matching_nothing",
        "error: no file matches",
        lambda d: _events(str(d / "exports" / "events-*.csv")),
        3,
        ("No file matches", "events-*.csv", "sources.events.path"),
    ),
    Case(
        "unknown_format_extension",
        "error: asks for the format",
        lambda d: _events(_text(d / "events.xlsx", GOOD)),
        3,
        ("events.xlsx", "sources.events.format"),
    ),
    Case(
        "far_future_and_pre_1990",
        "quarantined: before min_timestamp / far future; 1990-01-01 kept",
        _csv(
            "account_id,event,timestamp\n"
            "a1,login,1989-12-31T23:59:59Z\n"  # one second too early
            "a1,login,1990-01-01T00:00:00Z\n"  # the first valid instant
            "a1,login,2999-01-01T00:00:00Z\n"  # far future
            "a1,login,2024-03-01T10:00:00Z\n"
        ),
        counts={"events": (4, 2, 2, 0)},
        reasons={
            ("events", "timestamp before min_timestamp"): 1,
            ("events", "timestamp in the far future"): 1,
        },
        check=_instants("1990-01-01T00:00:00Z", T0),
    ),
    Case(
        "value_as_text",
        "quarantined: non-numeric value",
        _csv(GOOD + "a3,upload,2024-03-04T10:00:00Z,12abc\n"),
        counts={"events": (4, 3, 1, 0)},
        reasons={("events", "non-numeric value"): 1},
    ),
    Case(
        "duplicate_header_names",
        "error: column named twice",
        _csv("account_id,event,timestamp,timestamp\na1,login,2024-03-01,2024-03-02\n"),
        3,
        ("events.csv", "'timestamp' more than once", "Rename"),
    ),
    Case(
        "missing_accounts_file",
        "error: configured table's file missing",
        _missing_accounts_file,
        3,
        ("accounts.parquet", "sources.accounts.path", "does not exist"),
    ),
    Case(
        "jsonl_malformed_line",
        "error: names file and line",
        _jsonl_malformed,
        3,
        ("events.jsonl", "line", "Malformed JSON"),
    ),
    Case(
        "duckdb_table_missing",
        "error: lists the tables found",
        _duckdb_table_missing,
        3,
        ("warehouse.duckdb", "no table 'events'", "product_events"),
    ),
]


# --- running a case ----------------------------------------------------------------------------------


def write_config(case: Case, root: Path) -> Path:
    """Build the case's inputs under ``root/input`` and its config at ``root/pes.yaml``."""
    config = case.build(root / "input")
    path = root / "pes.yaml"
    if case.raw_config is not None:
        events = config["sources"]["events"]["path"]
        text = case.raw_config.format(events=json.dumps(events))
        path.write_text(f"work_dir: {json.dumps(str(root / 'work'))}\n{text}", encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump({"work_dir": str(root / "work"), **config}), encoding="utf-8")
    return path


def seed_previous_outputs(root: Path) -> None:
    """Stand-ins for a previous load's outputs, which a failed load must not touch."""
    for rel, data in SENTINELS.items():
        _bytes(root / "work" / rel, data)


def read_outcome(root: Path, exit_code: int, stdout: str, stderr: str) -> Outcome:
    """Counts and reasons from the reconciliation the load wrote (none when it failed)."""
    outcome = Outcome(exit_code, stdout, stderr)
    recon_path = root / "work" / "clean" / "reconciliation.json"
    if exit_code == 0 and recon_path.is_file():
        recon = json.loads(recon_path.read_text(encoding="utf-8"))
        outcome.counts = {
            t["table"]: (t["read"], t["loaded"], t["quarantined"], t["deduplicated"]) for t in recon["tables"]
        }
        outcome.reasons = {(r["table"], r["reason"]): r["rows"] for r in recon["reasons"]}
    return outcome


def run_subprocess(case: Case, root: Path, executable: str) -> Outcome:
    """Run the case through the ``pes-ml`` executable, exactly as a user would."""
    config = write_config(case, root)
    if case.exit_code != 0:
        seed_previous_outputs(root)
    proc = subprocess.run(
        [executable, "validate", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return read_outcome(root, proc.returncode, proc.stdout, proc.stderr)


def results_table(rows: list[tuple[Case, Outcome]]) -> str:
    """The markdown table of the corpus run (for benchmarks/RESULTS.md)."""
    lines = [
        "| case | expected outcome | exit | read | loaded | quarantined | deduplicated | flagged |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for case, outcome in rows:
        totals = [sum(c[i] for c in outcome.counts.values()) for i in range(4)] if outcome.counts else None
        flagged = sum(
            n
            for (t, r), n in outcome.reasons.items()
            if r in ("overlapping subscription",) or "has no" in r or "not in" in r
        )
        cells = [str(v) for v in totals] if totals else ["–"] * 4
        lines.append(
            f"| {case.name} | {case.expected} | {outcome.exit_code} | {' | '.join(cells)} | "
            f"{flagged if totals else '–'} |"
        )
    return "\n".join(lines)


def main() -> int:
    """Run every case through ``.venv/bin/pes-ml`` and print the results table."""
    import tempfile

    executable = str(Path(sys.executable).with_name("pes-ml"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            root = Path(tmp) / case.name
            root.mkdir()
            rows.append((case, run_subprocess(case, root, executable)))
    print(results_table(rows))  # noqa: T201
    read = sum(sum(c[0] for c in o.counts.values()) for _, o in rows)
    accounted = sum(sum(c[1] + c[2] + c[3] for c in o.counts.values()) for _, o in rows)
    mismatched = [c.name for c, o in rows if o.exit_code != c.exit_code]
    summary = f"{len(rows)} cases; rows read {read}, accounted for {accounted}; exit mismatches: {mismatched}"
    print(f"\n{summary}")  # noqa: T201
    return 1 if mismatched or read != accounted else 0


if __name__ == "__main__":
    sys.exit(main())
