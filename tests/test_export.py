"""Exports for CRM/CS: formula-safe CSV, Parquet, and upserts into SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from pes_ml.cli import app
from pes_ml.errors import DataContractError, StoreError
from pes_ml.export import build_export, escape_formulas, upsert_to_database, write_export
from pes_ml.store import RunStore

NASTY = {
    # account id -> (reason_1, what_changed): text a spreadsheet would run as a formula
    "acc-1": ('=HYPERLINK("http://evil.example","click")', "-12 points since 2024-05-01"),
    "acc-2": ("+cmd|' /C calc'!A0", "@SUM(1+1)*cmd|' /C calc'!A0"),
    "acc-3": ("\t=1+1", "\r=1+1"),
    "acc-4": ("Active users in the last 30 days: 3 — raises churn risk", "PES rose 4 points"),
}


def make_scores(as_of: str, pes: list[float], *, reasons: bool = True) -> pd.DataFrame:
    accounts = list(NASTY)[: len(pes)]
    scores = pd.DataFrame(
        {
            "account_id": accounts,
            "as_of": pd.Timestamp(as_of, tz="UTC"),
            "churn_probability": np.linspace(0.1, 0.4, len(pes)),
            "expansion_probability": 0.05,
            "pes": pes,
            "expansion_score": 42.0,
            "tier": ["at-risk", "watch", "healthy", "expand"][: len(pes)],
            "model_name": "pes",
            "model_version": "3",
            "arr": [12000.0, -350.0, 0.0, 99.5][: len(pes)],  # a credit note: a negative number
        }
    )
    if reasons:
        scores["reason_1"] = [NASTY[a][0] for a in accounts]
        scores["reason_2"] = "Seats used: 4 of 10"
        scores["reason_3"] = pd.Series([None, "x", "y", "z"][: len(pes)], dtype="str")
        scores["what_changed"] = [NASTY[a][1] for a in accounts]
    return scores


def make_reasons(as_of: str, accounts: list[str]) -> pd.DataFrame:
    features = [("active_users_30d", "adoption", -11.0), ("dau_mau_30d", "stickiness", 3.0)]
    features += [("days_since_last_event", "recency", -0.5), ("seats", "seats", 7.5)]
    rows = [
        (a, pd.Timestamp(as_of, tz="UTC"), model, f, g, 1.0, p / 10, p if model == "churn" else p * 2)
        for a in accounts
        for model in ("churn", "expansion")
        for f, g, p in features
    ]
    columns = ["account_id", "as_of", "model", "feature", "group", "value", "shap_log_odds", "pes_points"]
    return pd.DataFrame(rows, columns=columns)


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    """Two runs: May (pes 50, 60, 70, 80) and June (pes 38, 62.5, 70, 81)."""
    store = RunStore(tmp_path / "runs")
    store.write_run(
        "2024-05-01", make_scores("2024-05-01", [50, 60, 70, 80]), make_reasons("2024-05-01", []), {}
    )
    june = make_scores("2024-06-01", [38, 62.5, 70, 81])
    store.write_run("2024-06-01", june, make_reasons("2024-06-01", list(NASTY)), {})
    return store


def test_export_has_one_row_per_account_with_reasons_and_change(store: RunStore) -> None:
    export = build_export(store, "latest")

    assert export["account_id"].tolist() == list(NASTY)
    assert export.columns[:6].tolist() == [
        "account_id",
        "as_of",
        "tier",
        "pes",
        "pes_delta",
        "churn_probability",
    ]
    assert {"reason_1", "reason_2", "reason_3", "what_changed", "arr", "run_id"} <= set(export.columns)
    np.testing.assert_allclose(export["pes_delta"], [-12, 2.5, 0, 1])  # from the May run
    assert str(export.loc[0, "as_of"]) == "2024-06-01"


def test_export_builds_reasons_from_shap_when_scoring_wrote_none(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    store.write_run(
        "2024-06-01",
        make_scores("2024-06-01", [40, 55], reasons=False),
        make_reasons("2024-06-01", ["acc-1", "acc-2"]),
        {},
    )
    export = build_export(store)

    # churn-model contributions, largest absolute PES points first
    assert export.loc[0, ["reason_1", "reason_2", "reason_3"]].tolist() == [
        "active_users_30d (adoption): -11.0 PES points",
        "seats (seats): +7.5 PES points",
        "dau_mau_30d (stickiness): +3.0 PES points",
    ]
    assert export["pes_delta"].isna().all()  # no previous run


def read_cells(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_csv_escapes_formula_text_but_keeps_negative_numbers_as_numbers(
    store: RunStore, tmp_path: Path
) -> None:
    path = write_export(build_export(store), tmp_path / "out" / "pes.csv", "csv")
    rows = {row["account_id"]: row for row in read_cells(path)}

    assert rows["acc-1"]["reason_1"] == '\'=HYPERLINK("http://evil.example","click")'
    assert rows["acc-1"]["what_changed"] == "'-12 points since 2024-05-01"  # text starting with '-'
    assert rows["acc-2"]["reason_1"].startswith("'+cmd")
    assert rows["acc-2"]["what_changed"].startswith("'@SUM")
    assert rows["acc-3"]["reason_1"] == "'\t=1+1"
    assert rows["acc-3"]["what_changed"] == "'\r=1+1"
    assert rows["acc-4"]["reason_1"].startswith("Active users")  # ordinary text untouched
    # numeric columns are plain numbers, negative ones included
    assert rows["acc-1"]["pes_delta"] == "-12.0"
    assert rows["acc-2"]["arr"] == "-350.0"
    assert rows["acc-1"]["as_of"] == "2024-06-01"
    assert rows["acc-1"]["reason_3"] == ""  # a missing reason is an empty cell
    assert pd.read_csv(path)["arr"].dtype == np.float64


def test_escape_formulas_only_touches_text_cells() -> None:
    frame = pd.DataFrame({"name": ["=1+1", "ok", None], "delta": [-3.5, 2.0, np.nan], "n": [-1, 0, 1]})
    escaped = escape_formulas(frame)
    assert escaped["name"].tolist()[:2] == ["'=1+1", "ok"]
    pd.testing.assert_series_equal(escaped["delta"], frame["delta"])
    pd.testing.assert_series_equal(escaped["n"], frame["n"])
    assert frame.loc[0, "name"] == "=1+1"  # the input is not mutated


def test_parquet_export_keeps_types_and_text_verbatim(store: RunStore, tmp_path: Path) -> None:
    path = write_export(build_export(store), tmp_path / "pes.parquet", "parquet")
    back = pd.read_parquet(path)
    assert back.loc[0, "reason_1"].startswith("=HYPERLINK")  # typed format: nothing to escape
    assert back["pes_delta"].dtype == np.float64
    with pytest.raises(DataContractError, match="must be 'csv' or 'parquet'. Got 'xlsx'"):
        write_export(back, tmp_path / "pes.xlsx", "xlsx")  # type: ignore[arg-type]


def check_upsert(url: str, store: RunStore) -> None:
    """Create, upsert again with new values, add an account: one row per (account_id, as_of)."""
    june = build_export(store)
    assert upsert_to_database(june, url) == 4
    changed = june.assign(pes=june["pes"] + 1.0, tier="watch")
    assert upsert_to_database(changed, url) == 4  # idempotent rerun, updated values
    may = build_export(store, store.runs()["run_id"].iloc[0])
    upsert_to_database(may, url)

    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            rows = pd.read_sql(sa.text("SELECT * FROM pes_scores ORDER BY as_of, account_id"), connection)
        inspector = sa.inspect(engine)
        assert sorted(inspector.get_pk_constraint("pes_scores")["constrained_columns"]) == [
            "account_id",
            "as_of",
        ]
    finally:
        engine.dispose()
    assert len(rows) == 8
    latest = rows[rows["as_of"].astype(str) == "2024-06-01"]
    np.testing.assert_allclose(latest["pes"], [39, 63.5, 71, 82])
    assert set(latest["tier"]) == {"watch"}
    assert latest["reason_1"].iloc[0].startswith("=HYPERLINK")  # a database stores text as text
    np.testing.assert_allclose(latest["arr"], [12000, -350, 0, 99.5])

    with pytest.raises(DataContractError, match=r"lacks column\(s\) extra_column"):
        upsert_to_database(june.assign(extra_column=1.0), url)


def test_upsert_into_sqlite_creates_the_table_and_updates_rows(store: RunStore, tmp_path: Path) -> None:
    check_upsert(f"sqlite:///{tmp_path / 'crm.db'}", store)


@pytest.mark.postgres
def test_upsert_into_postgresql_creates_the_table_and_updates_rows(store: RunStore, postgres_server) -> None:  # type: ignore[no-untyped-def]
    check_upsert(postgres_server.url(postgres_server.create_database()), store)


def test_an_unreachable_database_is_one_clear_error_without_the_password(store: RunStore) -> None:
    url = "postgresql+psycopg://crm:s3cret@127.0.0.1:1/crm"
    with pytest.raises(
        StoreError, match=r"Could not upsert into table 'pes_scores' at .*127\.0\.0\.1:1/crm"
    ) as info:
        upsert_to_database(build_export(store), url)
    assert "s3cret" not in str(info.value)


def test_cli_export_writes_csv_and_upserts(store: RunStore, tmp_path: Path) -> None:
    out = tmp_path / "pes.csv"
    db = f"sqlite:///{tmp_path / 'crm.db'}"
    result = CliRunner().invoke(
        app,
        ["export", "--store", str(store.path), "--run", "latest", "--format", "csv", "--out", str(out)]
        + ["--to-database", db, "--table", "pes_scores"],
    )
    assert result.exit_code == 0, result.output
    assert len(read_cells(out)) == 4
    assert "Upserted 4 accounts" in result.output


def test_cli_export_of_an_unknown_run_exits_with_one_line(store: RunStore, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["export", "--store", str(store.path), "--run", "nope", "--out", str(tmp_path / "x.csv")]
    )
    assert result.exit_code == StoreError.exit_code
    assert "No committed run 'nope'" in result.output
    assert f"the latest are {store.latest_run().run_id}" in " ".join(result.output.split())  # ids to use
    assert not (tmp_path / "x.csv").exists()


def test_cli_export_refuses_to_replace_a_link_a_pipe_or_a_folder(store: RunStore, tmp_path: Path) -> None:
    # The file is written through a temporary file and a rename, which would put a plain file in the
    # place of a link (its target untouched), a pipe or a device: refused before any work.
    target = tmp_path / "target.csv"
    target.write_text("keep me\n")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    pipe = tmp_path / "pipe.csv"
    os.mkfifo(pipe)
    folder = tmp_path / "folder"
    folder.mkdir()
    for out, says in ((link, "is a link"), (pipe, "is not a regular file"), (folder, "is a folder")):
        result = CliRunner().invoke(app, ["export", "--store", str(store.path), "--out", str(out)])
        assert result.exit_code == 2, result.output
        assert says in result.output
    assert link.is_symlink()
    assert target.read_text() == "keep me\n"
    assert pipe.is_fifo()
