"""Feature benchmark: the full catalog on DuckDB over a synthetic event log, with named baselines.

Prints, for each measurement, its figure and its ratio against the baseline measured in the same run:

- DuckDB, full catalog, one as_of: events/s and peak RSS (a fresh process per measurement);
- DuckDB, 12 monthly as_of: time ratio against one as_of (goal <= 2x), both on a second log of the
  same size spread over 450 days, so that every monthly as_of has its full 90 days of history;
- a straightforward pandas groupby implementation of the same full catalog (every column of
  the FeatureFrame, ``benchmarks/pandas_baseline.py``) at one as_of, reading the Parquet input
  included (goal: DuckDB >= 3x faster);
- Spark local[*], full catalog, one as_of (for the record; one run);
- with ``--weekly N``: N weekly as_of dates on the 450-day log (a training set with weekly
  snapshots), for the record: time, peak RSS and the frame's own size, against one as_of.

Each figure is the median of ``--repeat`` runs (default 3), each in a fresh process: on a shared
or virtual machine single runs differ by 25% and more. The one- and twelve-as_of runs alternate.

Usage (from the project root)::

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_features.py \
        --events 10_000_000 --accounts 100_000

The input is generated with DuckDB SQL (the simulator is slower at this size): sessions of
~6 events by one user on one day, 30 event types with a skewed mix, 1-8 users per account,
180 days, one subscription per account. Events are sorted by (account_id, timestamp) and written
with ingest's codec and DuckDB's default row groups: the layout of the clean table ingest writes,
which the feature stage always reads. It is written once to ``--data`` (default:
``benchmarks/out/``, git-ignored) and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DAYS = 180
START = "2024-01-01"
ONE_AS_OF = ["2024-06-29"]
# The 12-as_of measurement: a training set's monthly snapshot dates, all inside a longer log
# (2024-01-01 .. 2025-03-26) and each with 90 days of history; its one-as_of baseline is the last date.
MONTHLY_DAYS = 450
MONTHLY = [f"2024-{m:02d}-01" for m in range(4, 13)] + [f"2025-{m:02d}-01" for m in (1, 2, 3)]


def weekly(n: int) -> list[str]:
    """``n`` as_of dates a week apart, the last on the monthly run's last date."""
    end = date.fromisoformat(MONTHLY[-1])
    return [(end - timedelta(weeks=k)).isoformat() for k in reversed(range(n))]


def data_folder(n_events: int, n_accounts: int, days: int = DAYS) -> Path:
    """The default folder of the generated input (v4: clean-table order and codec, churn fades activity,
    expansions)."""
    span = "" if days == DAYS else f"_{days}d"
    return ROOT / "benchmarks" / "out" / f"features_{n_events}_{n_accounts}{span}_v4"


