"""Turn the engine's raw aggregates into catalog features: ratios, fills, renewals, tenure.

This runs on the collected ``(account_id, as_of)`` rows — the same code for
DuckDB and Spark — so a ratio is divided once, with one rule for empty
denominators (NaN, as the catalog documents), whatever engine counted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from pes_ml.features.catalog import CATALOG, OTHER_EVENT_TYPE, event_type_columns
from pes_ml.features.inputs import A, AsOfGrid, J
from pes_ml.schemas import ACCOUNT_ID, AS_OF

_COUNTS = (
    "events_7d", "events_30d", "events_90d", "events_prior_30d", "event_types_30d", "active_days_30d",
    "active_days_prior_30d", "active_users_7d", "active_users_30d", "active_users_90d", "user_days_7d",
    "user_days_30d", "power_users_7d", "users_28d", "l28_1to7_28d", "l28_8to14_28d", "l28_15to21_28d",
    "l28_22to28_28d", "prior_users_30d", "new_users_30d", "resurrected_users_30d", "dropped_users_30d",
    "wau_slope_num",
)
_SUMS = ("value_sum_30d", "value_sum_90d")
SECONDS_PER_DAY = 86_400.0


def _ratio(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    """numerator / denominator, NaN where the denominator is 0 or missing."""
    num = numerator.astype("float64")
    den = denominator.astype("float64")
    return (num / den.where(den != 0)).astype("float64")


def _whole_days(later: pd.Series, earlier: pd.Series) -> pd.Series:
    seconds = (later - earlier).dt.total_seconds()
    return np.floor(seconds / SECONDS_PER_DAY).astype("float64")


def _column(frame: pd.DataFrame, name: str, dtype: str = "float64") -> pd.Series:
    if name in frame.columns:
        return frame[name]
    return pd.Series(np.nan, index=frame.index, dtype=dtype)


def _utc(series: pd.Series) -> pd.Series:
    stamps = pd.to_datetime(series, utc=True)
    return stamps.dt.as_unit("us")


def add_months(start: pd.Series, months: pd.Series) -> pd.Series:
    """Calendar month arithmetic: the same day of the month, clamped to the month's end; time kept."""
    valid = start.notna() & months.notna()
    out = pd.Series(pd.NaT, index=start.index, dtype="datetime64[us, UTC]")
    if not valid.any():
        return out
    s = start[valid]
    n = months[valid].astype("int64")
    month0 = s.dt.month.astype("int64") - 1 + n
    year = s.dt.year.astype("int64") + month0 // 12
    month = month0 % 12 + 1
    first = pd.to_datetime(pd.DataFrame({"year": year, "month": month, "day": 1}))
    month_days = (first + pd.offsets.MonthEnd(0)).dt.day
    day = np.minimum(s.dt.day.astype("int64"), month_days.astype("int64"))
    date = pd.to_datetime(pd.DataFrame({"year": year, "month": month, "day": day})).dt.tz_localize("UTC")
    out[valid] = (date.dt.as_unit("us") + (s - s.dt.floor("D"))).to_numpy()
    return out


