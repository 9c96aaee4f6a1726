"""The simulator's configuration and its product catalog (events, plans, segments)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from datetime import date
from typing import Any, Final

from pes_ml.errors import ConfigError

# --- the product: events -------------------------------------------------------------------
LOGIN: Final = "login"
CORE_EVENTS: Final = ("dashboard_view", "query_run", "report_create", "share", "integration_sync")
PERIPHERAL_EVENTS: Final = (
    "search",
    "filter_apply",
    "comment_add",
    "export",
    "alert_create",
    "template_use",
    "api_call",
    "invite_user",
    "settings_update",
    "help_view",
)
NPS_RESPONSE: Final = "nps_response"
#: Event codes: 0 = login, 1..5 = core, 6..15 = peripheral, 16 = nps_response.
EVENT_NAMES: Final = (LOGIN, *CORE_EVENTS, *PERIPHERAL_EVENTS, NPS_RESPONSE)
SESSION_EVENTS: Final = (*CORE_EVENTS, *PERIPHERAL_EVENTS)
LOGIN_CODE: Final = 0
NPS_CODE: Final = len(EVENT_NAMES) - 1
EXPORT_CODE: Final = EVENT_NAMES.index("export")
#: Share of an adopted core event in a session (before each user's own taste).
CORE_WEIGHTS: Final = (0.30, 0.22, 0.10, 0.05, 0.06)
#: Peripheral popularity is Zipf-like: a few are common, most are rare.
PERIPHERAL_WEIGHTS: Final = tuple(0.10 / (k**1.3) for k in range(1, len(PERIPHERAL_EVENTS) + 1))
#: Chance per active day that a user starts using each core event (times the user's aptitude).
#: dashboard_view is adopted on the first day.
CORE_ADOPTION_RATES: Final = (1.0, 0.10, 0.04, 0.02, 0.012)

# --- the business: plans, segments, industries ---------------------------------------------
PLANS: Final = ("trial", "starter", "team", "business", "enterprise")
TRIAL_PLAN: Final = 0
#: List price per seat per month, by plan.
PLAN_PRICES: Final = (0.0, 12.0, 25.0, 45.0, 70.0)
SEGMENTS: Final = ("smb", "mid_market", "enterprise")
SEGMENT_SHARES: Final = (0.62, 0.28, 0.10)
#: Initial seats: log-normal median and sigma, and bounds, by segment.
SEGMENT_SEATS: Final = ((5.0, 0.55, 1, 30), (24.0, 0.40, 8, 120), (80.0, 0.45, 35, 500))
#: Initial paid plan probabilities (starter, team, business, enterprise) by segment.
SEGMENT_PLANS: Final = ((0.55, 0.45, 0.0, 0.0), (0.0, 0.5, 0.5, 0.0), (0.0, 0.0, 0.3, 0.7))
#: Probability of annual billing by segment.
SEGMENT_ANNUAL: Final = (0.25, 0.55, 0.85)
INDUSTRIES: Final = (
    "software",
    "financial_services",
    "healthcare",
    "retail",
    "manufacturing",
    "education",
    "media",
    "logistics",
    "real_estate",
    "nonprofit",
)
#: Extra churn log-odds by industry: a weak, real signal in the accounts table.
INDUSTRY_CHURN: Final = (-0.15, -0.2, -0.1, 0.3, 0.0, 0.35, 0.2, 0.0, 0.1, 0.25)
TRIAL_DAYS: Final = 14

#: Measured at the defaults (seed 7, 540 days): events per account per simulated day.
#: ``SimulationConfig.for_target_events`` uses it to size a run.
EVENTS_PER_ACCOUNT_DAY: Final = 9.4


@dataclass(frozen=True)
class SimulationConfig:
    """Everything that shapes a simulated SaaS dataset; the same config gives the same bytes.

    Parameters
    ----------
    n_accounts
        Accounts to simulate. The volume of events grows linearly with it:
        about ``EVENTS_PER_ACCOUNT_DAY * days`` events per account (~5,000 at 540 days).
    days
        Days of history, starting at ``start``.
    start
        First day of the simulation, ``YYYY-MM-DD`` (UTC midnight).
    seed
        Seed of ``np.random.default_rng``; nothing uses the global RNG.
    trial_share
        Share of accounts that start on a 14-day trial.
    churn_shift, expansion_shift, conversion_shift
        Added to the log-odds of churn, expansion and trial conversion at each
        decision: move the base rates without changing the mechanisms.
    activity_scale
        Multiplies the mean number of events per active user-day (beyond the login).
    batch_accounts
        Accounts simulated together (vectorised). Part of the seed's meaning:
        a different batch size gives different (equally valid) data.
    chunk_events
        Events per Parquet part file at most; bounds memory.
    compression
        Parquet compression of the events (``snappy``, ``zstd``, ``none``...).
    """

    n_accounts: int = 2000
    days: int = 540
    start: str = "2024-01-01"
    seed: int = 7
    trial_share: float = 0.15
    churn_shift: float = 0.0
    expansion_shift: float = 0.0
    conversion_shift: float = 0.0
    activity_scale: float = 1.0
    batch_accounts: int = 1024
    chunk_events: int = 2_000_000
    compression: str = "zstd"

    def __post_init__(self) -> None:
        _check_int(self, "n_accounts", 1, 10_000_000)
        _check_int(self, "days", 28, 3650)
        _check_int(self, "seed", 0, 2**63 - 1)
        _check_int(self, "batch_accounts", 1, 1_000_000)
        _check_int(self, "chunk_events", 1000, 100_000_000)
        _check_float(self, "trial_share", 0.0, 1.0)
        _check_float(self, "activity_scale", 0.0, 100.0)
        for name in ("churn_shift", "expansion_shift", "conversion_shift"):
            _check_float(self, name, -10.0, 10.0)
        try:
            start = date.fromisoformat(self.start)
        except (TypeError, ValueError):
            raise ConfigError(
                f"The 'start' parameter of SimulationConfig must be a date 'YYYY-MM-DD'. "
                f"Got {self.start!r} instead."
            ) from None
        if not date(1990, 1, 1) <= start <= date.today():  # ingest's default min_timestamp .. now
            raise ConfigError(
                f"The 'start' parameter of SimulationConfig must be a past date from 1990-01-01 on "
                f"(validation quarantines events outside that range). Got {self.start!r} instead."
            )
        if self.compression not in ("snappy", "zstd", "gzip", "lz4", "brotli", "none"):
            raise ConfigError(
                "The 'compression' parameter of SimulationConfig must be one of snappy, zstd, gzip, "
                f"lz4, brotli, none. Got {self.compression!r} instead."
            )

    @classmethod
    def for_target_events(cls, n_events: int, **overrides: Any) -> SimulationConfig:
        """A config whose run writes about ``n_events`` events (within ~10%).

        Parameters
        ----------
        n_events
            Target number of events.
        **overrides
            Any other field (``days``, ``seed``...); ``n_accounts`` is computed.

        Returns
        -------
        SimulationConfig

        Examples
        --------
        >>> SimulationConfig.for_target_events(10_000_000).n_accounts
        1971
        """
        days = int(overrides.get("days", cls.days))
        per_account = EVENTS_PER_ACCOUNT_DAY * days * float(overrides.get("activity_scale", 1.0) or 1.0)
        n_accounts = max(1, math.ceil(n_events / per_account))
        return cls(**{**overrides, "n_accounts": n_accounts})

    def as_dict(self) -> dict[str, Any]:
        """The config as a flat dict (for logging and run metadata)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _check_int(config: SimulationConfig, name: str, low: int, high: int) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(
            f"The {name!r} parameter of SimulationConfig must be an int in [{low}, {high}]. "
            f"Got {value!r} instead."
        )


def _check_float(config: SimulationConfig, name: str, low: float, high: float) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigError(
            f"The {name!r} parameter of SimulationConfig must be a float in [{low}, {high}]. "
            f"Got {value!r} instead."
        )
