"""Ingest fuzzing: whatever the rows hold, every row is loaded, quarantined or deduplicated."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pes_ml.config import parse_config
from pes_ml.errors import DataContractError
from pes_ml.ingest import clean_paths, ingest, quarantine_paths

_counter = itertools.count()

garbage = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12)
account = st.one_of(st.sampled_from(["a1", "a2", " a3 ", "", "  "]), garbage)
event = st.one_of(st.sampled_from(["login", "export", ""]), garbage)
timestamp = st.one_of(
    st.datetimes().map(lambda d: d.isoformat(sep=" ")),
    st.sampled_from(
        ["2024-03-01", "2024-03-01T10:00:00+05:00", "1989-01-01", "2999-01-01", "", "31-12-2024"]
    ),
    garbage,
)
value = st.one_of(
    st.floats(allow_nan=True).map(repr), st.sampled_from(["", "-1", "0", "inf", "1e3"]), garbage
)
rows = st.lists(st.tuples(account, event, timestamp, value), max_size=30)

KNOWN_REASONS = {
    "missing account_id",
    "missing event",
    "missing timestamp",
    "unparseable timestamp",
    "timestamp before min_timestamp",
    "timestamp in the far future",
    "non-numeric value",
    "negative value",
    "event longer than 1024 characters",
}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows)
def test_any_rows_reconcile_and_only_valid_rows_are_loaded(
    tmp_path: Path, rows: list[tuple[str, ...]]
) -> None:
    case = tmp_path / f"case{next(_counter)}"
    case.mkdir()
    path = case / "events.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_ALL)
        writer.writerow(["account_id", "event", "timestamp", "value"])
        writer.writerows(rows)
    config = parse_config(
        {"work_dir": str(case / "work"), "sources": {"events": {"path": str(path), "delimiter": ","}}}
    )
    try:
        recon = ingest(config)
    except DataContractError as exc:
        error: DataContractError | None = exc
    else:
        error = None
    if error is not None:
        # A table with no row, or no valid row, stops the load and writes nothing.
        assert "holds no rows" in str(error) or "passed validation" in str(error)
        assert not clean_paths(config)["events"].exists()
        return
    events = recon.table("events")
    assert events.read == len(rows)
    assert recon.balanced
    clean = pd.read_parquet(clean_paths(config)["events"])
    quarantine = pd.read_parquet(quarantine_paths(config)["events"])
    assert len(clean) == events.loaded
    assert len(quarantine) == events.quarantined
    assert set(quarantine["reason"]) <= KNOWN_REASONS
    assert sorted(quarantine["source_row"]) == sorted(set(quarantine["source_row"]))
    assert clean["account_id"].notna().all()
    assert clean["event"].notna().all()
    assert clean["timestamp"].notna().all()
    assert not clean.duplicated().any()
    assert (clean["value"].dropna() >= 0).all()
