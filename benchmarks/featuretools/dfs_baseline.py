"""featuretools DFS baseline for the feature benchmark (runs in ``benchmarks/.venv-featuretools``).

featuretools fails on pandas 3, so this script runs in its own venv (pandas 2; see
``requirements.txt`` beside it) and imports nothing from ``pes_ml``.
``benchmarks/bench_featuretools.py`` creates that venv and runs this script in a fresh process.

It reads the benchmark's Parquet input (``events.parquet``, ``accounts.parquet`` from
``bench_features.generate``), builds an EntitySet (accounts 1 - n events), and runs ``ft.dfs``
with one cutoff time per as_of for every account (``--as-of`` takes one date or several,
comma-separated: the cutoff-time dataframe then has a row per (account, as_of), every account at
every date), once per window (7, 30, 90 days: ``training_window``; DFS takes one training window
per call, for all cutoff times), with
``include_cutoff_time=False`` so that a window of n days is the half-open
``as_of - n days <= timestamp < as_of``, as in pes_ml. Features (a comparable subset of
pes_ml's catalog), renamed to pes_ml's names::

    COUNT(events)                 -> events_{n}d
    NUM_UNIQUE(events.user_id)    -> active_users_{n}d
    NUM_UNIQUE(events.event)      -> event_types_{n}d
    SUM(events.value)             -> value_sum_{n}d
    N_UNIQUE_DAYS(events.timestamp) -> active_days_{n}d
    TIME_SINCE_LAST(events.timestamp), days, 90-day call -> days_since_last_event (fractional)
    COUNT(events WHERE event = e), 30-day call, 8 most common types in the 90 days before the
                                  earliest as_of (as pes_ml) -> events_type_{e}_30d

Prints one JSON line: seconds, cpu_seconds, peak_rss_mib (VmHWM of /proc/self/status), rows,
columns, the phase times, and the library versions. Progress lines go to stderr.
``--out`` writes the feature matrix to Parquet after the measurement: account_id + features for
one as_of; account_id, as_of (tz-naive UTC midnight) + features for several.

Usage::

    benchmarks/.venv-featuretools/bin/python benchmarks/featuretools/dfs_baseline.py \
        --data benchmarks/out/features_1000000_10000_v4 --as-of 2024-06-29
    benchmarks/.venv-featuretools/bin/python benchmarks/featuretools/dfs_baseline.py \
        --data benchmarks/out/features_1000000_10000_v4 --as-of 2024-03-01,2024-04-01,2024-05-01
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import warnings
from pathlib import Path

WINDOWS = (7, 30, 90)
TOP_EVENT_TYPES = 8


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _log(started: float, message: str) -> None:
    print(f"[{time.perf_counter() - started:8.1f} s, VmHWM {_peak_rss_mib():6.0f} MiB] {message}",
          file=sys.stderr, flush=True)


def run(data: Path, as_of: list[str]) -> tuple[dict[str, object], object]:
    """DFS at every date of ``as_of``; figures, and the feature matrix (indexed by account_id for
    one date, by (account_id, as_of) for several)."""
    import featuretools as ft
    import pandas as pd
    import woodwork as ww
    from woodwork.logical_types import Categorical, Datetime, Double

    started, cpu = time.perf_counter(), _cpu_seconds()
    phases: dict[str, float] = {}
    # tz-naive UTC, like the events below
    cutoffs = sorted({pd.Timestamp(d, tz="UTC").tz_convert(None) for d in as_of})
    multi = len(cutoffs) > 1

    # --- read -----------------------------------------------------------------------------------
    events = pd.read_parquet(data / "events.parquet",
                             columns=["account_id", "user_id", "event", "timestamp", "value"])
    events["timestamp"] = events["timestamp"].dt.tz_convert(None)
    for column in ("account_id", "user_id", "event"):
        events[column] = events[column].astype("category")
    accounts = pd.read_parquet(data / "accounts.parquet", columns=["account_id"])
    phases["read"] = time.perf_counter() - started
    _log(started, f"read {len(events):,} events, {len(accounts):,} accounts")

    # --- entity set -----------------------------------------------------------------------------
    mark = time.perf_counter()
    es = ft.EntitySet(id="saas")
    es.add_dataframe(dataframe_name="accounts", dataframe=accounts, index="account_id",
                     logical_types={"account_id": Categorical})
    es.add_dataframe(
        dataframe_name="events", dataframe=events, index="event_row", make_index=True,
        time_index="timestamp",
        logical_types={"account_id": Categorical, "user_id": Categorical, "event": Categorical,
                       "timestamp": Datetime, "value": Double},
    )
    del events
    es.add_relationship("accounts", "account_id", "events", "account_id")
    es.add_last_time_indexes()
    # The 8 most common event types in the 90 days before the earliest as_of (as pes_ml's top-N),
    # as interesting values for the per-type counts.
    ev = es["events"]
    first = cutoffs[0]
    recent = ev[(ev["timestamp"] < first) & (ev["timestamp"] >= first - pd.Timedelta(days=90))]
    top = [str(e) for e in recent["event"].value_counts().index[:TOP_EVENT_TYPES]]
    del recent
    es.add_interesting_values(dataframe_name="events", values={"event": top})
    phases["entityset"] = time.perf_counter() - mark
    _log(started, f"entity set built; top event types {top}")

    # --- DFS, one call per training window ------------------------------------------------------
    mark = time.perf_counter()
    # One row per (account, as_of): every account at every date.
    cutoff_times = pd.concat(
        [pd.DataFrame({"account_id": accounts["account_id"], "time": cutoff}) for cutoff in cutoffs],
        ignore_index=True,
    )
    frames = []
    for window in WINDOWS:
        agg = ["count", "num_unique", "sum", "n_unique_days"]
        if window == 90:
            agg.append(ft.primitives.TimeSinceLast(unit="days"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            matrix, features = ft.dfs(
                entityset=es, target_dataframe_name="accounts", cutoff_time=cutoff_times,
                training_window=f"{window} days", include_cutoff_time=False,
                agg_primitives=agg, trans_primitives=[],
                where_primitives=["count"] if window == 30 else [],
                # Several dates: index (account_id, time), so the windows' matrices align on it.
                max_depth=1, cutoff_time_in_index=multi,
                ignore_columns={"events": ["account_id"]},
            )
        names = {}
        for feature in features:
            name = feature.get_name()
            if name == "COUNT(events)":
                names[name] = f"events_{window}d"
            elif name == "NUM_UNIQUE(events.user_id)":
                names[name] = f"active_users_{window}d"
            elif name == "NUM_UNIQUE(events.event)":
                names[name] = f"event_types_{window}d"
            elif name == "SUM(events.value)":
                names[name] = f"value_sum_{window}d"
            elif name == "N_UNIQUE_DAYS(events.timestamp)":
                names[name] = f"active_days_{window}d"
            elif name.startswith("TIME_SINCE_LAST("):
                names[name] = "days_since_last_event"
            elif name.startswith("COUNT(events WHERE event = "):
                event = name.removeprefix("COUNT(events WHERE event = ").removesuffix(")")
                names[name] = f"events_type_{event}_{window}d"
        frames.append(matrix[list(names)].rename(columns=names))
        _log(started, f"dfs, {window}-day window: {len(names)} features "
                      f"({time.perf_counter() - mark:.1f} s so far)")
    result = pd.concat(frames, axis=1)
    if multi:
        result.index = result.index.set_names(["account_id", "as_of"])
    phases["dfs"] = time.perf_counter() - mark
    seconds = time.perf_counter() - started
    figures: dict[str, object] = {
        "seconds": seconds, "cpu_seconds": _cpu_seconds() - cpu, "peak_rss_mib": _peak_rss_mib(),
        "rows": len(result), "columns": result.shape[1], "cutoffs": len(cutoffs), "phases": phases,
        "versions": {"featuretools": ft.__version__, "woodwork": ww.__version__,
                     "pandas": pd.__version__, "python": sys.version.split()[0]},
    }
    return figures, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="Folder with the benchmark Parquet input.")
    parser.add_argument("--as-of", default="2024-06-29",
                        help="The cutoff time (UTC midnight), or several, comma-separated.")
    parser.add_argument("--out", type=Path, default=None, help="Write the feature matrix here (Parquet).")
    args = parser.parse_args()
    figures, result = run(args.data, [d.strip() for d in args.as_of.split(",") if d.strip()])
    if args.out is not None:
        result.reset_index().to_parquet(args.out)  # type: ignore[attr-defined]
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
