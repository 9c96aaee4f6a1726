"""The classic Product Engagement Score (Pendo's Adoption, Stickiness, Growth) and core events.

Per account at each as_of (definitions in ``../shared/DESIGN.md``):

- *adoption* — distinct core events used per user active in the last 30 days
  (``core_events_per_active_user_30d``; 0 when no user was active);
- *stickiness* — DAU/MAU over the last 30 days (``dau_mau_30d``; 0 when no user was active);
- *growth* — (new + resurrected - dropped users) / max(users of the prior 30 days, 1).

Each is also a 0-100 percentile among the accounts of the same as_of (average
rank of ties, so the best account gets 100), and the classic PES is their mean
(Pendo's form) or, with ``pes_form: multiplicative``, the product of the three
percentiles on a 0-1 scale times 100.

Core events default to the events used by the most users of the accounts
present at the *earliest* as_of, over the 90 days before it — chosen from data
before every snapshot, so the choice never peeks past an as_of. Pin them with
``features.core_events`` so that training and scoring use the same list.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np
import pandas as pd

from pes_ml.schemas import AS_OF

COMPONENTS = ("adoption", "stickiness", "growth")


def add_classic_pes(features: pd.DataFrame, form: Literal["mean", "multiplicative"] = "mean") -> pd.DataFrame:
    """A copy of ``features`` with adoption, stickiness, growth, their percentiles and classic_pes.

    Parameters
    ----------
    features
        A FeatureFrame with ``core_events_per_active_user_30d``, ``core_events_ever_share``,
        ``dau_mau_30d``, ``active_users_30d``, ``new_users_30d``, ``resurrected_users_30d``
        and ``dropped_users_30d``.
    form
        ``mean`` of the three percentiles (Pendo) or ``multiplicative``.

    Returns
    -------
    pandas.DataFrame
        The input columns plus the classic PES columns; NaN components (no core
        events known) are left out of the mean.
    """
    out = features.copy(deep=False)  # new columns only: the input's columns are shared, not copied
    no_users = out["active_users_30d"] == 0
    out["adoption"] = out["core_events_per_active_user_30d"].mask(
        no_users & out["core_events_ever_share"].notna(), 0.0
    )
    out["stickiness"] = out["dau_mau_30d"].mask(no_users, 0.0)
    prior = (out["active_users_30d"] - out["new_users_30d"] - out["resurrected_users_30d"]
             + out["dropped_users_30d"])
    out["growth"] = (
        (out["new_users_30d"] + out["resurrected_users_30d"] - out["dropped_users_30d"]).astype("float64")
        / np.maximum(prior, 1).astype("float64")
    )

    blocks = _as_of_blocks(out[AS_OF])

    def percentiles_of(name: str) -> np.ndarray:
        return _percentiles(out[name].to_numpy(np.float64, na_value=np.nan), blocks)

    # The three ranks sort side by side: numpy lets go of the GIL while it sorts.
    with ThreadPoolExecutor(max_workers=len(COMPONENTS)) as pool:
        ranks = list(pool.map(percentiles_of, COMPONENTS))
    for name, rank in zip(COMPONENTS, ranks, strict=True):
        out[f"{name}_percentile"] = rank
    if form == "multiplicative":
        out["classic_pes"] = ranks[0] / 100.0 * (ranks[1] / 100.0) * (ranks[2] / 100.0) * 100.0
    else:  # the mean of the known percentiles, summed in pandas' order (its row mean: 0.19 s at 4.6M rows)
        total, count = np.zeros(len(out)), np.zeros(len(out))
        for rank in ranks:
            known = ~np.isnan(rank)
            total += np.where(known, rank, 0.0)
            count += known
        out["classic_pes"] = np.divide(total, count, out=np.full(len(out), np.nan), where=count > 0)
    return out


def _as_of_blocks(as_of: pd.Series) -> list[np.ndarray]:
    """The row positions of each as_of: ranges of the frame's (as_of, account_id) order, found
    for any order (a stable sort by as_of keeps each block's rows in frame order)."""
    codes, uniques = pd.factorize(as_of, use_na_sentinel=False)
    order = np.argsort(codes, kind="stable")
    ends = np.cumsum(np.bincount(codes, minlength=len(uniques)))
    return np.split(order, ends[:-1])


def _percentiles(values: np.ndarray, blocks: list[np.ndarray]) -> np.ndarray:
    """0-100 percentile of each value among the non-missing values of its block: the average
    1-based rank of its ties over their count (the best gets 100); NaN stays NaN.

    The same numbers as pandas' grouped ``rank(method="average", pct=True)`` times 100, with one
    numpy sort per block and no grouping of the frame: at 52 weekly as_of (10M events, 4.6M rows)
    the classic PES took 0.59-0.63 s against 0.92-1.39 s, with 290 MiB of transient memory beyond
    its new columns against 545 MiB.
    """
    out = np.full(len(values), np.nan)
    for rows in blocks:
        x = values[rows]
        known = ~np.isnan(x)
        if not known.any():
            continue
        x = x[known]
        order = np.argsort(x, kind="stable")
        ordered = x[order]
        first = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # each run of ties
        last = np.r_[first[1:], len(x)]
        rank = np.empty(len(x))
        rank[order] = np.repeat((first + 1 + last) / 2, last - first)  # ranks first+1 .. last, averaged
        out[rows[known]] = rank / len(x) * 100.0  # pandas' pct rank, times 100
    return out
