"""pes_ml's full feature catalog at one as_of, written in plain pandas: the baseline of bench_features.py.

This is the notebook a data scientist would write to compute the same FeatureFrame
as :func:`pes_ml.features.build.compute_features` (subscription mode, one as_of):
boolean masks, ``groupby``, ``merge``, ``nunique`` and ``drop_duplicates``, one
block per feature group. It imports neither pes_ml nor DuckDB, so the benchmark
compares pes_ml's engine with pandas on the same work.

Time is counted as in pes_ml: windows are half-open, ``as_of - n days <= t < as_of``,
and ``days_ago`` is the number of whole days before as_of, 0 for the last 24 hours
(``t = as_of - 1 day`` exactly is still day 0, inside the 1-day window).

Agreement check with pes_ml (from the project root)::

    .venv/bin/python benchmarks/pandas_baseline.py --check \
        --data benchmarks/out/features_1000000_10000_v4 --as-of 2024-06-29
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

DAY = pd.Timedelta(days=1)
ACCOUNT = "account_id"
USER = ["account_id", "user_id"]

# The FeatureFrame's column order (pes_ml's catalog); per-event-type counts and classic PES follow.
CATALOG_ORDER = [
    "events_7d", "events_30d", "events_90d", "events_per_active_user_7d", "events_per_active_user_30d",
    "events_per_active_user_90d", "value_sum_30d", "value_sum_90d", "events_type_other_30d",
    "active_users_7d", "active_users_30d", "active_users_90d", "seats", "seat_utilization_30d",
    "dau_mau_30d", "dau_wau_7d", "wau_mau_30d", "active_days_30d", "power_user_share_7d",
    "l28_1to7_share_28d", "l28_8to14_share_28d", "l28_15to21_share_28d", "l28_22to28_share_28d",
    "core_events_per_active_user_30d", "core_events_ever_share", "days_to_first_core_event",
    "event_types_30d", "core_events_used_30d", "new_users_30d", "resurrected_users_30d",
    "dropped_users_30d", "growth_ratio_30d", "events_trend_30d", "active_users_trend_30d",
    "active_days_trend_30d", "wau_slope_12w", "days_since_last_event", "days_since_last_core_event",
    "days_since_last_new_user", "tenure_days", "plan", "segment", "mrr", "mrr_change_90d",
    "billing_period_months", "days_to_renewal", "renewal_in_horizon", "discount", "auto_renew",
]
CLASSIC_PES = [
    "adoption", "stickiness", "growth", "adoption_percentile", "stickiness_percentile",
    "growth_percentile", "classic_pes",
]


def _ratio(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    """numerator / denominator as float, NaN where the denominator is 0 or missing."""
    denominator = denominator.astype("float64")
    return numerator.astype("float64") / denominator.where(denominator != 0)


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    """A column, or NaN when the source lacks it (optional columns of subscriptions and accounts)."""
    return frame[name] if name in frame.columns else pd.Series(np.nan, index=frame.index)


def _event_type_columns(event_types: list[str]) -> dict[str, str]:
    """Event name -> ``events_type_<slug>_30d``, with a numeric suffix when two slugs collide."""
    columns, taken = {}, {"events_type_other_30d"}
    for event in event_types:
        slug = re.sub(r"[^a-z0-9]+", "_", event.lower()).strip("_") or "blank"
        name, suffix = f"events_type_{slug}_30d", 2
        while name in taken:
            name, suffix = f"events_type_{slug}_{suffix}_30d", suffix + 1
        taken.add(name)
        columns[event] = name
    return columns


def _add_months(start: pd.Series, months: pd.Series) -> pd.Series:
    """Calendar months after ``start``: the same day of the month (clamped to its end), same time of day."""
    total = start.dt.year * 12 + start.dt.month - 1 + months
    year, month = total // 12, total % 12 + 1
    first = pd.to_datetime(pd.DataFrame({"year": year, "month": month, "day": 1}), utc=True)
    day = np.minimum(start.dt.day, first.dt.days_in_month)
    time_of_day = start - start.dt.floor("D")
    return first + pd.to_timedelta(day - 1, unit="D") + time_of_day


def _next_renewal(period_start: pd.Series, billing_months: pd.Series, as_of: pd.Timestamp) -> pd.Series:
    """The first ``period_start + k * billing period`` (k >= 1) at or after as_of; NaT when unknown.

    Never the recorded end date: it is cut short when an account churns mid-term.
    """
    step = billing_months.round()
    valid = period_start.notna() & (step >= 1)
    start, step = period_start[valid], step[valid].astype("int64")
    months_between = (as_of.year - start.dt.year) * 12 + (as_of.month - start.dt.month)
    k = np.maximum(1, months_between // step)
    renewal = _add_months(start, k * step)
    while (renewal < as_of).any():  # the estimate is at most two periods early
        k = k + (renewal < as_of)
        renewal = _add_months(start, k * step)
    return renewal.reindex(period_start.index)


def pandas_features(
    events: pd.DataFrame,
    subscriptions: pd.DataFrame,
    accounts: pd.DataFrame | None,
    as_of: str | pd.Timestamp,
    *,
    top_event_types: int = 8,
    n_core_events: int = 5,
    horizon_days: int = 90,
) -> pd.DataFrame:
    """Every column of pes_ml's FeatureFrame at one as_of, for the accounts with an active subscription.

    Parameters
    ----------
    events, subscriptions, accounts
        The clean tables as read from Parquet (timestamps tz-aware UTC); ``accounts`` may be None.
    as_of
        The snapshot instant; a date means UTC midnight.
    top_event_types
        How many of the most frequent event types get their own 30-day count.
    n_core_events
        How many core events (the events used by the most users) adoption counts.
    horizon_days
        The label horizon, for ``renewal_in_horizon``.

    Returns
    -------
    pandas.DataFrame
        One row per present account, sorted by account_id, with the columns of the
        FeatureFrame in its order; ``attrs`` holds ``event_types`` and ``core_events``.
    """
    as_of = pd.Timestamp(as_of)
    as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")

    # --- who is present: a subscription active at as_of (start <= as_of < end, or no end) ----------
    subs = subscriptions
    active = subs[(subs["start"] <= as_of) & (subs["end"].isna() | (subs["end"] > as_of))]
    present = pd.Index(np.sort(active[ACCOUNT].unique()), name=ACCOUNT)

    def per_account(values: pd.Series | pd.DataFrame, fill: float | None = 0) -> pd.Series:
        """Align a per-account result on the present accounts (missing -> ``fill``)."""
        out = values.reindex(present)
        return out if fill is None else out.fillna(fill)

    def count(rows: pd.DataFrame) -> pd.Series:
        return per_account(rows.groupby(ACCOUNT).size()).astype("int64")

    def distinct(rows: pd.DataFrame, column: str) -> pd.Series:
        return per_account(rows.groupby(ACCOUNT)[column].nunique()).astype("int64")

    # --- events before as_of, with the whole days before as_of (0 = the last 24 hours) -------------
    before = events[events["timestamp"] < as_of]
    for optional in ("user_id", "value"):  # absent columns are missing values, as in pes_ml
        if optional not in before.columns:
            before = before.assign(**{optional: np.nan})
    before = before.assign(days_ago=-1 - (before["timestamp"] - as_of) // DAY)
    last_7d, last_30d, last_90d = (before[before["days_ago"] < n] for n in (7, 30, 90))
    prior_30d = before[(before["days_ago"] >= 30) & (before["days_ago"] < 60)]

    # --- vocabularies, from the 90 days before as_of (ties by name) ------------------------------
    type_counts = last_90d.groupby("event").size().rename("n").reset_index()
    type_counts = type_counts.sort_values(["n", "event"], ascending=[False, True])
    event_types = type_counts["event"].head(top_event_types).tolist()
    # Core events: used by the most distinct users of the present accounts.
    used_by = last_90d[last_90d["user_id"].notna() & last_90d[ACCOUNT].isin(present)]
    used_by = used_by[[ACCOUNT, "user_id", "event"]].drop_duplicates()
    core_counts = used_by.groupby("event").size().rename("users").reset_index()
    core_counts = core_counts.sort_values(["users", "event"], ascending=[False, True])
    core_events = core_counts["event"].head(n_core_events).tolist()

    f = pd.DataFrame(index=present)

    # --- activity: events, active users and values per window ------------------------------------
    for n, window in ((7, last_7d), (30, last_30d), (90, last_90d)):
        f[f"events_{n}d"] = count(window)
        f[f"active_users_{n}d"] = distinct(window, "user_id")
        f[f"events_per_active_user_{n}d"] = _ratio(f[f"events_{n}d"], f[f"active_users_{n}d"])
    f["value_sum_30d"] = per_account(last_30d.groupby(ACCOUNT)["value"].sum())
    f["value_sum_90d"] = per_account(last_90d.groupby(ACCOUNT)["value"].sum())
    type_columns = _event_type_columns(event_types)
    for event, name in type_columns.items():
        f[name] = count(last_30d[last_30d["event"] == event])
    typed = f[list(type_columns.values())].sum(axis=1).astype("int64")
    f["events_type_other_30d"] = f["events_30d"] - typed

    # --- per user: active days in each window, and the day the user was first seen ---------------
    user_days = before[before["user_id"].notna()][[*USER, "days_ago"]].drop_duplicates()
    first_seen = user_days.groupby(USER)["days_ago"].max().rename("first_days_ago")
    ago = user_days["days_ago"]
    users = (
        user_days[ago < 90]
        .assign(d7=ago < 7, d28=ago < 28, d30=ago < 30, prior=(ago >= 30) & (ago < 60))
        .groupby(USER)[["d7", "d28", "d30", "prior"]].sum()
        .join(first_seen)
        .reset_index()
    )

    def count_users(mask: pd.Series) -> pd.Series:
        return count(users[mask])

    # --- stickiness -------------------------------------------------------------------------------
    user_days_7d = per_account(users.groupby(ACCOUNT)["d7"].sum())
    user_days_30d = per_account(users.groupby(ACCOUNT)["d30"].sum())
    f["dau_mau_30d"] = _ratio(user_days_30d, 30 * f["active_users_30d"])
    f["dau_wau_7d"] = _ratio(user_days_7d, 7 * f["active_users_7d"])
    f["wau_mau_30d"] = _ratio(f["active_users_7d"], f["active_users_30d"])
    f["active_days_30d"] = distinct(last_30d, "days_ago")
    f["power_user_share_7d"] = _ratio(count_users(users["d7"] >= 5), f["active_users_30d"])
    users_28d = count_users(users["d28"] > 0)
    for band, low, high in (("1to7", 1, 7), ("8to14", 8, 14), ("15to21", 15, 21), ("22to28", 22, 28)):
        f[f"l28_{band}_share_28d"] = _ratio(count_users(users["d28"].between(low, high)), users_28d)

    # --- adoption and breadth (core events) -------------------------------------------------------
    f["event_types_30d"] = distinct(last_30d, "event")
    if core_events:
        core_30d = last_30d[last_30d["event"].isin(core_events)]
        core_pairs = core_30d[core_30d["user_id"].notna()][[*USER, "event"]].drop_duplicates()
        f["core_events_per_active_user_30d"] = _ratio(count(core_pairs), f["active_users_30d"])
        core_ever = before[before["event"].isin(core_events)]
        f["core_events_ever_share"] = distinct(core_ever, "event") / len(core_events)
        f["core_events_used_30d"] = distinct(core_30d, "event").astype("float64")
    else:  # no event in the 90 days before as_of: adoption is unknown
        core_ever = before.iloc[:0]
        for name in ("core_events_per_active_user_30d", "core_events_ever_share", "core_events_used_30d"):
            f[name] = np.nan

    # --- growth: new, resurrected and dropped users ----------------------------------------------
    active_30d, active_prior = users["d30"] > 0, users["prior"] > 0
    f["new_users_30d"] = count_users(active_30d & (users["first_days_ago"] < 30))
    # Back after more than 30 days away: not active 31-60 days ago, first seen earlier.
    f["resurrected_users_30d"] = count_users(active_30d & ~active_prior & (users["first_days_ago"] >= 30))
    f["dropped_users_30d"] = count_users(active_prior & ~active_30d)
    prior_users = count_users(active_prior)
    f["growth_ratio_30d"] = _ratio(
        f["new_users_30d"] + f["resurrected_users_30d"] - f["dropped_users_30d"], prior_users
    )

    # --- trend ------------------------------------------------------------------------------------
    f["events_trend_30d"] = _ratio(f["events_30d"], count(prior_30d))
    f["active_users_trend_30d"] = _ratio(f["active_users_30d"], prior_users)
    f["active_days_trend_30d"] = _ratio(f["active_days_30d"], distinct(prior_30d, "days_ago"))
    # Least-squares slope of weekly active users over 12 weeks; week k ago sits at x = 11 - k, so the
    # slope is sum_k (5.5 - k) * WAU_k / 143 (weeks with no active user count 0).
    weeks = user_days[user_days["days_ago"] < 84].assign(week=lambda d: d["days_ago"] // 7)
    wau = weeks[[*USER, "week"]].drop_duplicates().groupby([ACCOUNT, "week"]).size().rename("wau")
    wau = wau.reset_index()
    f["wau_slope_12w"] = per_account(((5.5 - wau["week"]) * wau["wau"]).groupby(wau[ACCOUNT]).sum()) / 143

    # --- recency: whole days since the last event, core event and new user -----------------------
    last_seen = {
        "days_since_last_event": before.groupby(ACCOUNT)["days_ago"].min(),
        "days_since_last_core_event": core_ever.groupby(ACCOUNT)["days_ago"].min(),
        "days_since_last_new_user": first_seen.groupby(ACCOUNT).min(),
    }
    for name, days_ago in last_seen.items():
        f[name] = per_account(days_ago, None).astype("float64")

    # --- tenure: from the earliest of created_at, first subscription start and first event day ----
    # pes_ml takes the *start of the day* of the first (core) event, not the event's instant.
    def day_start(days_ago: pd.Series) -> pd.Series:
        """The instant the aligned day ``days_ago`` starts (as_of - (days_ago + 1) days)."""
        return as_of - pd.to_timedelta(days_ago + 1, unit="D")

    created = pd.Series(pd.NaT, index=present, dtype="datetime64[us, UTC]")
    if accounts is not None and "created_at" in accounts.columns:
        created = per_account(accounts.groupby(ACCOUNT)["created_at"].min(), None)
        created = created.where(created < as_of)
    first_start = per_account(subs[subs["start"] <= as_of].groupby(ACCOUNT)["start"].min(), None)
    first_event = day_start(per_account(before.groupby(ACCOUNT)["days_ago"].max(), None))
    account_start = pd.concat([created, first_start, first_event], axis=1).min(axis=1)
    f["tenure_days"] = np.floor((as_of - account_start) / DAY)
    first_core = day_start(per_account(core_ever.groupby(ACCOUNT)["days_ago"].max(), None))
    f["days_to_first_core_event"] = np.floor((first_core - account_start) / DAY).clip(lower=0)

    # --- commercial and contract: sums over active subscriptions, the rest from the main one -----
    # The main subscription: the largest MRR, the latest started among equals.
    by_size = active.sort_values([ACCOUNT, "mrr", "start"], na_position="first") if "mrr" in active else (
        active.sort_values([ACCOUNT, "start"]))
    main = by_size.drop_duplicates(ACCOUNT, keep="last").set_index(ACCOUNT)
    attributes = pd.DataFrame(index=present)
    if accounts is not None:
        by_account = accounts.groupby(ACCOUNT)
        for name in ("plan", "segment", "seats"):
            if name in accounts.columns:
                attributes[name] = per_account(by_account[name].max(), None)
    plan = per_account(_column(main, "plan"), None).combine_first(_column(attributes, "plan"))
    f["plan"] = plan.astype("str")
    f["segment"] = _column(attributes, "segment").astype("str")
    # Seats paid for: summed over active subscriptions, else the account's own seats.
    seats = per_account(active.groupby(ACCOUNT)["seats"].sum(min_count=1), None) if "seats" in subs else None
    account_seats = _column(attributes, "seats")
    f["seats"] = (account_seats if seats is None else seats.combine_first(account_seats)).astype("float64")
    f["seat_utilization_30d"] = _ratio(f["active_users_30d"], f["seats"])
    f["mrr"] = per_account(_column(active, "mrr").groupby(active[ACCOUNT]).sum(min_count=1), None)
    f["mrr"] = f["mrr"].astype("float64")
    # MRR change: NaN when no subscription was active 90 days ago (a new account has no change).
    then = as_of - pd.Timedelta(days=90)
    active_then = subs[(subs["start"] <= then) & (subs["end"].isna() | (subs["end"] > then))]
    mrr_then = per_account(_column(active_then, "mrr").groupby(active_then[ACCOUNT]).sum())
    f["mrr_change_90d"] = (f["mrr"] - mrr_then).where(present.isin(active_then[ACCOUNT]))
    f["billing_period_months"] = per_account(_column(main, "billing_period_months"), None).astype("float64")
    renewal = _next_renewal(per_account(main["start"], None), f["billing_period_months"], as_of)
    f["days_to_renewal"] = (renewal - as_of) / DAY
    f["renewal_in_horizon"] = (f["days_to_renewal"] < horizon_days).astype("float64")
    f["renewal_in_horizon"] = f["renewal_in_horizon"].where(f["days_to_renewal"].notna())
    f["discount"] = per_account(_column(main, "discount"), None).astype("float64")
    f["auto_renew"] = per_account(_column(main, "auto_renew"), None).astype("float64")

    # --- classic PES: adoption, stickiness, growth and their percentiles among present accounts --
    no_users = f["active_users_30d"] == 0
    adoption = f["core_events_per_active_user_30d"]
    f["adoption"] = adoption.mask(no_users & f["core_events_ever_share"].notna(), 0.0)
    f["stickiness"] = f["dau_mau_30d"].mask(no_users, 0.0)
    # Classic growth divides by max(prior users, 1) where growth_ratio_30d is NaN on no prior users.
    f["growth"] = (
        f["new_users_30d"] + f["resurrected_users_30d"] - f["dropped_users_30d"]
    ) / np.maximum(prior_users, 1).astype("float64")
    for name in ("adoption", "stickiness", "growth"):
        f[f"{name}_percentile"] = f[name].rank(method="average", pct=True) * 100.0
    f["classic_pes"] = f[["adoption_percentile", "stickiness_percentile", "growth_percentile"]].mean(axis=1)

    f = f.reset_index()
    f.insert(1, "as_of", as_of.as_unit("us"))
    order = [ACCOUNT, "as_of", *CATALOG_ORDER, *type_columns.values(), *CLASSIC_PES]
    features = f[order]
    features.attrs.update(event_types=event_types, core_events=core_events)
    return features


def read_inputs(data: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """The events, subscriptions and (when present) accounts Parquet files of a folder."""
    accounts = data / "accounts.parquet"
    return (
        pd.read_parquet(data / "events.parquet"),
        pd.read_parquet(data / "subscriptions.parquet"),
        pd.read_parquet(accounts) if accounts.exists() else None,
    )


# --- agreement with pes_ml --------------------------------------------------------------------


def pes_ml_features(data: Path, as_of: str) -> pd.DataFrame:
    """pes_ml's FeatureFrame at ``as_of`` on DuckDB (the reference of the agreement check)."""
    from pes_ml.config import PesConfig
    from pes_ml.engine import ibis_backend
    from pes_ml.features.build import compute_features
    from pes_ml.features.inputs import FeatureTables

    config = PesConfig.model_validate({"engine": "duckdb", "sources": {"events": {"path": "unused"}}})
    paths = {name: data / f"{name}.parquet" for name in ("events", "subscriptions", "accounts")}
    return compute_features(FeatureTables.from_paths(ibis_backend(config), paths), [as_of])