def generate(folder: Path, n_events: int, n_accounts: int, days: int = DAYS) -> dict[str, Path]:
    """Write events, subscriptions and accounts Parquet files (skipped when present)."""
    import duckdb

    from pes_ml.ingest.quarantine import COMPRESSION

    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / f"{name}.parquet" for name in ("events", "subscriptions", "accounts")}
    if all(p.exists() for p in paths.values()):
        return paths
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET temp_directory = '{folder / '.spill'}'")
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET memory_limit = '4GB'")  # the sort spills; leave room for other jobs
    session = 6
    churn_end = (  # the subscription end of the 10% of accounts that churn (see subscriptions below)
        "CASE WHEN hash(a, 8) % 10 = 0 THEN TIMESTAMPTZ '2024-02-01 00:00:00+00' "
        "+ to_days(CAST(hash(a, 9) % 300 AS INT)) END"
    )
    con.execute(f"""
        COPY (
          WITH s AS (
            SELECT i, i // {session} AS sid,
                   CAST(floor(pow(hash(i // {session}) % 1000000 / 1e6, 1.3) * {n_accounts}) AS BIGINT) AS a
            FROM range({n_events}) t(i)
          ), e AS (
            SELECT i, a, sid, {churn_end} AS churn_end,
                   TIMESTAMPTZ '{START} 00:00:00+00'
                     + to_seconds(CAST((hash(sid, 3) % {days}) * 86400 + hash(sid, 4) % 80000
                                       + (i % {session}) * 30 AS BIGINT)) AS timestamp
            FROM s
          )
          SELECT printf('a%07d', a) AS account_id,
                 printf('a%07d-u%d', a, hash(sid, 1) % (1 + hash(a) % 8)) AS user_id,
                 printf('ev%02d', CAST(floor(pow((hash(i, 2) % 10000) / 1e4, 2.2) * 30) AS INT)) AS event,
                 timestamp,
                 CASE WHEN hash(i, 5) % 10 = 0 THEN (hash(i, 6) % 100) / 10.0 END AS value
          FROM e
          -- Churned accounts stop using the product at their end, and fade in the 45 days before it.
          WHERE churn_end IS NULL
             OR (timestamp < churn_end
                 AND NOT (timestamp >= churn_end - INTERVAL 45 DAY AND hash(i, 15) % 10 < 6))
          ORDER BY account_id, timestamp
        ) TO '{paths["events"]}' (FORMAT parquet, COMPRESSION {COMPRESSION})
    """)
    con.execute(f"""
        COPY (
          SELECT printf('a%07d', a) AS account_id,
                 TIMESTAMPTZ '2023-06-01 00:00:00+00' + to_days(CAST(hash(a, 7) % 400 AS INT)) AS start,
                 {churn_end} AS "end",
                 CAST(hash(a, 10) % 500 AS DOUBLE) AS mrr,
                 CAST(1 + hash(a) % 8 AS DOUBLE) AS seats,
                 CASE hash(a, 11) % 3 WHEN 0 THEN 'starter' WHEN 1 THEN 'team' ELSE 'business' END AS plan,
                 CASE WHEN hash(a, 12) % 4 = 0 THEN 12.0 ELSE 1.0 END AS billing_period_months,
                 (hash(a, 13) % 20) / 100.0 AS discount
          FROM range({n_accounts}) t(a)
          UNION ALL
          -- One account in 12 that does not churn expands: an add-on subscription at +50% MRR.
          SELECT printf('a%07d', a),
                 TIMESTAMPTZ '2024-02-01 00:00:00+00' + to_days(CAST(hash(a, 17) % 240 AS INT)), NULL,
                 CAST(hash(a, 10) % 500 AS DOUBLE) * 0.5, 2.0,
                 CASE hash(a, 11) % 3 WHEN 0 THEN 'starter' WHEN 1 THEN 'team' ELSE 'business' END, 1.0, 0.0
          FROM range({n_accounts}) t(a)
          WHERE hash(a, 16) % 12 = 0 AND hash(a, 8) % 10 <> 0
        ) TO '{paths["subscriptions"]}' (FORMAT parquet, COMPRESSION {COMPRESSION})
    """)
    con.execute(f"""
        COPY (
          SELECT printf('a%07d', a) AS account_id,
                 TIMESTAMPTZ '2023-05-01 00:00:00+00' + to_days(CAST(hash(a, 7) % 400 AS INT)) AS created_at,
                 CASE hash(a, 14) % 3 WHEN 0 THEN 'smb' WHEN 1 THEN 'mid_market'
                      ELSE 'enterprise' END AS segment
          FROM range({n_accounts}) t(a)
        ) TO '{paths["accounts"]}' (FORMAT parquet, COMPRESSION {COMPRESSION})
    """)
    return paths


# --- one measurement per process (peak RSS is the process's own) ------------------------------


