"""Draw the accounts of a simulation: who they are, when they sign up, what they buy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pes_ml.simulate.config import (
    INDUSTRIES,
    INDUSTRY_CHURN,
    SEGMENT_ANNUAL,
    SEGMENT_PLANS,
    SEGMENT_SEATS,
    SEGMENT_SHARES,
    SimulationConfig,
)

_NAME_FIRST = (
    "Blue", "North", "Silver", "Bright", "Cedar", "Granite", "Harbor", "Summit", "Maple", "River",
    "Copper", "Pioneer", "Quantum", "Lumen", "Atlas", "Beacon", "Crescent", "Evergreen", "Falcon",
    "Golden", "Horizon", "Iron", "Juniper", "Keystone", "Lakeside", "Meridian", "Nimbus", "Oak",
    "Pinnacle", "Redwood", "Sterling", "Tidal", "Vertex", "Willow", "Zenith", "Aurora", "Bluebird",
    "Cobalt", "Driftwood", "Ember",
)  # fmt: skip
_NAME_SECOND = (
    "Analytics", "Labs", "Systems", "Logistics", "Health", "Partners", "Works", "Dynamics",
    "Networks", "Solutions", "Foods", "Capital", "Media", "Robotics", "Energy", "Learning",
    "Retail", "Studios", "Bio", "Freight", "Software", "Data", "Realty", "Foundry",
)  # fmt: skip
_NAME_SUFFIX = ("Inc.", "LLC", "Ltd", "GmbH", "Co.", "Group", "", "", "", "")


@dataclass(frozen=True)
class AccountDraws:
    """Per-account attributes drawn up front (O(accounts) memory), in creation order."""

    created_day: np.ndarray  # int64 day index of signup; the subscription starts the next day
    created_second: np.ndarray  # float64 second of the signup day
    segment: np.ndarray  # int8 index into SEGMENTS
    industry: np.ndarray  # int8 index into INDUSTRIES
    industry_churn: np.ndarray  # float64 extra churn log-odds
    seats: np.ndarray  # int64 initial seats
    paid_plan: np.ndarray  # int8 index into PLANS (never trial)
    annual: np.ndarray  # bool: billed every 12 months
    discount: np.ndarray  # float64 in [0, 0.3]
    auto_renew: np.ndarray  # bool
    trial: np.ndarray  # bool: starts on a 14-day trial
    health: np.ndarray  # float64 long-run account health (log-odds of activity)
    peak_second: np.ndarray  # float64 busiest second of the day in UTC (the account's time zone)

    def __len__(self) -> int:
        return int(self.created_day.size)

    def take(self, sl: slice) -> AccountDraws:
        """The accounts in ``sl`` (a view, no copy)."""
        return AccountDraws(**{k: v[sl] for k, v in self.__dict__.items()})


def draw_accounts(config: SimulationConfig, rng: np.random.Generator) -> AccountDraws:
    """Draw every account's attributes, sorted by signup day.

    A launch cohort (a quarter of the accounts) signs up in the first 30 days;
    the rest sign up uniformly until 85% of the range, so every as_of date has
    a mix of tenures and later cohorts are still observed for a while.
    """
    n = config.n_accounts
    last = max(2, int(config.days * 0.85))
    launch = rng.random(n) < 0.25
    created = np.where(launch, rng.integers(0, min(30, last), n), rng.integers(0, last, n))
    created = np.sort(created).astype(np.int64)
    created_second = rng.normal(13.5 * 3600, 3 * 3600, n).clip(0, 86399)

    segment = rng.choice(len(SEGMENT_SHARES), size=n, p=SEGMENT_SHARES).astype(np.int8)
    seats = np.empty(n, dtype=np.int64)
    paid_plan = np.empty(n, dtype=np.int8)
    for k, (median, sigma, low, high) in enumerate(SEGMENT_SEATS):
        idx = np.flatnonzero(segment == k)
        seats[idx] = np.rint(median * rng.lognormal(0.0, sigma, idx.size)).clip(low, high)
        paid_plan[idx] = 1 + rng.choice(4, size=idx.size, p=SEGMENT_PLANS[k])
    annual = rng.random(n) < np.asarray(SEGMENT_ANNUAL)[segment]
    promo = rng.random(n) < 0.2
    discount = np.where(
        annual,
        np.where(segment == 2, rng.uniform(0.15, 0.30, n), rng.uniform(0.08, 0.20, n)),
        np.where(promo, rng.uniform(0.05, 0.15, n), 0.0),
    ).round(2)
    auto_renew = rng.random(n) < np.where(annual, 0.75, 0.97)
    trial = rng.random(n) < config.trial_share
    industry = rng.integers(0, len(INDUSTRIES), n).astype(np.int8)
    health = rng.normal(0.0, 0.45, n) + np.where(segment == 2, 0.2, 0.0)
    # Time zones: most accounts around Europe/Americas office hours, in UTC.
    peak = rng.choice([9.5, 14.0, 18.0, 2.0], size=n, p=[0.3, 0.3, 0.3, 0.1]) * 3600
    return AccountDraws(
        created_day=created,
        created_second=created_second,
        segment=segment,
        industry=industry,
        industry_churn=np.asarray(INDUSTRY_CHURN)[industry],
        seats=seats,
        paid_plan=paid_plan,
        annual=annual,
        discount=discount,
        auto_renew=auto_renew,
        trial=trial,
        health=health,
        peak_second=peak + rng.normal(0, 1800, n),
    )


def company_names(n: int, rng: np.random.Generator) -> list[str]:
    """Readable company-like names ("Cedar Analytics Inc."); repeats are possible, as in real CRMs."""
    first = rng.integers(0, len(_NAME_FIRST), n)
    second = rng.integers(0, len(_NAME_SECOND), n)
    suffix = rng.integers(0, len(_NAME_SUFFIX), n)
    return [
        f"{_NAME_FIRST[a]} {_NAME_SECOND[b]} {_NAME_SUFFIX[c]}".rstrip()
        for a, b, c in zip(first.tolist(), second.tolist(), suffix.tolist(), strict=True)
    ]
