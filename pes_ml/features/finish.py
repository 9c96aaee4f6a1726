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


def _days(later: np.ndarray, earlier: np.ndarray) -> np.ndarray:
    """Days from ``earlier`` to ``later`` (datetime64[us] arrays), NaN where either is missing."""
    micros = (later - earlier).astype("float64")
    micros[np.isnat(later) | np.isnat(earlier)] = np.nan
    return np.asarray(micros / (SECONDS_PER_DAY * 1e6))


def _whole_days(later: np.ndarray, earlier: np.ndarray) -> np.ndarray:
    return np.asarray(np.floor(_days(later, earlier)))


def _column(frame: pd.DataFrame, name: str, dtype: str = "float64") -> pd.Series:
    if name in frame.columns:
        return frame[name]
    return pd.Series(np.nan, index=frame.index, dtype=dtype)


def _instants(series: pd.Series) -> np.ndarray:
    """UTC instants as naive ``datetime64[us]`` (NaT where missing): vectorised date arithmetic."""
    stamps = pd.to_datetime(series, utc=True).dt.as_unit("us")
    return np.asarray(stamps.dt.tz_localize(None).to_numpy("datetime64[us]", copy=True))


def _series(instants: np.ndarray, index: pd.Index) -> pd.Series:
    return pd.Series(instants, index=index).dt.tz_localize("UTC")


def add_months(start: np.ndarray, months: np.ndarray) -> np.ndarray:
    """Calendar month arithmetic on ``datetime64[us]``: the same day of the month, clamped to the
    month's end; the time of day kept. NaT where ``start`` is NaT."""
    day = start.astype("datetime64[D]")
    time_of_day = start - day.astype("datetime64[us]")
    month = day.astype("datetime64[M]")
    day_of_month = (day - month.astype("datetime64[D]")).astype("int64")
    target = month + np.asarray(months, dtype="int64").astype("timedelta64[M]")
    first = target.astype("datetime64[D]")
    length = ((target + 1).astype("datetime64[D]") - first).astype("int64")
    clamped = np.minimum(day_of_month, length - 1).astype("timedelta64[D]")
    out = (first + clamped).astype("datetime64[us]") + time_of_day
    out[np.isnat(start)] = np.datetime64("NaT")
    return np.asarray(out)


def _months_between(earlier: np.ndarray, later: np.ndarray) -> np.ndarray:
    return np.asarray(later.astype("datetime64[M]") - earlier.astype("datetime64[M]")).astype("int64")


def next_renewal(period_start: pd.Series, billing_months: pd.Series, as_of: pd.Series) -> pd.Series:
    """The first renewal ``period_start + k * billing period`` (k >= 1) at or after as_of.

    Uses only the period start and billing period — never a recorded end date,
    which is cut short when an account churns mid-term and would leak the label.
    """
    period = billing_months.round().to_numpy("float64", na_value=np.nan)
    start, now = _instants(period_start), _instants(as_of)
    valid = ~np.isnat(start) & ~np.isnat(now) & (period >= 1)
    out = np.full(len(start), np.datetime64("NaT"), dtype="datetime64[us]")
    if valid.any():
        start, now, step = start[valid], now[valid], period[valid].astype("int64")
        k = np.maximum(1, _months_between(start, now) // step)
        renewal = add_months(start, k * step)
        for _ in range(3):  # the estimate is at most two periods early
            early = renewal < now
            if not early.any():
                break
            k = k + early
            renewal = add_months(start, k * step)
        out[valid] = renewal
    return _series(out, period_start.index)


def finish_features(
    raw: pd.DataFrame,
    grid: AsOfGrid,
    event_types: Sequence[str],
    core_events: Sequence[str],
    horizon_days: int,
) -> pd.DataFrame:
    """Catalog features from the raw per-(account_id, j) aggregates of one as_of grid.

    ``raw`` is filled in place (its missing counts become 0) rather than copied.
    """
    f = raw  # the caller's frame: filled in place, not copied
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
    as_of = _instants(out[AS_OF])
    created = _instants(_column(f, "created_at", "datetime64[us, UTC]"))
    created[~(created < as_of)] = np.datetime64("NaT")
    first_event_day = _column(f, "first_event_day")
    first_event = _instants(grid.day_start(first_event_day.where(first_event_day < a)))
    first_start = _instants(_column(f, "first_start", "datetime64[us, UTC]"))
    account_start = np.fmin(np.fmin(created, first_start), first_event)
    out["tenure_days"] = _whole_days(as_of, account_start)
    first_core_day = _column(f, "first_core_day")
    first_core = _instants(grid.day_start(first_core_day.where(first_core_day < a)))
    out["days_to_first_core_event"] = np.maximum(_whole_days(first_core, account_start), 0)

    out["plan"] = _column(f, "sub_plan", "str").combine_first(_column(f, "account_plan", "str")).astype("str")
    out["segment"] = _column(f, "segment", "str").astype("str")
    mrr = _column(f, "mrr").astype("float64")
    out["mrr"] = mrr
    had_subscription = _column(f, "active_90d_ago").fillna(0) > 0
    out["mrr_change_90d"] = (mrr - _column(f, "mrr_90d_ago").fillna(0)).where(had_subscription)

    out["billing_period_months"] = _column(f, "billing_period_months").astype("float64")
    renewal = next_renewal(_column(f, "period_start", "datetime64[us, UTC]"), out["billing_period_months"],
                           out[AS_OF])
    out["days_to_renewal"] = _days(_instants(renewal), as_of)
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