def _cpu_seconds() -> float:
    """User + system CPU time of this process (all its threads): robust to a shared, loaded machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _measure_engine(engine: str, data: Path, dates: list[str]) -> dict[str, float]:
    from pes_ml.config import PesConfig
    from pes_ml.engine import ibis_backend
    from pes_ml.features import FeatureTables, compute_features

    limit = os.environ.get("PES_BENCH_MEMORY_LIMIT") or None
    config = PesConfig.model_validate({
        "engine": engine, "sources": {"events": {"path": "unused"}}, "duckdb_memory_limit": limit,
        "work_dir": str(data / "work"),
    })
    backend = ibis_backend(config)
    paths = {name: data / f"{name}.parquet" for name in ("events", "subscriptions", "accounts")}
    if engine == "spark":  # start the JVM before the clock
        backend._session.range(1).count()
    started, cpu = time.perf_counter(), _cpu_seconds()
    features = compute_features(FeatureTables.from_paths(backend, paths), dates)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "cpu_seconds": _cpu_seconds() - cpu, "rows": len(features),
            "columns": features.shape[1], "frame_mib": features.memory_usage(deep=True).sum() / 2**20}


def _measure_pandas(data: Path, dates: list[str]) -> dict[str, float]:
    """The pandas baseline (pandas_baseline.py): reading the three tables and the full catalog, timed."""
    import pandas as pd
    from pandas_baseline import pandas_features

    started, cpu = time.perf_counter(), _cpu_seconds()
    events = pd.read_parquet(data / "events.parquet")
    subscriptions = pd.read_parquet(data / "subscriptions.parquet")
    accounts = pd.read_parquet(data / "accounts.parquet")
    frames = [pandas_features(events, subscriptions, accounts, d) for d in dates]
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "cpu_seconds": _cpu_seconds() - cpu, "rows": sum(len(f) for f in frames),
            "columns": frames[0].shape[1]}


def _child(kind: str, data: Path, dates: list[str]) -> dict[str, float]:
    """Run one measurement in a fresh interpreter; return its figures and peak RSS."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "SPARK_LOCAL_IP": "127.0.0.1"}
    cmd = [sys.executable, __file__, "--measure", kind, "--data", str(data), "--dates", ",".join(dates)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    if done.returncode:
        raise RuntimeError(f"{kind} failed:\n{done.stderr[-3000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _median(runs: list[dict[str, float]]) -> dict[str, Any]:
    """The run with the median wall time (the upper one for an even count), with every run's wall time
    in the order they ran (``runs``) and the largest peak RSS (``peak_rss_max``)."""
    middle = dict(sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2])
    peak = max(r["peak_rss_mib"] for r in runs)
    return {**middle, "runs": [r["seconds"] for r in runs], "peak_rss_max": peak}


def _repeated(kind: str, data: Path, dates: list[str], repeat: int) -> dict[str, Any]:
    """``repeat`` measurements, each in a fresh interpreter: their median (:func:`_median`)."""
    return _median([_child(kind, data, dates) for _ in range(repeat)])


def _runs(result: dict[str, Any]) -> str:
    return " / ".join(f"{s:.2f}" for s in result["runs"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=lambda s: int(s.replace("_", "")), default=10_000_000)
    parser.add_argument("--accounts", type=lambda s: int(s.replace("_", "")), default=100_000)
    parser.add_argument("--data", type=Path, default=None, help="Folder for the generated input.")
    parser.add_argument("--skip-spark", action="store_true")
    parser.add_argument("--skip-pandas", action="store_true")
    parser.add_argument("--skip-monthly", action="store_true", help="Skip the 12 monthly as_of run.")
    parser.add_argument(
        "--weekly", type=int, default=0, metavar="N",
        help="Also measure N weekly as_of dates on the 450-day log (e.g. 52); default: skip.",
    )
    parser.add_argument(
        "--memory-limit", default=None, help="duckdb_memory_limit of the config (e.g. 2GB); default: none."
    )
    parser.add_argument(
        "--repeat", type=int, default=3,
        help="Fresh-process runs per measurement; the median run is reported (default: 3).",
    )
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--dates", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_limit:  # read by the measuring children
        os.environ["PES_BENCH_MEMORY_LIMIT"] = args.memory_limit
    data = args.data or data_folder(args.events, args.accounts)

    if args.measure:
        dates = args.dates.split(",")
        if args.measure == "pandas":
            result = _measure_pandas(data, dates)
        else:
            result = _measure_engine(args.measure, data, dates)
        from bench_ingest import peak_rss_mib  # VmHWM: a child's ru_maxrss starts at its parent's peak

        result["peak_rss_mib"] = peak_rss_mib()
        print(json.dumps(result))
        return

    import pyarrow.parquet as pq

    started = time.perf_counter()
    paths = generate(data, args.events, args.accounts)
    n_events = pq.ParquetFile(paths["events"]).metadata.num_rows  # churned accounts stop early
    print(
        f"input: {n_events:,} events, {args.accounts:,} accounts, {DAYS} days at {data} "
        f"(ready in {time.perf_counter() - started:.1f} s)"
    )
    print(
        f"date {date.today()}, machine {platform.machine()}, {os.cpu_count()} cores (shared), "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    repeat = max(1, args.repeat)
    print(f"each figure: the median of {repeat} runs, each in a fresh process (runs in the order they ran)")
    one = _repeated("duckdb", data, ONE_AS_OF, repeat)
    rate = n_events / one["seconds"]
    print(
        f"duckdb, full catalog ({one['columns']} columns), 1 as_of: {one['seconds']:.2f} s wall "
        f"(runs {_runs(one)}), {one['cpu_seconds']:.2f} CPU-s; {rate / 1e6:.2f}M events/s wall, "
        f"{n_events / one['cpu_seconds'] / 1e6:.2f}M events per CPU-s; "
        f"peak RSS {one['peak_rss_max']:.0f} MiB, {one['rows']:,} rows (goal >= 5M events/s)"
    )
    long_data = (  # the monthly and weekly runs' log
        data_folder(args.events, args.accounts, MONTHLY_DAYS) if args.data is None
        else args.data.with_name(f"{args.data.name}_{MONTHLY_DAYS}d")
    )
    if not args.skip_monthly or args.weekly:
        generate(long_data, args.events, args.accounts, MONTHLY_DAYS)
    if not args.skip_monthly:
        pairs = [  # interleaved, so that a change in the machine's load hits both alike
            (_child("duckdb", long_data, MONTHLY[-1:]), _child("duckdb", long_data, MONTHLY))
            for _ in range(repeat)
        ]
        last, twelve = _median([p[0] for p in pairs]), _median([p[1] for p in pairs])
        ratios = " / ".join(f"{b['seconds'] / a['seconds']:.2f}x" for a, b in pairs)
        print(
            f"{MONTHLY_DAYS}-day log of the same size: duckdb, 1 as_of ({MONTHLY[-1]}): "
            f"{last['seconds']:.2f} s wall (runs {_runs(last)}), {last['cpu_seconds']:.2f} CPU-s; "
            f"12 monthly as_of ({MONTHLY[0]} .. {MONTHLY[-1]}): "
            f"{twelve['seconds']:.2f} s wall (runs {_runs(twelve)}), {twelve['cpu_seconds']:.2f} CPU-s, "
            f"{twelve['rows']:,} rows, peak RSS {twelve['peak_rss_max']:.0f} MiB; ratio vs 1 as_of "
            f"{twelve['seconds'] / last['seconds']:.2f}x wall (run by run {ratios}), "
            f"{twelve['cpu_seconds'] / last['cpu_seconds']:.2f}x CPU (goal <= 2x)"
        )
    if args.weekly:
        dates = weekly(args.weekly)
        pairs = [(_child("duckdb", long_data, dates[-1:]), _child("duckdb", long_data, dates))
                 for _ in range(repeat)]
        last, many = _median([p[0] for p in pairs]), _median([p[1] for p in pairs])
        print(
            f"{MONTHLY_DAYS}-day log: duckdb, {args.weekly} weekly as_of ({dates[0]} .. {dates[-1]}): "
            f"{many['seconds']:.2f} s wall (runs {_runs(many)}), {many['rows']:,} rows, "
            f"frame {many['frame_mib']:.0f} MiB, peak RSS {many['peak_rss_max']:.0f} MiB "
            f"({many['peak_rss_max'] / many['frame_mib']:.2f}x the frame); against 1 as_of "
            f"({last['seconds']:.2f} s, peak RSS {last['peak_rss_max']:.0f} MiB): "
            f"{many['seconds'] / last['seconds']:.2f}x the time, "
            f"{many['peak_rss_max'] / last['peak_rss_max']:.2f}x the peak RSS"
        )
    if not args.skip_pandas:
        base = _repeated("pandas", data, ONE_AS_OF, repeat)
        print(
            f"pandas groupby baseline, full catalog ({base['columns']} columns), 1 as_of: "
            f"{base['seconds']:.2f} s wall (runs {_runs(base)}), "
            f"{base['cpu_seconds']:.2f} CPU-s, peak RSS {base['peak_rss_max']:.0f} MiB; "
            f"duckdb is {base['seconds'] / one['seconds']:.2f}x faster wall, "
            f"{base['cpu_seconds'] / one['cpu_seconds']:.2f}x per CPU-s (goal >= 3x)"
        )
    if not args.skip_spark:
        spark = _child("spark", data, ONE_AS_OF)  # once: ~30 s a run, for the record
        print(
            f"spark local[*], full catalog, 1 as_of: {spark['seconds']:.2f} s "
            f"({n_events / spark['seconds'] / 1e6:.2f}M events/s, driver peak RSS "
            f"{spark['peak_rss_mib']:.0f} MiB); duckdb is {spark['seconds'] / one['seconds']:.2f}x faster"
        )


if __name__ == "__main__":
    main()
