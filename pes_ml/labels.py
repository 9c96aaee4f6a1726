"""Churn, expansion and conversion labels over the half-open window ``[as_of, as_of + horizon)``.

A LabelFrame has one row per (account_id, as_of) for every account *eligible*
at as_of, and one float column per outcome: 1.0, 0.0, or NaN when the outcome
cannot be known (the window runs past the end of the data) or does not apply
(a trial account has no expansion label; a paying account no conversion label).
NaN is never read as "retained": :mod:`pes_ml.dataset` drops those rows from
training and keeps them for scoring.

Subscription mode
    *Eligible*: the account has a subscription active at as_of
    (``start <= as_of < end``). An account whose subscription ended exactly at
    as_of has already churned and is not in the snapshot.
    *Coverage*: an account's subscriptions merged into intervals, bridging gaps
    of at most ``grace_days`` (a re-subscription inside the grace gap is not churn).
    *Churned*: the coverage interval holding as_of ends inside
    ``[as_of, as_of + horizon)``. Ending exactly at ``as_of + horizon`` is not churn.
    *Expanded*: MRR at list price (``list_mrr`` before discount when present, else
    ``mrr``) or seats, summed over subscriptions active at the last instant of the
    window, is at least ``expansion_ratio`` times the value at as_of. Paying accounts only.
    *Converted*: a trial or free account (plan in ``trial_plans`` or MRR 0 at as_of)
    starts a paying subscription inside the window. Trial accounts only; their churn and
    expansion labels are NaN, so the churn model learns paying customers' churn and not
    trial expiry.

Activity mode (no subscriptions table)
    *Eligible*: at least one event in ``[as_of - horizon, as_of)``.
    *Churned*: no event in ``[as_of, as_of + horizon)``.
    *Expanded*: events in the window ≥ ``activity_growth_ratio`` × events in the prior window.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from pes_ml.config import LabelConfig
from pes_ml.errors import DataContractError
from pes_ml.instants import to_utc
from pes_ml.schemas import (
    ACCOUNT_ID,
    AS_OF,
    CHURNED,
    CONVERTED,
    END,
    EXPANDED,
    LIST_MRR,
    MRR,
    PLAN,
    SEATS,
    START,
    TIMESTAMP,
)

logger = logging.getLogger(__name__)

LABEL_FRAME_COLUMNS = (ACCOUNT_ID, AS_OF, CHURNED, EXPANDED, CONVERTED)


def _as_of_index(as_of_dates: Sequence[object]) -> list[pd.Timestamp]:
    dates = sorted({to_utc(d) for d in as_of_dates})
    if not dates:
        raise DataContractError("make_labels needs at least one as_of date. Got an empty list instead.")
    return dates


def infer_data_end(
    events: pd.DataFrame | None = None, subscriptions: pd.DataFrame | None = None
) -> pd.Timestamp:
    """The end of observed data (exclusive): the day after the latest event or subscription start.

    Subscription *end* dates are not used: a renewal's end lies in the future of the data.
    """
    candidates: list[pd.Timestamp] = []
    if events is not None and len(events):
        candidates.append(pd.to_datetime(events[TIMESTAMP], utc=True).max())
    if subscriptions is not None and len(subscriptions):
        candidates.append(pd.to_datetime(subscriptions[START], utc=True).max())
    if not candidates:
        raise DataContractError("Cannot infer the end of the data: events and subscriptions are empty.")
    return max(candidates).floor("D") + pd.Timedelta(days=1)


def _resolve_mode(config: LabelConfig, subscriptions: pd.DataFrame | None) -> str:
    if config.mode != "auto":
        if config.mode == "subscription" and subscriptions is None:
            raise DataContractError(
                "labels.mode is 'subscription' but no subscriptions table was given. "
                "Configure sources.subscriptions or set labels.mode: activity."
            )
        return config.mode
    return "subscription" if subscriptions is not None and len(subscriptions) else "activity"


def make_labels(
    config: LabelConfig,
    as_of_dates: Sequence[object],
    *,
    subscriptions: pd.DataFrame | None = None,
    events: pd.DataFrame | None = None,
    data_end: object | None = None,
) -> pd.DataFrame:
    """Label every eligible account at every as_of date.

    Parameters
    ----------
    config
        Label definitions (horizon, grace gap, expansion ratio, mode).
    as_of_dates
        Snapshot instants; naive values are read as UTC.
    subscriptions
        Canonical subscriptions (account_id, start, end nullable, mrr, list_mrr, seats, plan).
    events
        Canonical events; needed in activity mode and to infer ``data_end``.
    data_end
        Exclusive end of observed data. Default: ``config.data_end``, else inferred.

    Returns
    -------
    pandas.DataFrame
        LabelFrame: account_id, as_of, churned, expanded, converted (float, NaN = unknown or n/a).

    Raises
    ------
    DataContractError
        If the mode needs a table that is missing, or no as_of date is given.

    Examples
    --------
    >>> subs = pd.DataFrame({"account_id": ["a"], "start": ["2024-01-01"], "end": ["2024-02-10"],
    ...                      "mrr": [100.0]})
    >>> make_labels(LabelConfig(horizon_days=30), ["2024-01-15"], subscriptions=subs,
    ...             data_end="2024-06-01")[["account_id", "churned"]].to_dict("records")
    [{'account_id': 'a', 'churned': 1.0}]
    """
    dates = _as_of_index(as_of_dates)
    mode = _resolve_mode(config, subscriptions)
    if data_end is None and config.data_end is not None:
        data_end = config.data_end
    end = to_utc(data_end) if data_end is not None else infer_data_end(events, subscriptions)
    if mode == "subscription" and subscriptions is not None:
        labels = _subscription_labels(config, dates, subscriptions, end)
    else:
        if events is None:
            raise DataContractError("Activity-mode labels need the events table. Got None instead.")
        labels = _activity_labels(config, dates, events, end)
    for outcome in (CHURNED, EXPANDED, CONVERTED):
        known = labels[outcome].notna()
        logger.info(
            "labels[%s]: %d snapshots, %d labeled, positive rate %.3f",
            outcome,
            len(labels),
            int(known.sum()),
            float(labels.loc[known, outcome].mean()) if known.any() else float("nan"),
        )
    return labels


def _prepare_subscriptions(subscriptions: pd.DataFrame) -> pd.DataFrame:
    missing = {ACCOUNT_ID, START, END} - set(subscriptions.columns)
    if missing:
        raise DataContractError(
            f"subscriptions is missing column(s) {sorted(missing)}; expected account_id, start, end."
        )
    subs = subscriptions.copy()
    subs[ACCOUNT_ID] = subs[ACCOUNT_ID].astype(str)
    subs[START] = pd.to_datetime(subs[START], utc=True)
    subs[END] = pd.to_datetime(subs[END], utc=True)
    mrr = subs[MRR].astype(float) if MRR in subs else pd.Series(np.nan, index=subs.index)
    list_mrr = subs[LIST_MRR].astype(float) if LIST_MRR in subs else pd.Series(np.nan, index=subs.index)
    # List price before discount, so a discount ending is not mistaken for an upgrade.
    subs["_list_mrr"] = list_mrr.fillna(mrr)
    subs["_mrr"] = mrr
    subs["_seats"] = subs[SEATS].astype(float) if SEATS in subs else np.nan
    subs["_plan"] = subs[PLAN].astype(str).str.lower() if PLAN in subs else ""
    return subs.sort_values([ACCOUNT_ID, START], kind="stable").reset_index(drop=True)


def coverage_end(subscriptions: pd.DataFrame, grace_days: int) -> pd.Series:
    """For each subscription row, the end of its grace-bridged coverage interval (NaT = open).

    Rows of one account sorted by start are merged while the next start is no
    later than the running latest end plus the grace gap.
    """
    subs = subscriptions
    far = pd.Timestamp("2200-01-01", tz="UTC")  # stands for "open"; within every datetime unit
    ends = subs[END].fillna(far)
    running = ends.groupby(subs[ACCOUNT_ID], sort=False).cummax()
    prev = running.groupby(subs[ACCOUNT_ID], sort=False).shift()
    new_block = prev.isna() | (subs[START] > prev + pd.Timedelta(days=grace_days))
    block = new_block.cumsum()
    block_end = running.groupby(block).transform("max")
    return block_end.where(block_end < far)


def _measure_at(subs: pd.DataFrame, instant: pd.Timestamp, column: str) -> pd.Series:
    active = (subs[START] <= instant) & (subs[END].isna() | (subs[END] > instant))
    return subs.loc[active].groupby(ACCOUNT_ID)[column].sum(min_count=1)


def _subscription_labels(
    config: LabelConfig, dates: list[pd.Timestamp], subscriptions: pd.DataFrame, data_end: pd.Timestamp
) -> pd.DataFrame:
    subs = _prepare_subscriptions(subscriptions)
    subs["_coverage_end"] = coverage_end(subs, config.grace_days)
    horizon = pd.Timedelta(days=config.horizon_days)
    grace = pd.Timedelta(days=config.grace_days)
    trial_plans = {p.lower() for p in config.trial_plans}
    measure = "_seats" if config.expansion_measure == "seats" else "_list_mrr"
    frames = []
    for as_of in dates:
        window_end = as_of + horizon
        active = subs[(subs[START] <= as_of) & (subs[END].isna() | (subs[END] > as_of))]
        if active.empty:
            continue
        active = active.assign(_open=active["_coverage_end"].isna(), _trial=active["_plan"].isin(trial_plans))
        grouped = active.groupby(ACCOUNT_ID)
        snap = pd.DataFrame(
            {
                "_coverage_end": grouped["_coverage_end"].max(),
                "_any_open": grouped["_open"].any(),
                "_mrr": grouped["_mrr"].sum(min_count=1),
                "_trial_plan": grouped["_trial"].any(),
            }
        )
        snap["_paying"] = ~snap["_trial_plan"] & ~(snap["_mrr"].fillna(1.0) <= 0)
        cov_end = snap["_coverage_end"].where(~snap["_any_open"])
        labeled = window_end <= data_end
        churned = cov_end.notna() & (cov_end < window_end)
        # A churn inside the window is only confirmed once its grace gap has been observed.
        confirmed = ~churned | (cov_end + grace <= data_end)
        churn = pd.Series(np.where(churned, 1.0, 0.0), index=snap.index)
        churn = churn.where(labeled & confirmed & snap["_paying"])

        # Value at the last instant inside the window: active at window_end - 1ns.
        last_instant = window_end - pd.Timedelta(1, "ns")
        before = _measure_at(subs, as_of, measure).reindex(snap.index)
        after = _measure_at(subs, last_instant, measure).reindex(snap.index).fillna(0.0)
        has_base = before.notna() & (before > 0)
        # relative tolerance: 100 -> 110 is a 1.10 ratio despite float rounding
        grew = after >= config.expansion_ratio * before * (1 - 1e-9)
        expanded = pd.Series(np.where(grew, 1.0, 0.0), index=snap.index)
        expanded = expanded.where(labeled & has_base & snap["_paying"])

        paid_start = subs[
            (subs[START] >= as_of)
            & (subs[START] < window_end)
            & (subs["_mrr"].fillna(0.0) > 0)
            & ~subs["_plan"].isin(trial_plans)
        ][ACCOUNT_ID].unique()
        converted = pd.Series(np.where(snap.index.isin(paid_start), 1.0, 0.0), index=snap.index)
        converted = converted.where(labeled & ~snap["_paying"])
        frames.append(
            pd.DataFrame(
                {
                    ACCOUNT_ID: snap.index.astype(str),
                    AS_OF: as_of,
                    CHURNED: churn.to_numpy(),
                    EXPANDED: expanded.to_numpy(),
                    CONVERTED: converted.to_numpy(),
                }
            )
        )
    return _concat(frames)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    if not frames:
        empty = pd.DataFrame({c: pd.Series(dtype=float) for c in LABEL_FRAME_COLUMNS})
        empty[ACCOUNT_ID] = empty[ACCOUNT_ID].astype(str)
        empty[AS_OF] = pd.Series(dtype="datetime64[ns, UTC]")
        return empty
    labels = pd.concat(frames, ignore_index=True)
    return labels.sort_values([AS_OF, ACCOUNT_ID], kind="stable").reset_index(drop=True)


def _activity_labels(
    config: LabelConfig, dates: list[pd.Timestamp], events: pd.DataFrame, data_end: pd.Timestamp
) -> pd.DataFrame:
    accounts = events[ACCOUNT_ID].astype(str).to_numpy()
    stamps = pd.to_datetime(events[TIMESTAMP], utc=True)
    horizon = pd.Timedelta(days=config.horizon_days)
    frames = []
    for as_of in dates:
        prior = (stamps >= as_of - horizon) & (stamps < as_of)
        future = (stamps >= as_of) & (stamps < as_of + horizon)
        before = pd.Series(accounts[prior.to_numpy()]).value_counts()
        after = pd.Series(accounts[future.to_numpy()]).value_counts().reindex(before.index).fillna(0)
        labeled = as_of + horizon <= data_end
        churn = np.where(after.to_numpy() == 0, 1.0, 0.0)
        expanded = np.where(after.to_numpy() >= config.activity_growth_ratio * before.to_numpy(), 1.0, 0.0)
        nan = np.full(len(before), np.nan)
        frames.append(
            pd.DataFrame(
                {
                    ACCOUNT_ID: before.index.astype(str),
                    AS_OF: as_of,
                    CHURNED: churn if labeled else nan,
                    EXPANDED: expanded if labeled else nan,
                    CONVERTED: nan,
                }
            )
        )
    return _concat(frames)
