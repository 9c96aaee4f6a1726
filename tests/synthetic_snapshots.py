"""Synthetic snapshot frames for the train/evaluate/registry tests (no features or simulator needed).

Churn depends non-linearly on usage and on the plan, so a tree model has
something to find that a linear model and single-signal rules only partly see.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pes_ml.config import PesConfig, SourceConfig, SourcesConfig
from pes_ml.schemas import ACCOUNT_ID, AS_OF, CHURNED, CONVERTED, EXPANDED

FEATURES = [
    "active_users_30d",
    "events_30d",
    "days_since_last_event",
    "dau_mau_30d",
    "seats",
    "tenure_days",
    "plan",
    "classic_pes",
]


def make_snapshots(
    seed: int, n_accounts: int = 1000, n_dates: int = 10, freq_days: int = 30, shift: float = 0.0
) -> pd.DataFrame:
    """(account, as_of) rows with features and churn/expansion labels; ``shift`` moves the churn rate."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2023-01-01", periods=n_dates, freq=f"{freq_days}D", tz="UTC")
    n = n_accounts * n_dates
    plan = rng.choice(["starter", "team", "business"], size=n, p=[0.5, 0.35, 0.15])
    seats = np.round(np.exp(rng.normal(2.0, 0.8, n))) + 1
    active = np.minimum(seats, rng.poisson(seats * rng.beta(2, 2, n)))
    dau_mau = rng.beta(2, 5, n)
    days_since = np.where(active > 0, rng.exponential(3, n), rng.exponential(40, n))
    tenure = rng.integers(10, 1500, n).astype(float)
    utilisation = active / seats
    logit = (
        -3.0
        + shift
        + 2.0 * (days_since > 14)
        + 1.5 * (utilisation < 0.25)
        + 1.2 * ((plan == "starter") & (dau_mau < 0.2))
        - 1.5 * dau_mau
        - 0.0008 * tenure
    )
    churned = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    expand_logit = -2.5 + 2.0 * utilisation + 1.5 * dau_mau - 0.5 * churned
    expanded = ((rng.random(n) < 1 / (1 + np.exp(-expand_logit))) & (churned == 0)).astype(float)
    classic = 100 * (0.5 * dau_mau / dau_mau.max() + 0.5 * utilisation)
    frame = pd.DataFrame(
        {
            ACCOUNT_ID: np.tile([f"a{i}" for i in range(n_accounts)], n_dates),
            AS_OF: np.repeat(dates, n_accounts),
            CHURNED: churned,
            EXPANDED: expanded,
            CONVERTED: np.nan,
            "active_users_30d": active,
            "events_30d": rng.poisson(active * 20 * (dau_mau + 0.1)),
            "days_since_last_event": days_since,
            "dau_mau_30d": dau_mau,
            "seats": seats,
            "tenure_days": tenure,
            "plan": pd.Series(plan, dtype="str"),
            "classic_pes": classic,
        }
    )
    frame.loc[rng.random(n) < 0.03, "dau_mau_30d"] = np.nan
    return frame


def make_config(tmp_path, **sections) -> PesConfig:
    """A PesConfig with a tmp_path SQLite tracking store and the repo's model spec."""
    base = {
        "sources": SourcesConfig(events=SourceConfig(path=str(tmp_path / "events"))).model_dump(),
        "labels": {"horizon_days": 30},
        "dataset": {"frequency_days": 30, "validation_dates": 2, "test_dates": 2},
        "train": {"bootstrap_rounds": 20},
        "tracking": {
            "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
            "artifact_location": str(tmp_path / "mlartifacts"),
            "model_card_dir": str(tmp_path / "models"),
        },
        "baselines": {
            "rule_scores": [
                {
                    "name": "engaged",
                    "kind": "binary",
                    "criteria": [{"feature": "dau_mau_30d", "op": ">=", "value": 0.2}],
                },
                {
                    "name": "scorecard",
                    "kind": "points",
                    "rules": [
                        {"feature": "active_users_30d", "op": ">=", "value": 3, "points": 20},
                        {"feature": "days_since_last_event", "op": ">", "value": 14, "points": -30},
                    ],
                },
            ]
        },
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    return PesConfig.model_validate(base)
