"""Run a simulation: draw accounts, simulate them batch by batch, write the three tables."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from pes_ml.errors import ConfigError
from pes_ml.progress import NoProgress, Progress
from pes_ml.schemas import (
    ACCOUNT_ID,
    AUTO_RENEW,
    BILLING_PERIOD_MONTHS,
    CREATED_AT,
    DISCOUNT,
    END,
    LIST_MRR,
    MRR,
    NAME,
    PLAN,
    SEATS,
    SEGMENT,
    START,
)
from pes_ml.simulate.accounts import AccountDraws, company_names, draw_accounts
from pes_ml.simulate.batch import BatchResult, BatchSimulator
from pes_ml.simulate.config import INDUSTRIES, PLAN_PRICES, PLANS, SEGMENTS, TRIAL_PLAN, SimulationConfig
from pes_ml.simulate.writer import UTC_US, EventWriter, write_table

logger = logging.getLogger(__name__)

INDUSTRY = "industry"


@dataclass(frozen=True)
class SimulationSummary:
    """What a simulation wrote, with the rates it produced.

    ``churned`` counts paying accounts that ended (trials that did not convert are
    counted apart); ``churn_rate_per_year`` and ``expansion_rate_per_year`` are
    per paying account-year of exposure.
    """

    out_dir: Path
    accounts: int
    users: int
    events: int
    trials: int
    trials_converted: int
    paying_accounts: int
    churned: int
    expanded: int
    expansions: int
    contractions: int
    paying_years: float
    seconds: float
    files: tuple[Path, ...] = field(default_factory=tuple)

    @property
    def churn_rate_per_year(self) -> float:
        """Paying accounts churned per paying account-year."""
        return self.churned / self.paying_years if self.paying_years else 0.0

    @property
    def expansion_rate_per_year(self) -> float:
        """Expansions (seat or plan increases) per paying account-year."""
        return self.expansions / self.paying_years if self.paying_years else 0.0

    @property
    def events_per_second(self) -> float:
        """Throughput of the whole run, writing included."""
        return self.events / self.seconds if self.seconds else 0.0

    def describe(self) -> str:
        """A human-readable multi-line summary."""
        events_files = sum(1 for f in self.files if f.parent.name == "events")
        lines = [
            f"Simulated {self.accounts:,} accounts, {self.users:,} users, {self.events:,} events "
            f"in {self.seconds:.1f} s ({self.events_per_second:,.0f} events/s)",
            f"  trials: {self.trials:,} ({self.trials_converted:,} converted to paying)",
            f"  paying accounts: {self.paying_accounts:,} over {self.paying_years:,.0f} account-years",
            f"  churned: {self.churned:,} ({self.churn_rate_per_year:.1%} per account-year)",
            f"  expanded: {self.expanded:,} accounts, {self.expansions:,} expansions "
            f"({self.expansion_rate_per_year:.1%} per account-year); {self.contractions:,} contractions",
            f"  files: {self.out_dir / 'events'}/ ({events_files} part files), "
            + ", ".join(str(f) for f in self.files if f.parent.name != "events"),
        ]
        return "\n".join(lines)


def simulate_saas(
    config: SimulationConfig, out_dir: str | Path, progress: Progress | None = None
) -> SimulationSummary:
    """Simulate a B2B SaaS product and write events, subscriptions and accounts as Parquet.

    Writes ``out_dir/events/part-NNNNN.parquet`` (old part files there are removed),
    ``out_dir/subscriptions.parquet`` and ``out_dir/accounts.parquet``. Memory is
    bounded by ``config.batch_accounts`` and ``config.chunk_events``, not by the size
    of the run. The same config gives byte-identical files.

    Parameters
    ----------
    config
        The simulation's parameters (seed included).
    out_dir
        Folder to write to (created if missing).
    progress
        Told about each batch of accounts; default: report nothing.

    Returns
    -------
    SimulationSummary
        Counts, rates and the files written.

    Raises
    ------
    ConfigError
        If ``config`` is not a :class:`SimulationConfig`.

    Examples
    --------
    >>> from pes_ml.simulate import SimulationConfig, simulate_saas
    >>> summary = simulate_saas(SimulationConfig(n_accounts=50, days=90), "data/sim")  # doctest: +SKIP
    >>> print(summary.describe())  # doctest: +SKIP
    """
    if not isinstance(config, SimulationConfig):
        raise ConfigError(f"simulate_saas expects a SimulationConfig. Got {type(config).__name__} instead.")
    progress = progress or NoProgress()
    began = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    logger.info("Simulating %d accounts over %d days from %s (seed %d)",
                config.n_accounts, config.days, config.start, config.seed)  # fmt: skip

    n_batches = -(-config.n_accounts // config.batch_accounts)
    seeds = np.random.SeedSequence(config.seed).spawn(n_batches + 2)
    draws = draw_accounts(config, np.random.default_rng(seeds[0]))
    writer = EventWriter(out / "events", config.chunk_events, config.compression)
    progress.start("Simulating accounts", total=config.n_accounts)
    results: list[BatchResult] = []
    try:
        results = _run_batches(config, draws, seeds, writer, progress)
    finally:
        writer.close()

    names = company_names(config.n_accounts, np.random.default_rng(seeds[1]))
    accounts_path = write_table(_accounts_table(config, draws, names), out / "accounts.parquet")
    rows = {k: np.concatenate([r.rows[k] for r in results]) for k in results[0].rows}
    subs_path = write_table(_subscriptions_table(config, rows), out / "subscriptions.parquet")

    paying = rows["plan"] != TRIAL_PLAN
    ends = np.where(rows["end"] < 0, config.days, rows["end"])
    expansions = np.concatenate([r.expansions for r in results])
    summary = SimulationSummary(
        out_dir=out,
        accounts=config.n_accounts,
        users=sum(r.n_users for r in results),
        events=writer.n_events,
        trials=int(draws.trial.sum()),
        trials_converted=int(sum(r.converted.sum() for r in results)),
        paying_accounts=int(np.unique(rows["acc"][paying]).size),
        churned=int(sum(r.churned.sum() for r in results)),
        expanded=int((expansions > 0).sum()),
        expansions=int(expansions.sum()),
        contractions=int(sum(r.contractions.sum() for r in results)),
        paying_years=float((ends - rows["start"])[paying].sum() / 365.25),
        seconds=time.perf_counter() - began,
        files=(*writer.files, subs_path, accounts_path),
    )
    logger.info("%s", summary.describe().splitlines()[0])
    return summary


def _run_batches(
    config: SimulationConfig,
    draws: AccountDraws,
    seeds: list[np.random.SeedSequence],
    writer: EventWriter,
    progress: Progress,
) -> list[BatchResult]:
    results = []
    n_batches = len(seeds) - 2
    for b in range(n_batches):
        lo = b * config.batch_accounts
        hi = min(lo + config.batch_accounts, config.n_accounts)
        sim = BatchSimulator(
            config, draws.take(slice(lo, hi)), lo, np.random.default_rng(seeds[b + 2]), writer
        )
        result = sim.run()
        result.rows["acc"] = result.rows["acc"].astype(np.int64) + lo
        results.append(result)
        logger.debug("Batch %d/%d: accounts %d-%d, %d events so far", b + 1, n_batches, lo, hi - 1,
                     writer.n_events)  # fmt: skip
        progress.advance(hi - lo)
    return results


def _micros(
    config: SimulationConfig,
    day: np.ndarray,
    second: np.ndarray | float = 0.0,
    null: np.ndarray | None = None,
) -> pa.Array:
    base = np.datetime64(config.start, "D").astype("datetime64[us]").view(np.int64)
    micros = base + day.astype(np.int64) * 86_400_000_000 + np.rint(np.asarray(second) * 1e6).astype(np.int64)
    return pa.array(micros, type=UTC_US, mask=null)


def _accounts_table(config: SimulationConfig, draws: AccountDraws, names: list[str]) -> pa.Table:
    n = len(draws)
    initial_plan = np.where(draws.trial, TRIAL_PLAN, draws.paid_plan)
    return pa.table(
        {
            ACCOUNT_ID: pa.array([f"acc_{i:06d}" for i in range(n)], pa.string()),
            NAME: pa.array(names, pa.string()),
            CREATED_AT: _micros(config, draws.created_day, draws.created_second),
            PLAN: pa.array(np.asarray(PLANS)[initial_plan], pa.string()),
            SEGMENT: pa.array(np.asarray(SEGMENTS)[draws.segment], pa.string()),
            SEATS: pa.array(draws.seats, pa.int64()),
            INDUSTRY: pa.array(np.asarray(INDUSTRIES)[draws.industry], pa.string()),
        }
    )


def _subscriptions_table(config: SimulationConfig, rows: dict[str, np.ndarray]) -> pa.Table:
    order = np.lexsort((rows["start"], rows["acc"]))
    r = {k: v[order] for k, v in rows.items()}
    plan = r["plan"].astype(np.int64)
    seats = r["seats"].astype(np.int64)
    list_mrr = (seats * np.asarray(PLAN_PRICES)[plan]).round(2)
    discount = r["discount"].astype(np.float64)
    return pa.table(
        {
            ACCOUNT_ID: pa.array([f"acc_{i:06d}" for i in r["acc"].tolist()], pa.string()),
            START: _micros(config, r["start"]),
            END: _micros(config, np.maximum(r["end"], 0), null=r["end"] < 0),
            MRR: pa.array((list_mrr * (1.0 - discount)).round(2), pa.float64()),
            LIST_MRR: pa.array(list_mrr, pa.float64()),
            SEATS: pa.array(seats, pa.int64()),
            PLAN: pa.array(np.asarray(PLANS)[plan], pa.string()),
            BILLING_PERIOD_MONTHS: pa.array(np.where(r["annual"].astype(bool), 12, 1), pa.int64()),
            DISCOUNT: pa.array(discount, pa.float64()),
            AUTO_RENEW: pa.array(r["auto_renew"].astype(bool), pa.bool_()),
        }
    )
