"""The public datasets in ../shared/data load through their configs and reconcile with PROVENANCE.md.

Each config lives in pipelines/conf/shared/; its paths are relative to the project
root. The row counts below are those written in each dataset's PROVENANCE.md.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
import yaml

from pes_ml.config import PesConfig, load_config, parse_config
from pes_ml.ingest import Reconciliation, clean_paths, ingest

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "pipelines" / "conf" / "shared"
DEFAULT_SHARED = ROOT.parent / "shared" / "data"

pytestmark = pytest.mark.shared_data


def shared_config(name: str, shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PesConfig:
    """Load pipelines/conf/shared/<name>.yaml as a user would, with work_dir moved into tmp_path."""
    monkeypatch.chdir(ROOT)
    if shared_data.resolve() == DEFAULT_SHARED.resolve():
        config = load_config(CONF / f"{name}.yaml")
    else:  # PES_SHARED_DATA points elsewhere: re-root the relative paths.
        text = (CONF / f"{name}.yaml").read_text().replace("../shared/data/", f"{shared_data}/")
        config = parse_config(yaml.safe_load(text))
    return config.model_copy(update={"work_dir": str(tmp_path / "work")})


def query(config: PesConfig, table: str, sql: str) -> tuple:
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet('{clean_paths(config)[table]}')")
        row = con.execute(sql).fetchone()
    assert row is not None
    return row


def assert_reconciles(recon: Reconciliation, config: PesConfig) -> None:
    assert recon.balanced
    for t in recon.tables:
        assert t.read == t.loaded + t.quarantined + t.deduplicated, t
    on_disk = Reconciliation.read_json(Path(config.work_dir) / "clean" / "reconciliation.json")
    assert on_disk.to_dict() == recon.to_dict()


@pytest.mark.slow
def test_fightchurn_socialnet7_reconciles_with_provenance(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = shared_config("fightchurn_socialnet7", shared_data, tmp_path, monkeypatch)
    recon = ingest(config)
    assert_reconciles(recon, config)
    events = recon.table("events")
    assert events.read == 2_255_696  # every row of event.csv.gz, including those after the sim end
    # PROVENANCE: 240,832 events fall after the simulation end 2020-07-01; they are quarantined.
    assert recon.by_reason("events")["after filter_before"] == 240_832
    assert events.quarantined == 240_832
    assert events.loaded + events.deduplicated == 2_255_696 - 240_832
    assert recon.table("subscriptions").read == 7_174
    assert recon.table("subscriptions").loaded + recon.table("subscriptions").deduplicated == 7_174
    assert recon.table("accounts").read == recon.table("accounts").loaded == 1_620
    assert not [r for r in recon.reasons if r.reason == "account_id not in accounts"]
    names = query(
        config, "events", "SELECT list_sort(list(DISTINCT event)), max(timestamp) < '2020-07-01' FROM t"
    )
    assert names == (
        sorted(["post", "newfriend", "like", "adview", "dislike", "unfriend", "message", "reply"]),
        True,
    )
    # PROVENANCE: 180 of 1,620 accounts churned (max end_date <= 2020-07-01).
    churned = query(
        config,
        "subscriptions",
        "SELECT count(*) FILTER (WHERE last_end <= TIMESTAMPTZ '2020-07-01'), count(*) "
        'FROM (SELECT account_id, max("end") AS last_end FROM t GROUP BY 1)',
    )
    assert churned == (180, 1_620)


def test_ravenstack_saas_reconciles_with_provenance(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = shared_config("ravenstack_saas", shared_data, tmp_path, monkeypatch)
    recon = ingest(config)
    assert_reconciles(recon, config)
    assert recon.table("events").read == 25_000
    assert recon.table("subscriptions").read == 5_000
    assert recon.table("accounts").read == recon.table("accounts").loaded == 500
    assert recon.rows("events", "join key not found") == 0  # every usage row has its subscription
    assert recon.table("events").quarantined == recon.table("subscriptions").quarantined == 0
    stats = query(
        config,
        "events",
        "SELECT count(DISTINCT event), count(DISTINCT account_id) <= 500, min(timestamp) >= '2023-01-01', "
        "max(timestamp) < '2025-01-01' FROM t",
    )
    assert stats == (40, True, True, True)
    billing = query(config, "subscriptions", "SELECT list_sort(list(DISTINCT billing_period_months)) FROM t")
    assert billing == ([1.0, 12.0],)


def test_cdnow_reconciles_with_provenance(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = shared_config("cdnow", shared_data, tmp_path, monkeypatch)
    recon = ingest(config)
    assert_reconciles(recon, config)
    events = recon.table("events")
    assert events.read == 69_659
    assert events.quarantined == 0  # the 80 zero-dollar purchases are valid values
    stats = query(
        config,
        "events",
        "SELECT count(DISTINCT account_id), min(timestamp) = '1997-01-01', max(timestamp) = '1998-06-30', "
        "list(DISTINCT event) FROM t",
    )
    assert stats == (23_570, True, True, ["purchase"])


def test_retentioneering_ecom_reconciles_with_provenance(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = shared_config("retentioneering_ecom", shared_data, tmp_path, monkeypatch)
    assert config.entity == "user"
    recon = ingest(config)
    assert_reconciles(recon, config)
    assert recon.table("events").read == 31_106
    assert recon.table("events").quarantined == 0
    stats = query(
        config,
        "events",
        "SELECT count(DISTINCT account_id), count(DISTINCT event), bool_and(account_id = user_id), "
        "min(timestamp)::DATE = '2024-01-04', max(timestamp)::DATE = '2024-06-29' FROM t",
    )
    assert stats == (600, 19, True, True, True)