def next_renewal(period_start: pd.Series, billing_months: pd.Series, as_of: pd.Series) -> pd.Series:
    """The first renewal ``period_start + k * billing period`` (k >= 1) at or after as_of.

    Uses only the period start and billing period — never a recorded end date,
    which is cut short when an account churns mid-term and would leak the label.
    """
    period = billing_months.round()
    period = period.where(period >= 1)
    valid = period_start.notna() & period.notna()
    start, step, now = period_start[valid], period[valid].astype("int64"), as_of[valid]
    elapsed = (now.dt.year - start.dt.year) * 12 + (now.dt.month - start.dt.month)
    k = np.maximum(1, elapsed.astype("int64") // step)
    renewal = add_months(start, k * step)
    for _ in range(3):  # the estimate is at most two periods early
        early = renewal < now
        if not early.any():
            break
        k = k.where(~early, k + 1)
        renewal = add_months(start, k * step)
    out = pd.Series(pd.NaT, index=period_start.index, dtype="datetime64[us, UTC]")
    out[valid] = renewal.to_numpy()
    return out


def finish_features(
    raw: pd.DataFrame,
    grid: AsOfGrid,
    event_types: Sequence[str],
    core_events: Sequence[str],
    horizon_days: int,
) -> pd.DataFrame:
    """Catalog features from the raw per-(account_id, j) aggregates of one as_of grid."""
    f = raw.copy()
    for name in (*_COUNTS, *_SUMS):
        f[name] = _column(f, name).fillna(0)
    for name in _COUNTS:
        f[name] = f[name].astype("int64")
    # Index by position into a DatetimeIndex: .to_numpy() of tz-aware values is an object array,
    # which stays object (not datetime) when no account is present at as_of.
    f[AS_OF] = pd.DatetimeIndex(grid.as_of).as_unit("us")[f[J].to_numpy()]
    a = f[A].astype("int64")
    out = pd.DataFrame({ACCOUNT_ID: f[ACCOUNT_ID].astype("str"), AS_OF: f[AS_OF]}, index=f.index)
    for name in ("events_7d", "events_30d", "events_90d", "value_sum_30d", "value_sum_90d",
                 "active_users_7d", "active_users_30d", "active_users_90d", "active_days_30d",
                 "event_types_30d", "new_users_30d", "resurrected_users_30d", "dropped_users_30d"):
        out[name] = f[name]
    for window in (7, 30, 90):
        users = f[f"active_users_{window}d"]
        out[f"events_per_active_user_{window}d"] = _ratio(f[f"events_{window}d"], users)
    types = event_type_columns(event_types)
    typed_total = pd.Series(0, index=f.index, dtype="int64")
    for i, name in enumerate(types.values()):
        counts = _column(f, f"_type_{i}").fillna(0).astype("int64")
        out[name] = counts
        typed_total += counts
    out[OTHER_EVENT_TYPE] = f["events_30d"] - typed_total

    seats = _column(f, "sub_seats").combine_first(_column(f, "account_seats"))
    out["seats"] = seats.astype("float64")
    out["seat_utilization_30d"] = _ratio(f["active_users_30d"], seats)
    out["dau_mau_30d"] = _ratio(f["user_days_30d"], 30 * f["active_users_30d"])
    out["dau_wau_7d"] = _ratio(f["user_days_7d"], 7 * f["active_users_7d"])
    out["wau_mau_30d"] = _ratio(f["active_users_7d"], f["active_users_30d"])
    out["power_user_share_7d"] = _ratio(f["power_users_7d"], f["active_users_30d"])
    for band in ("1to7", "8to14", "15to21", "22to28"):
        out[f"l28_{band}_share_28d"] = _ratio(f[f"l28_{band}_28d"], f["users_28d"])

    n_core = len(core_events)
    if n_core:
        out["core_events_per_active_user_30d"] = _ratio(
            _column(f, "core_user_events_30d").fillna(0), f["active_users_30d"]
        )
        out["core_events_ever_share"] = _column(f, "core_events_ever").fillna(0).astype("float64") / n_core
        out["core_events_used_30d"] = _column(f, "core_events_used_30d").fillna(0).astype("float64")
    else:
        for name in ("core_events_per_active_user_30d", "core_events_ever_share", "core_events_used_30d"):
            out[name] = np.nan

    out["growth_ratio_30d"] = _ratio(
        f["new_users_30d"] + f["resurrected_users_30d"] - f["dropped_users_30d"], f["prior_users_30d"]
    )
    out["events_trend_30d"] = _ratio(f["events_30d"], f["events_prior_30d"])
    out["active_users_trend_30d"] = _ratio(f["active_users_30d"], f["prior_users_30d"])
    out["active_days_trend_30d"] = _ratio(f["active_days_30d"], f["active_days_prior_30d"])
    out["wau_slope_12w"] = f["wau_slope_num"].astype("float64") / 286.0

    recency = (
        ("days_since_last_event", "last_day"),
        ("days_since_last_core_event", "last_core_day"),
        ("days_since_last_new_user", "last_new_user_day"),
    )
    for name, column in recency:
        out[name] = (a - 1 - _column(f, column)).astype("float64")

    # Account start: the earliest of created_at, first subscription start and first event, before as_of.
    as_of = out[AS_OF]
    created = _utc(_column(f, "created_at", "datetime64[us, UTC]"))
    created = created.where(created < as_of)
    first_event_day = _column(f, "first_event_day")
    first_event = grid.day_start(first_event_day.where(first_event_day < a))
    starts = pd.concat([created, _utc(_column(f, "first_start", "datetime64[us, UTC]")), first_event], axis=1)
    account_start = starts.min(axis=1)
    out["tenure_days"] = _whole_days(as_of, account_start)
    first_core_day = _column(f, "first_core_day")
    first_core = grid.day_start(first_core_day.where(first_core_day < a))
    out["days_to_first_core_event"] = _whole_days(first_core, account_start).clip(lower=0)

    out["plan"] = _column(f, "sub_plan", "str").combine_first(_column(f, "account_plan", "str")).astype("str")
    out["segment"] = _column(f, "segment", "str").astype("str")
    mrr = _column(f, "mrr").astype("float64")
    out["mrr"] = mrr
    had_subscription = _column(f, "active_90d_ago").fillna(0) > 0
    out["mrr_change_90d"] = (mrr - _column(f, "mrr_90d_ago").fillna(0)).where(had_subscription)

    out["billing_period_months"] = _column(f, "billing_period_months").astype("float64")
    renewal = next_renewal(_utc(_column(f, "period_start", "datetime64[us, UTC]")),
                           out["billing_period_months"], as_of)
    out["days_to_renewal"] = (renewal - as_of).dt.total_seconds() / SECONDS_PER_DAY
    out["renewal_in_horizon"] = (out["days_to_renewal"] < horizon_days).astype("float64").where(
        out["days_to_renewal"].notna()
    )
    out["discount"] = _column(f, "discount").astype("float64")
    out["auto_renew"] = _column(f, "auto_renew").astype("float64")

    for name in ("plan", "segment"):
        out[name] = out[name].where(out[name].notna() & (out[name] != "nan") & (out[name] != "None"))
        out[name] = out[name].astype("str")
    order = [ACCOUNT_ID, AS_OF] + [s.name for s in CATALOG if s.name in out.columns]
    order += [c for c in out.columns if c not in order]
    return out[order]