def agreement(reference: pd.DataFrame, baseline: pd.DataFrame, rtol: float = 1e-9) -> pd.DataFrame:
    """Per column of ``reference``: does ``baseline`` agree on the accounts of both?

    Integers and strings must be equal, floats within ``rtol`` (relative), missing values
    in the same rows. Returns one row per column: kind, result, max abs diff, mismatching rows.
    """
    ref = reference.set_index(ACCOUNT)
    base = baseline.set_index(ACCOUNT).reindex(ref.index)
    rows = []
    for name in ref.columns:
        if name not in base.columns:
            rows.append((name, str(ref[name].dtype), "missing in baseline", np.nan, len(ref)))
            continue
        r, b = ref[name], base[name]
        missing = r.isna().to_numpy() != b.isna().to_numpy()
        max_diff = np.nan
        if pd.api.types.is_integer_dtype(r.dtype) or pd.api.types.is_float_dtype(r.dtype):
            rv, bv = r.to_numpy("float64", na_value=np.nan), b.to_numpy("float64", na_value=np.nan)
            both = ~np.isnan(rv) & ~np.isnan(bv)
            diff = np.abs(rv - bv)
            max_diff = float(diff[both].max()) if both.any() else 0.0
            if pd.api.types.is_integer_dtype(r.dtype):
                wrong = both & (diff != 0)
            else:
                wrong = both & (diff > rtol * np.maximum(np.abs(rv), np.abs(bv)))
        else:  # strings and instants
            both = r.notna().to_numpy() & b.notna().to_numpy()
            wrong = both & (r.astype("object").to_numpy() != b.astype("object").to_numpy())
        bad = int((wrong | missing).sum())
        if str(r.dtype) != str(b.dtype):
            rows.append((name, f"{r.dtype} vs {b.dtype}", "DTYPE DIFFERS", max_diff, bad))
        else:
            rows.append((name, str(r.dtype), "equal" if bad == 0 else "DIFFERENT", max_diff, bad))
    extra = [c for c in base.columns if c not in ref.columns]
    rows += [(name, str(base[name].dtype), "missing in pes_ml", np.nan, len(base)) for name in extra]
    return pd.DataFrame(rows, columns=["column", "dtype", "result", "max_abs_diff", "mismatching_rows"])


