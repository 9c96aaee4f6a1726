"""Column mapping onto the contract: renames, lookups, constants, joins, value maps, types."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pes_ml.errors import ConfigError, DataContractError
from pes_ml.ingest import ingest

from .conftest import MakeConfig, read_clean, read_quarantine, write_text


def test_maps_renamed_columns_and_event_codes_through_a_lookup(
    tmp_path: Path, make_config: MakeConfig
) -> None:
    events = write_text(
        tmp_path / "event.csv",
        "acct,event_time,event_type_id\n"
        "7,2020-01-11 01:04:52,0\n"
        "7,2020-01-11 02:15:05,3\n"
        "8,2020-01-12 00:00:00,9\n",  # code 9 is not in the lookup
    )
    lookup = write_text(tmp_path / "event_type.csv", "event_type_id,event_type_name\n0,post\n3,adview\n")
    config = make_config(
        events={
            "path": str(events),
            "columns": {"account_id": "acct", "timestamp": "event_time", "event": "event_type_id"},
            "event_lookup": {"path": str(lookup), "key": "event_type_id", "name": "event_type_name"},
        }
    )
    recon = ingest(config)
    clean = read_clean(config)
    assert list(clean["event"]) == ["post", "adview"]
    assert list(clean["account_id"]) == ["7", "7"]
    assert recon.by_reason("events") == {"unknown event code": 1}
    assert read_quarantine(config)["event_type_id"].tolist() == ["9"]


def test_lookup_with_repeated_codes_is_refused(tmp_path: Path, make_config: MakeConfig) -> None:
    events = write_text(tmp_path / "e.csv", "account_id,timestamp,code\na,2024-01-01,1\n")
    lookup = write_text(tmp_path / "types.csv", "code,name\n1,post\n1,like\n")
    config = make_config(
        events={
            "path": str(events),
            "columns": {"event": "code"},
            "event_lookup": {"path": str(lookup), "key": "code", "name": "name"},
        }
    )
    with pytest.raises(DataContractError, match=r"types\.csv.*one row per 'code'.*'1' \(2 rows\)"):
        ingest(config)


def test_constants_and_value_maps_fill_columns_the_source_lacks(
    tmp_path: Path, make_config: MakeConfig
) -> None:
    events = write_text(tmp_path / "e.csv", "customer,day\nc1,2024-01-05\n")
    subs = write_text(
        tmp_path / "s.csv",
        "customer,from,to,freq,renew\nc1,05-01-2024,05-02-2024,monthly,TRUE\nc1,05-02-2024,,annual,FALSE\n",
    )
    config = make_config(
        events={
            "path": str(events),
            "columns": {"account_id": "customer", "timestamp": "day"},
            "constants": {"event": "purchase", "value": 1},
        },
        subscriptions={
            "path": str(subs),
            "columns": {
                "account_id": "customer",
                "start": "from",
                "end": "to",
                "billing_period_months": "freq",
                "auto_renew": "renew",
            },
            "value_maps": {"billing_period_months": {"monthly": 1, "annual": 12}},
            "timestamp_format": "%d-%m-%Y",
        },
    )
    ingest(config)
    events_clean = read_clean(config)
    assert events_clean["event"].tolist() == ["purchase"]
    assert events_clean["value"].tolist() == [1.0]
    subs_clean = read_clean(config, "subscriptions")
    assert subs_clean["billing_period_months"].tolist() == [1.0, 12.0]
    assert subs_clean["auto_renew"].tolist() == [True, False]
    assert subs_clean["start"].tolist() == [
        pd.Timestamp("2024-01-05", tz="UTC"),
        pd.Timestamp("2024-02-05", tz="UTC"),
    ]
    assert pd.isna(subs_clean["end"].iloc[1])  # open subscription


def test_join_brings_the_account_from_a_second_file(tmp_path: Path, make_config: MakeConfig) -> None:
    usage = write_text(
        tmp_path / "usage.csv",
        "usage_id,subscription_id,usage_date,feature_name\n"
        "u1,S-1,27-07-2023,feature_1\n"
        "u2,S-2,28-07-2023,feature_2\n"
        "u3,S-9,29-07-2023,feature_3\n",  # S-9 is not in the subscriptions file
    )
    subs = write_text(tmp_path / "subs.csv", "subscription_id,account_id\nS-1,A-1\nS-2,A-2\n")
    config = make_config(
        events={
            "path": str(usage),
            "join": {"path": str(subs), "key": "subscription_id", "columns": ["account_id"]},
            "columns": {"event": "feature_name", "timestamp": "usage_date"},
            "timestamp_format": "%d-%m-%Y",
        }
    )
    recon = ingest(config)
    clean = read_clean(config)
    assert clean["account_id"].tolist() == ["A-1", "A-2"]
    assert clean["timestamp"].iloc[0] == pd.Timestamp("2023-07-27", tz="UTC")
    assert recon.by_reason("events") == {"join key not found": 1}
    assert recon.table("events").balanced
    assert read_quarantine(config)["usage_id"].tolist() == ["u3"]


def test_join_on_a_repeated_key_is_refused_so_rows_never_multiply(
    tmp_path: Path, make_config: MakeConfig
) -> None:
    usage = write_text(tmp_path / "usage.csv", "subscription_id,usage_date,feature_name\nS-1,2023-07-27,f\n")
    subs = write_text(tmp_path / "subs.csv", "subscription_id,account_id\nS-1,A-1\nS-1,A-2\n")
    config = make_config(
        events={
            "path": str(usage),
            "join": {"path": str(subs), "key": "subscription_id", "columns": ["account_id"]},
            "columns": {"event": "feature_name", "timestamp": "usage_date"},
        }
    )
    with pytest.raises(DataContractError, match=r"subs\.csv.*one row per 'subscription_id'.*multiply"):
        ingest(config)


def test_missing_required_column_names_file_column_found_columns_and_config_key(
    tmp_path: Path, make_config: MakeConfig
) -> None:
    path = write_text(tmp_path / "events.csv", "account_id,event,event_time\na,login,2024-01-01\n")
    config = make_config(events={"path": str(path)})
    with pytest.raises(DataContractError) as caught:
        ingest(config)
    message = str(caught.value)
    assert "Required column 'timestamp'" in message
    assert str(path) in message
    assert "Columns found: account_id, event, event_time" in message
    assert "sources.events.columns.timestamp" in message
    assert "`timestamp: event_time`" in message  # a suggestion from the columns found


def test_mapping_to_a_column_that_does_not_exist_is_an_error(tmp_path: Path, make_config: MakeConfig) -> None:
    path = write_text(tmp_path / "events.csv", "account_id,event,event_time\na,login,2024-01-01\n")
    config = make_config(events={"path": str(path), "columns": {"timestamp": "event_tme"}})
    with pytest.raises(
        DataContractError,
        # The suggestion is the mapping to write: the contract column, then the close match.
        match=r"sources\.events\.columns\.timestamp maps to 'event_tme'.*Columns found: .*event_time"
        r".*Perhaps: `timestamp: event_time`",
    ):
        ingest(config)


def test_unknown_canonical_key_in_columns_suggests_the_nearest(
    tmp_path: Path, make_config: MakeConfig
) -> None:
    path = write_text(tmp_path / "events.csv", "account_id,event,timestamp\na,login,2024-01-01\n")
    config = make_config(events={"path": str(path), "columns": {"timestmp": "timestamp"}})
    with pytest.raises(
        DataContractError, match=r"sources\.events\.columns has 'timestmp'.*Did you mean 'timestamp'"
    ):
        ingest(config)


def test_a_failed_load_leaves_the_previous_clean_tables_untouched(
    tmp_path: Path, make_config: MakeConfig
) -> None:
    good = write_text(tmp_path / "good.csv", "account_id,event,timestamp\na,login,2024-01-01\n")
    config = make_config(events={"path": str(good)})
    ingest(config)
    before = read_clean(config)
    bad = write_text(tmp_path / "bad.csv", "account_id,event\na,login\n")
    with pytest.raises(DataContractError):
        ingest(make_config(events={"path": str(bad)}))
    pd.testing.assert_frame_equal(read_clean(config), before)


def test_integer_ids_become_text_and_naive_and_aware_timestamps_end_up_utc(
    tmp_path: Path, make_config: MakeConfig
) -> None:
    naive = pa.array([pd.Timestamp("2024-03-01 12:00:00")], type=pa.timestamp("us"))
    aware = pa.array(
        [pd.Timestamp("2024-03-01 12:00:00", tz="Europe/Paris")], type=pa.timestamp("us", "Europe/Paris")
    )
    for name, ts in (("naive", naive), ("aware", aware)):
        table = pa.table(
            {
                "account_id": pa.array([42], pa.int64()),
                "event": ["login"],
                "timestamp": ts,
                "user_id": pa.array([7], pa.int32()),
            }
        )
        pq.write_table(table, tmp_path / f"{name}.parquet")
    text = write_text(
        tmp_path / "text.csv",
        "account_id,event,timestamp\n42,login,2024-03-01 12:00:00\n42,login,2024-03-01T12:00:00+01:00\n",
    )
    expected = {
        "naive": [pd.Timestamp("2024-03-01 12:00:00", tz="UTC")],  # naive is read as UTC
        "aware": [pd.Timestamp("2024-03-01 11:00:00", tz="UTC")],  # 12:00 in Paris (CET) is 11:00 UTC
        "text": [
            pd.Timestamp("2024-03-01 11:00:00", tz="UTC"),
            pd.Timestamp("2024-03-01 12:00:00", tz="UTC"),
        ],
    }
    for name, path in (
        ("naive", tmp_path / "naive.parquet"),
        ("aware", tmp_path / "aware.parquet"),
        ("text", text),
    ):
        config = make_config(events={"path": str(path)})
        ingest(config)
        clean = read_clean(config)
        assert str(clean["timestamp"].dtype) == "datetime64[us, UTC]", name
        assert clean["timestamp"].tolist() == expected[name], name
        assert clean["account_id"].tolist() == ["42"] * len(expected[name]), name
        if name != "text":
            assert clean["user_id"].tolist() == ["7"], name  # int32 user id -> text


def test_bad_filter_before_is_a_config_error(tmp_path: Path, make_config: MakeConfig) -> None:
    path = write_text(tmp_path / "events.csv", "account_id,event,timestamp\na,login,2024-01-01\n")
    with pytest.raises(ConfigError, match=r"sources\.events\.filter_before.*ISO date.*'July 1st'"):
        ingest(make_config(events={"path": str(path), "filter_before": "July 1st"}))


def test_a_log_without_a_user_column_counts_each_account_as_its_single_user(
    tmp_path: Path, make_config: MakeConfig
) -> None:
    events = write_text(
        tmp_path / "usage.csv",
        "account_id,event,timestamp\n"
        "a,report,2024-01-01T10:00:00Z\n"
        "b,report,2024-01-02T10:00:00Z\n",
    )
    config = make_config(events={"path": str(events)})
    ingest(config)
    clean = read_clean(config)
    assert clean["user_id"].tolist() == clean["account_id"].tolist() == ["a", "b"]


def test_a_user_column_with_empty_values_is_not_filled_from_the_account(
    tmp_path: Path, make_config: MakeConfig
) -> None:
    events = write_text(
        tmp_path / "usage.csv",
        "account_id,user_id,event,timestamp\n"
        "a,u1,report,2024-01-01T10:00:00Z\n"
        "a,,report,2024-01-02T10:00:00Z\n",  # a system event: no user, and not the account's
    )
    config = make_config(events={"path": str(events)})
    ingest(config)
    clean = read_clean(config).sort_values("timestamp")
    assert clean["user_id"].iloc[0] == "u1"
    assert pd.isna(clean["user_id"].iloc[1])


def test_text_is_trimmed_of_every_kind_of_whitespace_so_blank_ids_are_quarantined(
    tmp_path: Path, make_config: MakeConfig
) -> None:
    path = tmp_path / "events.parquet"
    pq.write_table(
        pa.table({
            "account_id": ["\t\x0b", "\u2003a\t", "b\u3000c\n", " \x1c\x85\u2028"],
            "event": ["login", "login\r\n", "\tlogin", "login"],
            "timestamp": pa.array([pd.Timestamp(f"2024-01-0{d}", tz="UTC") for d in (1, 2, 3, 4)]),
        }),
        path,
    )
    config = make_config(events={"path": str(path)})
    recon = ingest(config)
    clean = read_clean(config).sort_values("timestamp")
    assert list(clean["account_id"]) == ["a", "b\u3000c"]  # inner whitespace is kept
    assert list(clean["event"]) == ["login", "login"]
    assert recon.by_reason("events") == {"missing account_id": 2}


def test_trimmed_ids_equal_python_strip_for_every_mix_of_spaces_and_text(
    tmp_path: Path, make_config: MakeConfig
) -> None:
    # Ingest trims only values that start or end with a space character (a fast path around
    # DuckDB's trim): the result must still be Python's str.strip() for every value, including
    # a combining mark right after a space, spaces inside, and values of spaces only.
    alphabet = [" ", "\t", "\n", "\x85", "\xa0", "\u2003", "\u3000", "a", "Z", "\u0301", "\u00e9", "-"]
    rng = random.Random(5)
    ids = ["", " ", "a", " \u0301x", "x\u0301 ", "\u00e9\u3000", "a b"]
    ids += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))) for _ in range(600)]
    path = tmp_path / "events.parquet"
    pq.write_table(
        pa.table({
            "account_id": ids,
            "event": ["login"] * len(ids),
            "timestamp": pa.array([pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(seconds=i)
                                   for i in range(len(ids))]),
        }),
        path,
    )
    config = make_config(events={"path": str(path)})
    recon = ingest(config)
    expected = [(i, v.strip()) for i, v in enumerate(ids) if v.strip()]
    clean = read_clean(config).sort_values("timestamp")
    assert list(clean["account_id"]) == [v for _, v in expected]
    assert recon.by_reason("events") == {"missing account_id": len(ids) - len(expected)}
