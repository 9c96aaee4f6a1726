"""Ingest fuzzing: arbitrary event frames, as CSV text and as typed Parquet, through ``ingest``.

Whatever the rows hold (edge timestamps, RTL text, emoji, control characters,
empty strings, huge / negative / NaN / infinite values, duplicates), ingest either
raises a :class:`~pes_ml.errors.PesError` and writes nothing, or:

- every table reconciles: ``read = loaded + quarantined + deduplicated``, per table and per reason;
- every quarantined row carries exactly one reason and appears once;
- every clean row satisfies the contract: UTC timestamps in
  ``[min_timestamp, now + max_future_days]``, non-null ids and events, values finite and >= 0 or null.
"""

from __future__ import annotations

import csv
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from pes_ml.config import PesConfig, parse_config
from pes_ml.errors import PesError
from pes_ml.ingest import clean_paths, ingest, quarantine_paths

MAX_EXAMPLES_CSV = 60
MAX_EXAMPLES_PARQUET = 40

# Any unicode except NUL (C strings) and lone surrogates (not encodable): RTL, emoji, control chars.
text = st.text(alphabet=st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=16)
ids = st.one_of(
    st.sampled_from(
        ["a1", "a2", " a3 ", "42", "042", "NULL", "", "   ", "مرحبا", "🚀acct", "a\u200fb", "\t\x0b"]
    ),
    text,
)
events = st.one_of(
    st.sampled_from(["login", "export", "", "null", "שלום", "🎉", "line\nbreak", 'q"uote', "x" * 1500]),
    text,
)
EDGE_TIMESTAMPS = [
    "1970-01-01T00:00:00Z",  # epoch 0: before min_timestamp
    "1989-12-31T23:59:59Z",  # one second before 1990
    "1990-01-01T00:00:00Z",  # the first valid instant
    "1990-01-01T00:59:59+01:00",  # before 1990 in UTC
    "2016-12-31T23:59:60Z",  # a leap second
    "2015-06-30 23:59:60",
    "2024-03-10 02:30:00",  # naive, does not exist in US/Eastern: read as UTC
    "2024-11-03 01:30:00",  # naive, ambiguous in US/Eastern
    "2024-03-31T02:30:00+01:00",
    "2999-12-31T23:59:59Z",  # far future
    "9999-12-31T23:59:59",
    "0001-01-01",
    "2024-02-30",
    "",
    "NaN",
    "1709287200",
]
timestamps = st.one_of(
    st.sampled_from(EDGE_TIMESTAMPS),
    st.tuples(
        st.datetimes(
            min_value=datetime(1, 1, 1),
            max_value=datetime(9999, 12, 31),
            timezones=st.none() | st.timezones(),
        ),
        st.sampled_from(["T", " "]),
    ).map(lambda pair: pair[0].isoformat(sep=pair[1])),
    text,
)
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, -1.0, 1e308, -1e308, 5e-324]),
    st.integers(min_value=-(2**70), max_value=2**70),
)
values = st.one_of(
    numbers.map(repr), st.sampled_from(["", "12abc", "1,5", "NaN", "-inf", "None", " 7 "]), text
)


@st.composite
def with_duplicates(draw: st.DrawFn, rows: st.SearchStrategy[list[Any]]) -> list[Any]:
    """Rows, some repeated exactly (the repeats land anywhere in the file)."""
    base = draw(rows)
    if not base:
        return base
    repeats = draw(st.lists(st.sampled_from(base), max_size=5))
    out = base + repeats
    return draw(st.permutations(out))


csv_rows = with_duplicates(st.lists(st.tuples(ids, events, timestamps, values), max_size=25))


def _config(folder: Path, path: Path, **options: Any) -> PesConfig:
    return parse_config(
        {"work_dir": str(folder / "work"), "sources": {"events": {"path": str(path), **options}}}
    )