def check(data: Path, as_of: str) -> bool:
    """Print the agreement of the baseline with pes_ml at ``as_of``; True when every column agrees."""
    reference = pes_ml_features(data, as_of)
    baseline = pandas_features(*read_inputs(data), as_of)
    same_rows = set(reference[ACCOUNT]) == set(baseline[ACCOUNT])
    print(f"rows: pes_ml {len(reference):,}, pandas {len(baseline):,}, same accounts: {same_rows}")
    print(f"columns: pes_ml {reference.shape[1]}, pandas {baseline.shape[1]}, "
          f"same order: {list(reference.columns) == list(baseline.columns)}")
    for name in ("event_types", "core_events"):
        print(f"{name}: pes_ml {reference.attrs[name]}, pandas {baseline.attrs[name]}")
    table = agreement(reference, baseline)
    with pd.option_context("display.max_rows", None, "display.width", 140):
        print(table.to_string(index=False))
    agreed = same_rows and bool((table["result"] == "equal").all())
    print("every column agrees" if agreed else "DISAGREEMENT: see the table above")
    return agreed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="Folder with events/subscriptions/accounts.")
    parser.add_argument("--as-of", default="2024-06-29", help="The snapshot date (UTC midnight).")
    parser.add_argument("--check", action="store_true", help="Compare every column with pes_ml on DuckDB.")
    args = parser.parse_args()
    if args.check:
        sys.exit(0 if check(args.data, args.as_of) else 1)
    features = pandas_features(*read_inputs(args.data), args.as_of)
    print(features.describe(include="all").T.to_string())


if __name__ == "__main__":
    main()
