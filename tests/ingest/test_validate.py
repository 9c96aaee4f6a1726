"""Validation with quarantine: every kind of bad row gets its reason, and the counts reconcile."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pes_ml.ingest import Reconciliation, clean_paths, ingest, quarantine_paths, reconciliation_path

from .conftest import MakeConfig, read_clean, read_quarantine, write_text

BAD_EVENTS = """account_id,user_id,event,timestamp,value
a1,u1,login,2024-03-01 09:00:00,1
a1,u1,login,2024-03-01 09:00:00,1
a1,u1,login,2024-03-01 09:00:00,1
,u1,login,2024-03-01,1
  ,u1,login,2024-03-01,1
a2,u2,,2024-03-01,1
a2,u2,login,,1
a2,u2,login,not a date,1
a2,u2,login,1989-12-31 23:59:59,1
a2,u2,login,2100-01-01 00:00:00,1
a2,u2,login,2099-06-01,1
a2,u2,login,2024-03-01,abc
a2,u2,login,2024-03-01,nan
a2,u2,login,2024-03-01,-5
,u2,,not a date,-1
a3,u3,login,2024-12-31 23:59:59,0
a3,,export,2024-06-01T10:00:00Z,
a1,u1,login,2024-03-01 09:00:00,2
"""
# Row by row (source_row = data line number):
#  1 valid;  2, 3 exact duplicates of 1;  4 empty account;  5 blank account;  6 empty event;
#  7 empty timestamp;  8 unparseable;  9 one second before min_timestamp (1990-01-01);
# 10 exactly at filter_before (excluded: the bound is exclusive);  11 far future (after now + 1 day);
# 12 text value;  13 NaN value;  14 negative value;  15 fails everything: the first check wins;
# 16 valid, zero value;  17 valid, no user and no value, 'Z' offset;  18 not a duplicate of 1 (value differs).
EXPECTED_EVENT_REASONS = {
    "missing account_id": 3,
    "missing event": 1,
    "missing timestamp": 1,
    "unparseable timestamp": 1,
    "timestamp before min_timestamp": 1,
    "after filter_before": 1,
    "timestamp in the far future": 1,
    "non-numeric value": 2,
    "negative value": 1,
    "exact duplicate": 2,
}


@pytest.fixture
def bad_events(tmp_path: Path) -> Path:
    return write_text(tmp_path / "events.csv", BAD_EVENTS)


def test_every_kind_of_bad_event_gets_its_reason_and_the_counts_reconcile(
    bad_events: Path, make_config: MakeConfig
) -> None:
    config = make_config(events={"path": str(bad_events), "filter_before": "2100-01-01"})
    recon = ingest(config)
    events = recon.table("events")
    assert recon.by_reason("events") == EXPECTED_EVENT_REASONS
    assert (events.read, events.loaded, events.quarantined, events.deduplicated) == (18, 4, 12, 2)
    assert events.read == events.loaded + events.quarantined + events.deduplicated
    assert recon.balanced
    assert recon.quarantined_total == 12
    assert [r.action for r in recon.reasons if r.reason == "exact duplicate"] == ["deduplicated"]

    clean = read_clean(config)
    assert len(clean) == 4
    assert sorted(clean["value"].fillna(-1).tolist()) == [-1.0, 0.0, 1.0, 2.0]

    quarantine = read_quarantine(config)
    assert list(quarantine.columns) == [
        "account_id",
        "user_id",
        "event",
        "timestamp",
        "value",
        "reason",
        "source_row",
    ]
    assert len(quarantine) == 12
    by_row = quarantine.set_index("source_row")
    assert by_row.loc[8, "timestamp"] == "not a date"  # original text is kept
    assert by_row.loc[8, "reason"] == "unparseable timestamp"
    assert by_row.loc[15, "reason"] == "missing account_id"  # first failing check in priority order
    assert by_row.loc[10, "reason"] == "after filter_before"
    assert by_row.loc[13, "value"] == "nan"


def test_reconciliation_is_written_as_json_and_reads_back(bad_events: Path, make_config: MakeConfig) -> None:
    config = make_config(events={"path": str(bad_events)})
    recon = ingest(config)
    path = reconciliation_path(config)
    assert path == clean_paths(config)["events"].parent / "reconciliation.json"
    raw = json.loads(path.read_text())
    assert raw["balanced"] is True
    assert raw["tables"][0]["read"] == 18
    assert Reconciliation.read_json(path).to_dict() == recon.to_dict()
    # Atomic writes leave no staging or temp files behind.
    work = Path(config.work_dir)
    assert not (work / ".staging").exists()
    assert sorted(p.name for p in (work / "clean").iterdir()) == ["events.parquet", "reconciliation.json"]


def test_clean_and_quarantine_tables_are_written_with_the_fast_decoding_codec(
    bad_events: Path, make_config: MakeConfig
) -> None:
    # Every feature build reads the clean events again: they are LZ4 (pes_ml.ingest.quarantine.COMPRESSION),
    # not zstd, and Spark and Arrow read them as DuckDB wrote them.
    config = make_config(events={"path": str(bad_events)})
    ingest(config)
    for path in (clean_paths(config)["events"], quarantine_paths(config)["events"]):
        metadata = pq.ParquetFile(path).metadata
        codecs = {
            metadata.row_group(g).column(c).compression
            for g in range(metadata.num_row_groups)
            for c in range(metadata.num_columns)
        }
        assert codecs == {"LZ4"}, (path.name, codecs)
    assert len(read_clean(config)) == 4  # rows 1, 16, 17 and 18 (see BAD_EVENTS)


def test_negative_values_are_kept_when_allowed(bad_events: Path, make_config: MakeConfig) -> None:
    config = make_config(events={"path": str(bad_events)}, validation={"allow_negative_values": True})
    recon = ingest(config)
    assert recon.rows("events", "negative value") == 0
    assert -5.0 in read_clean(config)["value"].tolist()
    assert recon.balanced


def test_duplicates_are_kept_when_deduplication_is_off(bad_events: Path, make_config: MakeConfig) -> None:
    config = make_config(events={"path": str(bad_events), "deduplicate": False})
    recon = ingest(config)
    assert recon.table("events").deduplicated == 0
    assert recon.table("events").loaded == 6  # the 4 distinct valid rows + 2 duplicates of row 1
    assert recon.balanced


ACCOUNTS = """account_id,plan,seats,created_at
A1,pro,5,2023-01-01
A1,pro,5,2023-01-01
A2,basic,3,2023-02-01
A2,pro,9,2023-02-01
,basic,1,2023-01-01
A3,basic,x,2023-01-01
A4,basic,-1,2023-01-01
A5,basic,1,yesterday
"""
# 1 valid; 2 exact duplicate; 3 valid; 4 same account as 3, other attributes: quarantined, first kept;
# 5 missing id; 6 text seats; 7 negative seats; 8 unparseable created_at.

SUBSCRIPTIONS = """account_id,start,end,mrr,seats
A1,2024-01-01,2024-02-01,100,5
A1,2024-02-01,2024-03-01,100,5
A1,2024-02-15,,120,6
A2,2024-03-01,2024-02-01,50,1
A9,2024-01-01,2024-06-01,10,1
,2024-01-01,,10,1
A2,,2024-01-01,10,1
A2,2024-01-01,soon,10,1
A2,2024-01-01,,-10,1
A2,2024-01-01,,ten,1
A1,2024-01-01,2024-02-01,100,5
"""
# 1 valid; 2 renewal starting the day 1 ends: [start, end) is half-open, no overlap;
# 3 starts before 2 ends: overlap, flagged and kept; 4 end before start; 5 unknown account: flagged, kept;
# 6 missing id; 7 missing start; 8 unparseable end; 9 negative mrr; 10 text mrr; 11 exact duplicate of 1.

EVENTS = """account_id,event,timestamp
A1,login,2024-01-02
A9,login,2024-01-02
A9,login,2024-01-03
"""


def test_subscriptions_and_accounts_are_checked_and_flagged(tmp_path: Path, make_config: MakeConfig) -> None:
    config = make_config(
        events={"path": str(write_text(tmp_path / "e.csv", EVENTS))},
        subscriptions={"path": str(write_text(tmp_path / "s.csv", SUBSCRIPTIONS))},
        accounts={"path": str(write_text(tmp_path / "a.csv", ACCOUNTS))},
    )
    recon = ingest(config)
    assert recon.balanced
    assert recon.by_reason("accounts") == {
        "missing account_id": 1,
        "non-numeric seats": 1,
        "negative seats": 1,
        "unparseable created_at": 1,
        "duplicate account_id": 1,
        "exact duplicate": 1,
    }
    accounts = recon.table("accounts")
    assert (accounts.read, accounts.loaded, accounts.quarantined, accounts.deduplicated) == (8, 2, 5, 1)
    clean_accounts = read_clean(config, "accounts")
    assert clean_accounts.set_index("account_id").loc["A2", "seats"] == 3.0  # the first row is kept

    assert recon.by_reason("subscriptions") == {
        "missing account_id": 1,
        "missing start": 1,
        "unparseable end": 1,
        "end before start": 1,
        "non-numeric mrr": 1,
        "negative mrr": 1,
        "exact duplicate": 1,
        "overlapping subscription": 1,
        "account_id not in accounts": 1,
    }
    subs = recon.table("subscriptions")
    assert (subs.read, subs.loaded, subs.quarantined, subs.deduplicated) == (11, 4, 6, 1)
    flagged = {(r.table, r.reason): (r.rows, r.action) for r in recon.reasons if r.action == "flagged"}
    assert flagged == {
        ("subscriptions", "overlapping subscription"): (1, "flagged"),
        ("subscriptions", "account_id not in accounts"): (1, "flagged"),
        ("events", "account_id not in accounts"): (2, "flagged"),
    }
    # Flagged rows stay in the clean tables.
    assert sorted(read_clean(config, "subscriptions")["account_id"]) == ["A1", "A1", "A1", "A9"]
    assert (
        read_quarantine(config, "subscriptions").set_index("source_row").loc[4, "reason"]
        == "end before start"
    )


def test_outputs_of_a_table_no_longer_configured_are_removed(tmp_path: Path, make_config: MakeConfig) -> None:
    events = str(write_text(tmp_path / "e.csv", EVENTS))
    with_accounts = make_config(
        events={"path": events}, accounts={"path": str(write_text(tmp_path / "a.csv", ACCOUNTS))}
    )
    ingest(with_accounts)
    assert clean_paths(with_accounts)["accounts"].exists()
    only_events = make_config(events={"path": events})
    recon = ingest(only_events)
    assert not clean_paths(only_events)["accounts"].exists()
    assert not quarantine_paths(only_events)["accounts"].exists()
    assert [t.table for t in recon.tables] == ["events"]
    assert quarantine_paths(only_events)["events"].exists()  # written even when empty: no stale rows survive
    assert len(read_quarantine(only_events)) == 0