def check_load(config: PesConfig, n_rows: int) -> None:
    """Run ingest and check the invariants of the module docstring."""
    clean_path, quarantine_path = clean_paths(config)["events"], quarantine_paths(config)["events"]
    try:
        recon = ingest(config)
    except PesError:
        # An unusable input stops the load and writes nothing.
        assert not clean_path.exists()
        assert not quarantine_path.exists()
        assert not (Path(config.work_dir) / ".staging").exists()
        return
    counts = recon.table("events")
    assert counts.read == n_rows
    assert counts.read == counts.loaded + counts.quarantined + counts.deduplicated
    assert recon.balanced
    clean = pd.read_parquet(clean_path)
    quarantine = pd.read_parquet(quarantine_path)
    assert len(clean) == counts.loaded
    assert len(quarantine) == counts.quarantined
    # Exactly one reason per quarantined row, each source row at most once.
    assert quarantine["reason"].notna().all()
    assert quarantine["source_row"].is_unique
    assert quarantine["source_row"].between(1, n_rows).all()
    by_reason = {r.reason: r.rows for r in recon.reasons if r.table == "events" and r.action == "quarantined"}
    assert quarantine["reason"].value_counts().to_dict() == by_reason
    assert recon.rows("events", "exact duplicate") == counts.deduplicated
    # Clean rows satisfy the contract.
    assert not clean.duplicated().any()
    for column in ("account_id", "event", "timestamp"):
        assert clean[column].notna().all(), column
    assert (clean["account_id"].str.strip() != "").all()
    assert str(clean["timestamp"].dt.tz) == "UTC"
    horizon = pd.Timestamp(datetime.now(UTC) + timedelta(days=config.validation.max_future_days, minutes=5))
    assert (clean["timestamp"] >= pd.Timestamp(config.validation.min_timestamp, tz="UTC")).all()
    assert (clean["timestamp"] <= horizon).all()
    present = clean["value"].dropna().to_numpy(dtype=float)
    assert np.isfinite(present).all()
    assert (present >= 0).all()


@settings(max_examples=MAX_EXAMPLES_CSV, deadline=None)
@given(rows=csv_rows, delimiter=st.sampled_from([",", None]))
def test_fuzzed_csv_events_reconcile_and_load_only_contract_rows(
    rows: list[tuple[str, str, str, str]], delimiter: str | None
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / "events.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, quoting=csv.QUOTE_ALL)
            writer.writerow(["account_id", "event", "timestamp", "value"])
            writer.writerows(rows)
        options = {"delimiter": delimiter} if delimiter else {}
        check_load(_config(folder, path, **options), len(rows))


typed_rows = with_duplicates(
    st.lists(
        st.tuples(
            st.one_of(ids, st.integers(min_value=-(2**63), max_value=2**63 - 1).map(str)),
            events,
            st.datetimes(
                min_value=datetime(1678, 1, 1), max_value=datetime(2261, 12, 31), timezones=st.timezones()
            ),
            st.floats(allow_nan=True, allow_infinity=True),
        ),
        max_size=25,
    )
)


@settings(max_examples=MAX_EXAMPLES_PARQUET, deadline=None)
@given(rows=typed_rows, naive=st.booleans())
def test_fuzzed_typed_parquet_events_reconcile_and_load_only_contract_rows(
    rows: list[tuple[str, str, datetime, float]], naive: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        stamps = pd.to_datetime([r[2] for r in rows], utc=True) if rows else pd.to_datetime([], utc=True)
        frame = pd.DataFrame(
            {
                "account_id": pd.Series([r[0] for r in rows], dtype="str"),
                "event": pd.Series([r[1] for r in rows], dtype="str"),
                # Naive: the same wall-clock instants without their zone (read as UTC).
                "timestamp": stamps.tz_localize(None) if naive else stamps,
                "value": pd.Series([r[3] for r in rows], dtype="float64"),
            }
        )
        path = folder / "events.parquet"
        frame.to_parquet(path, index=False)
        check_load(_config(folder, path), len(rows))
