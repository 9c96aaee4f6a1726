"""The static report: files, safe JSON, escaping, derived columns, summary, rebuilds and the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pes_ml.cli import app
from pes_ml.errors import ConfigError, StoreError
from pes_ml.explain import format_value, top_reasons
from pes_ml.features.catalog import CATALOG
from pes_ml.report import build_report
from pes_ml.report.build import MARKER, safe_json, shard_of
from pes_ml.report.data import PORTFOLIO_COLUMNS, feature_specs_for, normalise_tier
from pes_ml.report.sample import (
    HOSTILE_ACCOUNT_NAME,
    HOSTILE_EVENT_NAME,
    HOSTILE_PLAN,
    HOSTILE_SEGMENT,
    sample_runs,
)
from pes_ml.store import RunStore

EVENT_TYPES = ["report_export", "dashboard_share", HOSTILE_EVENT_NAME]
HOSTILE = (HOSTILE_ACCOUNT_NAME, HOSTILE_EVENT_NAME, HOSTILE_SEGMENT, HOSTILE_PLAN)


def embedded_json(html: str, element_id: str) -> dict:
    match = re.search(rf'<script type="application/json" id="{element_id}">(.*?)</script>', html, re.S)
    assert match is not None, f"no JSON element #{element_id}"
    return json.loads(match.group(1))


def shard_records(site: Path) -> dict[str, dict]:
    records: dict[str, dict] = {}
    for path in sorted((site / "accounts").glob("s*.js")):
        text = path.read_text(encoding="utf-8")
        match = re.fullmatch(r"pesShard\((\d+),(.*)\);\n", text, re.S)
        assert match is not None, path
        records.update(json.loads(match.group(2)))
    return records


def test_report_has_portfolio_account_viewer_model_page_and_shards(report_dir: Path) -> None:
    names = sorted(p.name for p in report_dir.iterdir())

    assert names == [MARKER, "account.html", "accounts", "index.html", "model.html"]
    assert list((report_dir / "accounts").glob("s*.js")) == [report_dir / "accounts" / "s0000.js"]


@pytest.mark.parametrize(
    "text", ["</script><script>alert(1)</script>", "<!-- x", "a & b > c", "\u2028line\u2029", "q\"uo'te"]
)
def test_safe_json_cannot_close_a_script_or_open_a_comment_and_round_trips(text: str) -> None:
    encoded = safe_json({"name": text, "n": [1.5, None]})

    for char in ("<", ">", "&", "\u2028", "\u2029"):
        assert char not in encoded
    assert json.loads(encoded) == {"name": text, "n": [1.5, None]}


def test_safe_json_refuses_nan() -> None:
    with pytest.raises(ValueError, match="Out of range float values"):
        safe_json({"pes": float("nan")})


def test_shard_of_is_fnv1a_32_of_the_utf8_id() -> None:
    # Reference values of FNV-1a 32 bit; account.js must compute the same.
    assert shard_of("", 2**32 - 1) == 0x811C9DC5 % (2**32 - 1)
    assert shard_of("a", 2**32) == 0xE40C292C
    assert shard_of("foobar", 2**32) == 0xBF9CF968
    assert 0 <= shard_of("Zoë <script>", 7) < 7


def test_hostile_text_never_appears_raw_in_any_page(report_dir: Path) -> None:
    for page, scripts in (("index.html", 2), ("account.html", 2), ("model.html", 0)):
        html = (report_dir / page).read_text(encoding="utf-8")
        for text in (*HOSTILE, "<script>alert", "<img src=x", "alert(4)</script>"):
            assert text not in html, f"{text!r} unescaped in {page}"
        assert html.count("<script") == scripts, page
        assert html.count("</script>") == scripts, page


def test_hostile_text_is_shown_escaped_in_the_summary_and_model_page(report_dir: Path) -> None:
    index = (report_dir / "index.html").read_text(encoding="utf-8")
    model = (report_dir / "model.html").read_text(encoding="utf-8")

    assert "Mid &#34;market&#34; &lt;/option&gt;&lt;script&gt;alert(3)&lt;/script&gt;" in index
    assert "rules &lt;script&gt;alert(4)&lt;/script&gt;" in model


def test_embedded_portfolio_json_holds_every_account_with_hostile_names_intact(report_dir: Path) -> None:
    data = embedded_json((report_dir / "index.html").read_text(encoding="utf-8"), "portfolio-data")

    assert data["columns"] == list(PORTFOLIO_COLUMNS)
    rows = [dict(zip(data["columns"], row, strict=True)) for row in data["rows"]]
    assert len(rows) == 60
    assert {r["name"] for r in rows} >= {HOSTILE_ACCOUNT_NAME}
    assert HOSTILE_SEGMENT in {r["segment"] for r in rows}
    assert any(HOSTILE_EVENT_NAME in (r["reason"] or "") for r in rows) or any(
        HOSTILE_EVENT_NAME in (rec["changed"] or "") for rec in shard_records(report_dir).values()
    )


def test_arr_at_risk_is_churn_probability_times_arr(report_dir: Path) -> None:
    data = embedded_json((report_dir / "index.html").read_text(encoding="utf-8"), "portfolio-data")
    rows = pd.DataFrame(data["rows"], columns=data["columns"])

    # probabilities are rounded to 4 decimals in the page, so allow arr x 1e-4 (+1 for the rounding)
    tolerance = rows["arr"].to_numpy() * 1e-4 + 1
    assert (np.abs(rows["arr_at_risk"] - rows["churn"] * rows["arr"]) <= tolerance).all()
    assert (np.abs(rows["exp_arr"] - rows["expansion"] * rows["arr"]) <= tolerance).all()


def test_account_component_points_add_up_to_the_distance_from_50(
    report_dir: Path, sample_store: RunStore
) -> None:
    records = shard_records(report_dir)
    reasons = sample_store.read_reasons("latest")
    raw = 50 + reasons[reasons["model"] == "churn"].groupby("account_id")["pes_points"].sum()

    assert set(records) == set(sample_store.read_scores("latest")["account_id"])
    for account_id, record in records.items():
        total = 50 + sum(record["groups"])
        np.testing.assert_allclose(total, raw[account_id], atol=0.05 * len(record["groups"]))
        assert len(record["trend"]) == 3
        assert record["trend"][-1] == pytest.approx(record["pes"], abs=0.051)
        assert 1 <= len(record["reasons"]) <= 3
        assert len(record["features"]) == 6


def test_account_reasons_are_those_of_explain_top_reasons(report_dir: Path, sample_store: RunStore) -> None:
    reasons = sample_store.read_reasons("latest")
    records = shard_records(report_dir)
    for model, key in (("churn", "reasons"), ("expansion", "xreasons")):
        rows = reasons[reasons["model"] == model]
        expected = top_reasons(rows, feature_specs_for(rows["feature"], {"event_types": EVENT_TYPES}), k=3)
        for account_id, group in expected.groupby("account_id"):
            got = records[account_id][key]
            assert [sentence for sentence, _ in got] == group["sentence"].tolist()
            np.testing.assert_allclose([p for _, p in got], group["pes_points"], atol=0.05)


def test_reason_points_have_the_sign_their_sentence_says(report_dir: Path) -> None:
    for record in shard_records(report_dir).values():
        for sentence, points in record["reasons"]:
            assert ("lowers churn risk" in sentence) == (points > 0), sentence


def test_account_first_scored_in_the_latest_run_has_a_gap_in_its_trend(report_dir: Path) -> None:
    newest = shard_records(report_dir)["acc-000059"]  # the sample leaves the last 2% out of run 1

    assert newest["trend"][0] is None
    assert newest["trend"][1] is not None


def test_key_features_show_the_healthy_median_of_the_segment(
    report_dir: Path, sample_store: RunStore
) -> None:
    scores = sample_store.read_scores("latest")
    reasons = sample_store.read_reasons("latest")
    churn = reasons[reasons["model"] == "churn"].merge(
        scores[["account_id", "segment", "tier"]], on="account_id"
    )
    units = {spec.name: spec.unit for spec in CATALOG}
    segment = scores.set_index("account_id").loc["acc-000005", "segment"]
    healthy = churn[(churn["segment"] == segment) & churn["tier"].isin(["healthy", "expand"])]

    features = shard_records(report_dir)["acc-000005"]["features"]

    numeric = [f for f in features if units.get(f[0], "count") != "category"]
    assert numeric
    for feature, _value, median_text, _points in numeric:
        median = pd.to_numeric(healthy.loc[healthy["feature"] == feature, "value"]).median()
        assert median_text == format_value(float(median), units.get(feature, "count"))


def test_summary_shows_the_five_accounts_most_at_risk_first(report_dir: Path, sample_store: RunStore) -> None:
    scores = sample_store.read_scores("latest").sort_values("churn_probability", ascending=False)
    html = (report_dir / "index.html").read_text(encoding="utf-8")
    section = html.split('id="most-at-risk"')[1].split("</section>")[0]
    linked = re.findall(r'href="account.html#([^"]+)"', section)

    assert linked == scores["account_id"].head(5).tolist()


def test_tier_cards_count_every_account(report_dir: Path, sample_store: RunStore) -> None:
    html = (report_dir / "index.html").read_text(encoding="utf-8")
    counts = dict(re.findall(r'data-tier-count="(\w+)">([\d,]+)<', html))
    expected = sample_store.read_scores("latest")["tier"].value_counts()

    assert {k: int(v) for k, v in counts.items()} == expected.to_dict()


def test_model_page_shows_versions_evaluation_calibration_and_how_to_read(report_dir: Path) -> None:
    html = (report_dir / "model.html").read_text(encoding="utf-8")

    assert 'id="how-to-read"' in html
    assert "every 10 points down doubles them" in html
    assert "name pes_churn · version 4" in html
    assert html.count('class="model-row"') == 2  # churn and expansion tables
    assert html.count('class="curve"') == 2
    assert "Training window: train as of" in html


def test_report_derives_reasons_change_and_arr_when_scores_lack_them(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    dropped = [
        "reason_1",
        "reason_2",
        "reason_3",
        "pes_delta",
        "what_changed",
        "name",
        "segment",
        "plan",
        "arr",
    ]
    for run in sample_runs(12, ("2024-05-01", "2024-06-01"), seed=3):
        scores = run.scores.drop(columns=[c for c in dropped if c in run.scores.columns])
        scores["mrr"] = 100.0
        scores["tier"] = scores["tier"].str.replace("_", "-")  # another spelling of the tiers
        store.write_run(run.as_of, scores, run.reasons, {})

    site = build_report(store, tmp_path / "site").parent
    data = embedded_json((site / "index.html").read_text(encoding="utf-8"), "portfolio-data")
    rows = pd.DataFrame(data["rows"], columns=data["columns"])
    records = shard_records(site)

    assert rows["reason"].str.endswith("churn risk").all()
    new = rows["id"] == "acc-000011"  # the sample leaves the last account out of the first run
    assert rows.loc[~new, "delta"].notna().all()
    assert rows.loc[new, "delta"].isna().all()
    assert (rows["arr"] == 1200.0).all()
    assert set(rows["tier"]) <= {"at_risk", "watch", "healthy", "expand"}
    assert records.pop("acc-000011")["changed"] is None
    assert all(r["changed"].startswith("PES ") for r in records.values())
    assert all(r["change"] for r in records.values())


def test_report_of_the_first_run_says_there_is_nothing_to_compare(
    sample_store: RunStore, tmp_path: Path
) -> None:
    first = sample_store.runs()["run_id"].iloc[0]

    site = build_report(sample_store, tmp_path / "site", run=first).parent
    html = (site / "index.html").read_text(encoding="utf-8")

    assert "This is the first run" in html
    assert "As of <strong>2024-04-01</strong>" in html
    assert all(r["changed"] is None and r["delta"] is None for r in shard_records(site).values())


def test_large_portfolio_is_split_into_shards_by_hash(sample_store: RunStore, tmp_path: Path) -> None:
    site = build_report(sample_store, tmp_path / "site", shard_size=16).parent
    shards = sorted((site / "accounts").glob("s*.js"))
    records = shard_records(site)

    assert len(shards) == 4
    for path in shards:
        number = int(path.stem[1:])
        text = path.read_text(encoding="utf-8")
        ids = json.loads(re.fullmatch(r"pesShard\(\d+,(.*)\);\n", text, re.S).group(1))
        assert all(shard_of(account, 4) == number for account in ids)
    assert len(records) == 60


def test_rebuild_replaces_an_earlier_report_but_never_a_foreign_folder(
    sample_store: RunStore, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    build_report(sample_store, site)
    (site / "stale.txt").write_text("from an older build")
    build_report(sample_store, site)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")

    assert not (site / "stale.txt").exists()
    assert (site / "index.html").exists()
    with pytest.raises(ConfigError, match="not empty and holds no pes_ml report"):
        build_report(sample_store, foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    with pytest.raises(ConfigError, match="Cannot make the report folder .*a_file/site"):
        build_report(sample_store, a_file / "site")  # a file where a folder of the path must be


def test_unknown_run_is_a_store_error(sample_store: RunStore, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="No committed run 'nope'"):
        build_report(sample_store, tmp_path / "site", run="nope")


@pytest.mark.parametrize(
    ("given", "expected"), [("at-risk", "at_risk"), ("At risk", "at_risk"), ("vip", "vip")]
)
def test_tiers_are_normalised_for_display(given: str, expected: str) -> None:
    assert normalise_tier(given) == expected


def test_cli_report_prints_the_path_of_index_html(sample_store: RunStore, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "report",
            "--store",
            str(sample_store.path),
            "--out",
            str(tmp_path / "r"),
            "--config",
            str(tmp_path / "none.yaml"),
        ],
    )

    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str((tmp_path / "r" / "index.html").resolve())


def test_cli_report_of_an_empty_store_exits_with_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "report",
            "--store",
            str(tmp_path / "empty"),
            "--out",
            str(tmp_path / "r"),
            "--config",
            str(tmp_path / "x.yaml"),
        ],
    )

    assert result.exit_code == StoreError.exit_code
    assert "holds no committed run yet" in result.output


def test_report_of_a_run_without_shap_rows_still_builds(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    run = sample_runs(5, ("2024-06-01",), seed=1)[0]
    store.write_run(run.as_of, run.scores, run.reasons.iloc[0:0], {})

    site = build_report(store, tmp_path / "site").parent
    records = shard_records(site)

    assert len(records) == 5
    assert all(r["groups"] is None and r["reasons"] == [] and r["change"] is None for r in records.values())
    assert "holds no evaluation metrics" in (site / "model.html").read_text(encoding="utf-8")


def test_model_page_reads_the_manifest_that_pes_ml_score_writes(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs")
    run = sample_runs(8, ("2024-06-01",), seed=2, hostile=True)[0]
    manifest = {
        "as_of": "2024-06-01",
        "model": {"name": "pes", "version": "7", "alias": "champion"},
        "model_metadata": {
            "catalog_version": "abc123def456",
            "event_types": ["report_export", "dashboard_share", HOSTILE_EVENT_NAME],
            "feature_names": [f"f{i}" for i in range(40)],
            "train_as_of": "2023-01-01, 2023-02-01",
            "test_as_of": "2024-01-01",
        },
        "drift": {"psi": {"events_30d": 0.04}, "warnings": {}, "errors": {}},
        "tier_thresholds": {"at_risk_churn_probability": 0.3},
        "timings_seconds": {"features": 1.5},
        "counts": {"accounts": 8, "reason_rows": 400},
    }
    store.write_run(run.as_of, run.scores, run.reasons, manifest)

    html = (build_report(store, tmp_path / "site").parent / "model.html").read_text(encoding="utf-8")

    assert "alias champion · name pes · version 7" in html
    assert "Feature catalog version</th><td>abc123def456" in html
    assert "Training window: train as of</th><td>2023-01-01, 2023-02-01" in html
    assert "see the model card (models/pes/v7.md)" in html
    assert "(40 in all)" in html
    assert "Timings seconds" in html
