"""The simulator: deterministic, well-typed, consistent tables with realistic statistical shape."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pes_ml.errors import ConfigError
from pes_ml.schemas import (
    ACCOUNT_ID,
    AUTO_RENEW,
    BILLING_PERIOD_MONTHS,
    CREATED_AT,
    DISCOUNT,
    END,
    EVENT,
    LIST_MRR,
    MRR,
    NAME,
    PLAN,
    SEATS,
    SEGMENT,
    START,
    TIMESTAMP,
    USER_ID,
    VALUE,
)
from pes_ml.simulate import EVENT_NAMES, SimulationConfig, SimulationSummary, simulate_saas
from pes_ml.simulate.calendar import add_months

UTC_US = pa.timestamp("us", tz="UTC")
DAY = pd.Timedelta(days=1)


@dataclass
class Sim:
    config: SimulationConfig
    summary: SimulationSummary
    events: pd.DataFrame
    subscriptions: pd.DataFrame
    accounts: pd.DataFrame

    @property
    def start(self) -> pd.Timestamp:
        return pd.Timestamp(self.config.start, tz="UTC")

    @property
    def end(self) -> pd.Timestamp:
        return self.start + self.config.days * DAY


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Sim:
    """540 days of 300 accounts (~1.3M events): long enough for annual renewals."""
    seed = int(os.environ.get("PES_TEST_SEED", "7"))
    config = SimulationConfig(n_accounts=300, days=540, seed=seed)
    out = tmp_path_factory.mktemp("sim")
    summary = simulate_saas(config, out)
    return Sim(
        config=config,
        summary=summary,
        events=pd.read_parquet(out / "events"),
        subscriptions=pd.read_parquet(out / "subscriptions.parquet"),
        accounts=pd.read_parquet(out / "accounts.parquet"),
    )


def _small(seed: int, **kwargs: object) -> SimulationConfig:
    return SimulationConfig(**{"n_accounts": 40, "days": 90, "seed": seed, **kwargs})  # type: ignore[arg-type]


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.parquet"))}


def _last_rows(subscriptions: pd.DataFrame) -> pd.DataFrame:
    return subscriptions.sort_values([ACCOUNT_ID, START]).groupby(ACCOUNT_ID).tail(1).set_index(ACCOUNT_ID)


# --- determinism ------------------------------------------------------------------------------
def test_same_config_gives_byte_identical_files(tmp_path: Path, seed: int) -> None:
    simulate_saas(_small(seed), tmp_path / "a")
    simulate_saas(_small(seed), tmp_path / "b")
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys()
    assert a == b


def test_different_seed_gives_different_data(tmp_path: Path, seed: int) -> None:
    simulate_saas(_small(seed), tmp_path / "a")
    simulate_saas(_small(seed + 1), tmp_path / "b")
    a = pd.read_parquet(tmp_path / "a" / "events")
    b = pd.read_parquet(tmp_path / "b" / "events")
    assert len(a) != len(b) or not a.equals(b)


def test_chunk_size_changes_the_files_but_not_the_data(tmp_path: Path, seed: int) -> None:
    big = simulate_saas(_small(seed), tmp_path / "big")
    small = simulate_saas(_small(seed, chunk_events=5000), tmp_path / "small")
    parts = sorted((tmp_path / "small" / "events").glob("part-*.parquet"))
    assert len(parts) > len(list((tmp_path / "big" / "events").glob("part-*.parquet")))
    assert all(pq.read_metadata(p).num_rows <= 5000 for p in parts)
    assert small.events == big.events
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "small" / "events"), pd.read_parquet(tmp_path / "big" / "events")
    )


def test_rerun_removes_part_files_of_a_previous_run(tmp_path: Path, seed: int) -> None:
    simulate_saas(_small(seed, chunk_events=2000), tmp_path)
    summary = simulate_saas(_small(seed, n_accounts=5), tmp_path)
    assert len(pd.read_parquet(tmp_path / "events")) == summary.events


# --- schemas ----------------------------------------------------------------------------------
def test_events_have_string_ids_and_utc_microsecond_timestamps(sim: Sim) -> None:
    schema = pq.read_schema(next((sim.summary.out_dir / "events").glob("part-*.parquet")))
    assert schema.names == [ACCOUNT_ID, USER_ID, EVENT, TIMESTAMP, VALUE]
    assert [schema.field(c).type for c in schema.names] == [
        pa.string(), pa.string(), pa.string(), UTC_US, pa.float64()
    ]  # fmt: skip
    assert str(sim.events[TIMESTAMP].dtype) == "datetime64[us, UTC]"
    for column in (ACCOUNT_ID, USER_ID, EVENT):
        assert sim.events[column].dtype == "str"
        assert sim.events[column].notna().all()


def test_subscriptions_and_accounts_have_the_contract_columns(sim: Sim) -> None:
    subs = pq.read_schema(sim.summary.out_dir / "subscriptions.parquet")
    assert {subs.field(c).type for c in (START, END)} == {UTC_US}
    assert subs.names == [ACCOUNT_ID, START, END, MRR, LIST_MRR, SEATS, PLAN, BILLING_PERIOD_MONTHS,
                          DISCOUNT, AUTO_RENEW]  # fmt: skip
    assert subs.field(AUTO_RENEW).type == pa.bool_()
    accounts = pq.read_schema(sim.summary.out_dir / "accounts.parquet")
    assert accounts.names == [ACCOUNT_ID, NAME, CREATED_AT, PLAN, SEGMENT, SEATS, "industry"]
    assert accounts.field(CREATED_AT).type == UTC_US
    assert sim.accounts[NAME].str.contains(r"^[A-Z][a-z]+ [A-Z][a-z]+", regex=True).all()
    assert set(sim.accounts[SEGMENT]) == {"smb", "mid_market", "enterprise"}


def test_ids_follow_the_documented_format(sim: Sim) -> None:
    assert sim.accounts[ACCOUNT_ID].str.fullmatch(r"acc_\d{6}").all()
    assert sim.accounts[ACCOUNT_ID].is_unique
    users = pd.Series(sim.events[USER_ID].unique())
    assert users.str.fullmatch(r"u_\d{6}_\d{3,}").all()
    # a user id names its account
    pairs = sim.events[[ACCOUNT_ID, USER_ID]].drop_duplicates()
    assert (pairs[USER_ID].str.slice(2, 8) == pairs[ACCOUNT_ID].str.slice(4, 10)).all()


def test_value_is_set_only_for_nps_answers_and_exports(sim: Sim) -> None:
    valued = sim.events[sim.events[VALUE].notna()]
    assert set(valued[EVENT]) == {"nps_response", "export"}
    assert (sim.events.loc[sim.events[EVENT].isin(["nps_response", "export"]), VALUE].notna()).all()
    nps = valued.loc[valued[EVENT] == "nps_response", VALUE]
    assert nps.between(0, 10).all()
    assert (nps == nps.round()).all()
    assert nps.nunique() >= 5
    assert (valued.loc[valued[EVENT] == "export", VALUE] >= 0).all()
    assert sim.events[VALUE].isna().mean() > 0.9


def test_uses_five_core_and_ten_peripheral_events(sim: Sim) -> None:
    counts = sim.events[EVENT].value_counts()
    assert set(counts.index) == set(EVENT_NAMES)
    peripheral = counts.drop(["login", "nps_response", "dashboard_view", "query_run", "report_create",
                              "share", "integration_sync"])  # fmt: skip
    # heavy-tailed popularity: the most used peripheral event is far more common than the least
    assert peripheral.max() > 8 * peripheral.min()


# --- time and membership ----------------------------------------------------------------------
def test_events_fall_within_the_range_and_belong_to_known_accounts(sim: Sim) -> None:
    ts = sim.events[TIMESTAMP]
    assert ts.min() >= sim.start
    assert ts.max() < sim.end
    assert set(sim.events[ACCOUNT_ID]) <= set(sim.accounts[ACCOUNT_ID])
    assert set(sim.subscriptions[ACCOUNT_ID]) == set(sim.accounts[ACCOUNT_ID])


def test_accounts_are_created_over_time(sim: Sim) -> None:
    created = sim.accounts[CREATED_AT]
    assert created.min() >= sim.start
    assert created.max() < sim.end
    month = created.dt.strftime("%Y-%m")
    assert month.nunique() >= 8
    # a launch cohort, then a steady stream: no month holds most of the accounts
    assert month.value_counts().max() < 0.5 * len(created)


def test_no_event_before_the_first_subscription_or_at_or_after_churn(sim: Sim) -> None:
    # No tolerance: users of a churned account stop at 00:00 UTC of the end date.
    first_start = sim.subscriptions.groupby(ACCOUNT_ID)[START].min()
    last = _last_rows(sim.subscriptions)
    ended = last[END].dropna()
    per_account = sim.events.groupby(ACCOUNT_ID)[TIMESTAMP].agg(["min", "max"])
    assert (per_account["min"] >= first_start.reindex(per_account.index)).all()
    closed = per_account.join(ended, how="inner")
    assert len(closed) > 20
    assert (closed["max"] < closed[END]).all()
    created = sim.accounts.set_index(ACCOUNT_ID)[CREATED_AT]
    assert (first_start > created.reindex(first_start.index)).all()


# --- subscriptions ----------------------------------------------------------------------------
def test_subscriptions_are_well_formed(sim: Sim) -> None:
    subs = sim.subscriptions.sort_values([ACCOUNT_ID, START])
    closed = subs[subs[END].notna()]
    assert (closed[END] > closed[START]).all()
    assert (subs[START] >= sim.start).all()
    assert (closed[END] < sim.end).all()
    nxt = subs.groupby(ACCOUNT_ID)[START].shift(-1)
    has_next = nxt.notna()
    # rows of an account never overlap and follow each other without a gap
    assert (subs.loc[has_next, END] == nxt[has_next]).all()
    assert subs.loc[~has_next, END].isna().any()
    assert subs.groupby(ACCOUNT_ID)[END].apply(lambda e: e.isna().sum() <= 1).all()
    np.testing.assert_allclose(subs[MRR], subs[LIST_MRR] * (1 - subs[DISCOUNT]), atol=0.011)
    assert subs[DISCOUNT].between(0, 0.3).all()
    assert set(subs[BILLING_PERIOD_MONTHS]) == {1, 12}
    assert (subs[SEATS] >= 1).all()
    assert subs[AUTO_RENEW].any()
    assert (~subs[AUTO_RENEW]).any()


def test_trials_are_fourteen_days_free_and_some_convert(sim: Sim) -> None:
    subs = sim.subscriptions.sort_values([ACCOUNT_ID, START])
    trials = subs[subs[PLAN] == "trial"]
    assert 0.08 < len(trials) / len(sim.accounts) < 0.25
    assert (trials[MRR] == 0).all()
    done = trials[trials[END].notna()]
    assert ((done[END] - done[START]) == 14 * DAY).all()
    converted = done[ACCOUNT_ID].isin(subs.loc[(subs[PLAN] != "trial"), ACCOUNT_ID])
    assert 0 < converted.sum() < len(done)
    assert sim.summary.trials_converted == converted.sum()
    # a trial is always the first row of its account
    first = subs.groupby(ACCOUNT_ID).head(1)
    assert set(trials[ACCOUNT_ID]) == set(first.loc[first[PLAN] == "trial", ACCOUNT_ID])


def test_paying_churn_rate_per_year_is_in_the_target_range(sim: Sim) -> None:
    subs = sim.subscriptions
    paying = subs[subs[PLAN] != "trial"]
    last = _last_rows(subs)
    churned = last[last[END].notna() & (last[PLAN] != "trial")]
    years = ((paying[END].fillna(sim.end) - paying[START]).dt.days.sum()) / 365.25
    rate = len(churned) / years
    assert 0.10 <= rate <= 0.30
    assert sim.summary.churned == len(churned)
    np.testing.assert_allclose(sim.summary.churn_rate_per_year, rate, rtol=1e-6)


def test_annual_contracts_churn_mostly_at_renewal(sim: Sim) -> None:
    last = _last_rows(sim.subscriptions)
    annual = last[last[END].notna() & (last[BILLING_PERIOD_MONTHS] == 12)]
    assert len(annual) >= 3
    at_renewal = [
        end.normalize() in {pd.Timestamp(start) + pd.DateOffset(months=12 * k) for k in range(1, 4)}
        for start, end in zip(annual[START], annual[END], strict=True)
    ]
    assert np.mean(at_renewal) > 0.5
    monthly = last[last[END].notna() & (last[BILLING_PERIOD_MONTHS] == 1) & (last[PLAN] != "trial")]
    at_month = [
        any(end == pd.Timestamp(start) + pd.DateOffset(months=k) for k in range(1, 30))
        for start, end in zip(monthly[START], monthly[END], strict=True)
    ]
    assert np.mean(at_month) == 1.0


def test_expansions_happen_as_new_rows_with_more_seats_or_a_higher_plan(sim: Sim) -> None:
    subs = sim.subscriptions.sort_values([ACCOUNT_ID, START])
    paying = subs[subs[PLAN] != "trial"].copy()
    prev = paying.groupby(ACCOUNT_ID)[[LIST_MRR, SEATS]].shift(1)
    expanded = (paying[LIST_MRR] > prev[LIST_MRR]) & prev[LIST_MRR].notna()
    assert expanded.sum() == sim.summary.expansions
    assert 0.05 <= sim.summary.expansion_rate_per_year <= 0.30
    assert (paying.loc[expanded, SEATS] >= prev.loc[expanded, SEATS]).all()


def test_add_months_clips_to_the_end_of_the_month() -> None:
    base = np.datetime64("2024-01-01")
    jan31 = np.array([30])
    got = base + add_months(base, np.repeat(jan31, 3), np.array([1, 2, 13])).astype("timedelta64[D]")
    assert got.tolist() == [np.datetime64("2024-02-29").item(), np.datetime64("2024-03-31").item(),
                            np.datetime64("2025-02-28").item()]  # fmt: skip


# --- statistical shape ------------------------------------------------------------------------
def test_events_per_user_are_heavy_tailed(sim: Sim) -> None:
    per_user = sim.events[USER_ID].value_counts().to_numpy()
    top = per_user[: max(1, len(per_user) // 10)].sum()
    assert top / per_user.sum() > 0.35


def test_weekends_are_quieter_than_weekdays(sim: Sim) -> None:
    per_day = sim.events.groupby(sim.events[TIMESTAMP].dt.floor("D")).size()
    weekend = per_day.index.day_of_week >= 5
    assert per_day[weekend].mean() < 0.6 * per_day[~weekend].mean()


def test_accounts_have_several_users_sized_by_segment(sim: Sim) -> None:
    users = sim.events.groupby(ACCOUNT_ID)[USER_ID].nunique()
    segment = sim.accounts.set_index(ACCOUNT_ID)[SEGMENT]
    by_segment = users.groupby(segment.reindex(users.index)).median()
    assert by_segment["smb"] < by_segment["mid_market"] < by_segment["enterprise"]
    assert users.median() >= 3


def test_churned_accounts_lose_active_users_before_churn(sim: Sim) -> None:
    """Active user-days in the 4 weeks before churn vs the 4 weeks before that, against
    retained paying accounts over the last 8 weeks of the simulation."""
    last = _last_rows(sim.subscriptions)
    last = last[last[PLAN] != "trial"]
    reference = last[END].fillna(sim.end)
    events = sim.events.join(reference.rename("ref"), on=ACCOUNT_ID, how="inner")
    age = (events["ref"] - events[TIMESTAMP]) / DAY
    events = events.assign(
        day=events[TIMESTAMP].dt.floor("D"), recent=age <= 28, prior=(age > 28) & (age <= 56)
    )
    active_days = events.drop_duplicates([ACCOUNT_ID, USER_ID, "day"])
    counts = active_days.groupby(ACCOUNT_ID)[["recent", "prior"]].sum()
    counts = counts[counts["prior"] > 0]
    trend = np.log((counts["recent"] + 1) / (counts["prior"] + 1))
    churned = last[END].notna().reindex(trend.index)
    assert churned.sum() >= 10
    assert trend[churned].mean() < trend[~churned].mean() - 0.15


def test_summary_counts_match_the_files(sim: Sim) -> None:
    s = sim.summary
    assert s.events == len(sim.events)
    assert s.accounts == len(sim.accounts) == 300
    assert s.users >= sim.events[USER_ID].nunique()
    assert s.trials == (sim.accounts[PLAN] == "trial").sum()
    text = s.describe()
    for word in ("accounts", "users", "events", "churned", "expanded", "converted", "part files"):
        assert word in text
    assert f"{s.events:,}" in text


# --- config -----------------------------------------------------------------------------------
def test_config_rejects_bad_values_with_a_clear_message() -> None:
    with pytest.raises(ConfigError, match=r"'n_accounts' parameter of SimulationConfig must be an int"):
        SimulationConfig(n_accounts=0)
    with pytest.raises(ConfigError, match=r"'start' parameter .* 'YYYY-MM-DD'. Got '2024/01/01'"):
        SimulationConfig(start="2024/01/01")
    with pytest.raises(ConfigError, match=r"'start' parameter .* past date from 1990-01-01 on"):
        SimulationConfig(start="2500-01-01")  # validation would quarantine every event
    with pytest.raises(ConfigError, match=r"'start' parameter .* past date from 1990-01-01 on"):
        SimulationConfig(start="1600-01-01")
    with pytest.raises(ConfigError, match=r"'trial_share' parameter"):
        SimulationConfig(trial_share=1.5)
    with pytest.raises(ConfigError, match="expects a SimulationConfig"):
        simulate_saas({"n_accounts": 3}, "unused")  # type: ignore[arg-type]


def test_for_target_events_sizes_the_run(tmp_path: Path, seed: int) -> None:
    # ~450 accounts: per-account volume is heavy-tailed (enterprise), so allow +-30%
    config = SimulationConfig.for_target_events(2_000_000, seed=seed)
    summary = simulate_saas(config, tmp_path)
    assert 0.7 * 2_000_000 < summary.events < 1.3 * 2_000_000


def test_cli_simulate_writes_the_three_tables(tmp_path: Path) -> None:
    from pes_ml.cli import app

    result = CliRunner().invoke(app, ["simulate", "--out", str(tmp_path), "--accounts", "20", "--days", "60"])
    assert result.exit_code == 0, result.output
    assert "20 accounts" in result.output
    assert (tmp_path / "subscriptions.parquet").is_file()
    assert (tmp_path / "accounts.parquet").is_file()
    assert list((tmp_path / "events").glob("part-*.parquet"))


def test_the_command_turns_a_bad_option_into_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pes_ml.cli import app

    result = CliRunner().invoke(app, ["simulate", "--out", str(tmp_path / "sim"), "--days", "10"])
    assert result.exit_code == 2, result.output
    assert "'days' parameter of SimulationConfig must be an int in [28, 3650]. Got 10" in result.output
    assert isinstance(result.exception, SystemExit)  # no traceback
