"""Ingest + validate benchmark: pes_ml (DuckDB) against plain pandas, on the same input, in the same run.

    .venv/bin/python benchmarks/bench_ingest.py            # 10M events, about 5 minutes on 2 cores
    .venv/bin/python benchmarks/bench_ingest.py --rows 1000000

Generates N synthetic events with DuckDB (once; kept in --data-dir) as Parquet and
as CSV.gz, seeded with a few bad rows of every kind (missing id, unparseable or
far-future timestamp, text or negative value, exact duplicates). Then each
variant runs in its own subprocess, which reports its wall time and its peak RSS
(``VmHWM`` of ``/proc/self/status``, native DuckDB/Arrow memory included; not
``ru_maxrss``, which a child inherits from its parent across fork + exec):

- ``pes_ml``  : ``pes_ml.ingest.ingest`` -> clean + quarantine Parquet + reconciliation
- ``pandas``  : ``pandas.read_csv`` / ``read_parquet`` + the same checks in pandas
  (same priority order, same dedup) -> clean + quarantine Parquet

Figures are printed with ratios (pandas / pes_ml). The machine may be shared:
the load average before and after is printed so contention is visible.
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
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def generate(data_dir: Path, rows: int) -> tuple[Path, Path]:
    """Write ``rows`` events as Parquet and CSV.gz (skipped when already present)."""
    import duckdb

    data_dir.mkdir(parents=True, exist_ok=True)
    parquet = data_dir / f"events_{rows}.parquet"
    csv_gz = data_dir / f"events_{rows}.csv.gz"
    if parquet.exists() and csv_gz.exists():
        return parquet, csv_gz
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    # ~1 row in 1,000 is bad in some way, ~1 in 500 is an exact duplicate of its neighbour.
    con.execute(
        f"""
        CREATE TABLE events AS
        WITH base AS (
            SELECT i, (hash(i) >> 1)::BIGINT AS h FROM range({rows}) t(i)
        )
        SELECT
            CASE WHEN h % 1000 = 1 THEN NULL ELSE 'acc_' || ((h // 7) % 50000)::VARCHAR END AS account_id,
            'u_' || ((h // 11) % 200000)::VARCHAR AS user_id,
            (['login','view_dashboard','create_report','export','invite_user','comment','search',
              'upload','share','settings'])[1 + (h // 13) % 10] AS event,
            CASE
                WHEN h % 1000 = 2 THEN 'not a date'
                WHEN h % 1000 = 3 THEN '2999-01-01 00:00:00'
                ELSE strftime(TIMESTAMP '2024-01-01' + to_seconds((i // 2) * 3), '%Y-%m-%d %H:%M:%S')
            END AS timestamp,
            CASE
                WHEN h % 1000 = 4 THEN 'abc'
                WHEN h % 1000 = 5 THEN '-1'
                WHEN h % 4 = 0 THEN NULL
                ELSE ((h // 17) % 100)::VARCHAR
            END AS value
        FROM base
        """
    )
    # Exact duplicates: row i copies row i-1 for ~0.2% of rows.
    con.execute(
        """
        CREATE TABLE events2 AS
        SELECT CASE WHEN dup THEN lag(account_id) OVER w ELSE account_id END AS account_id,
               CASE WHEN dup THEN lag(user_id) OVER w ELSE user_id END AS user_id,
               CASE WHEN dup THEN lag(event) OVER w ELSE event END AS event,
               CASE WHEN dup THEN lag(timestamp) OVER w ELSE timestamp END AS timestamp,
               CASE WHEN dup THEN lag(value) OVER w ELSE value END AS value
        FROM (SELECT *, row_number() OVER () AS rn,
                     (hash(rn * 31) >> 1)::BIGINT % 500 = 0 AND rn > 1 AS dup FROM events)
        WINDOW w AS (ORDER BY rn)
        ORDER BY rn
        """
    )
    con.execute(f"COPY events2 TO '{csv_gz}' (HEADER, COMPRESSION gzip)")
    # Parquet keeps the natural types a warehouse export would have.
    con.execute(
        f"""COPY (SELECT account_id, user_id, event, TRY_CAST(timestamp AS TIMESTAMP) AS timestamp,
                  TRY_CAST(value AS DOUBLE) AS value FROM events2) TO '{parquet}' (FORMAT parquet)"""
    )
    con.close()
    return parquet, csv_gz


def run_pes_ml(source: Path, work_dir: Path) -> dict[str, float]:
    from pes_ml.config import parse_config
    from pes_ml.ingest import ingest

    config = parse_config(
        {"work_dir": str(work_dir), "sources": {"events": {"path": str(source)}}, "validation": {}}
    )
    recon = ingest(config)
    events = recon.table("events")
    return {"read": events.read, "loaded": events.loaded, "quarantined": events.quarantined}


def run_pandas(source: Path, work_dir: Path) -> dict[str, float]:
    """The baseline: the same checks, in the same priority order, written the obvious pandas way."""
    import numpy as np
    import pandas as pd

    if source.suffix == ".parquet":
        raw = pd.read_parquet(source)
        ts_present = raw["timestamp"].notna()
        ts = raw["timestamp"].dt.tz_localize("UTC")  # naive timestamps are UTC
        value_present = raw["value"].notna()
    else:
        raw = pd.read_csv(source, dtype=str, keep_default_na=False, na_values=[""])
        ts_text = raw["timestamp"].str.strip().replace("", np.nan)
        ts_present = ts_text.notna()
        ts = pd.to_datetime(ts_text, errors="coerce", utc=True, format="ISO8601")
        value_present = raw["value"].notna()
    account = raw["account_id"].str.strip().replace("", np.nan)
    event = raw["event"].str.strip().replace("", np.nan)
    value = pd.to_numeric(raw["value"], errors="coerce")
    now = pd.Timestamp.now(tz="UTC")
    conditions = [
        account.isna(),
        event.isna(),
        ~ts_present,
        ts.isna(),
        ts < pd.Timestamp("1990-01-01", tz="UTC"),
        ts > now + pd.Timedelta(days=1),
        value_present & (value.isna() | ~np.isfinite(value)),
        value < 0,
    ]
    reasons = [
        "missing account_id",
        "missing event",
        "missing timestamp",
        "unparseable timestamp",
        "timestamp before min_timestamp",
        "timestamp in the far future",
        "non-numeric value",
        "negative value",
    ]
    reason = pd.Series(np.select(conditions, reasons, default=""), index=raw.index)
    bad = reason != ""
    clean = pd.DataFrame(
        {"account_id": account, "user_id": raw["user_id"], "event": event, "timestamp": ts, "value": value}
    )[~bad]
    clean = clean.drop_duplicates().sort_values(["account_id", "timestamp", "event"])
    source_row = np.flatnonzero(bad.to_numpy()) + 1
    quarantine = raw[bad].astype(str).assign(reason=reason[bad], source_row=source_row)
    work_dir.mkdir(parents=True, exist_ok=True)
    clean.to_parquet(work_dir / "events.parquet", index=False)
    quarantine.to_parquet(work_dir / "quarantine.parquet", index=False)
    return {"read": len(raw), "loaded": len(clean), "quarantined": int(bad.sum())}


def child(variant: str, source: Path, work_dir: Path) -> None:
    start = time.perf_counter()
    counts = (run_pes_ml if variant == "pes_ml" else run_pandas)(source, work_dir)
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mib": peak_rss_mib(), **counts}))


def peak_rss_mib() -> float:
    """Peak RSS of this process: VmHWM, which (unlike ru_maxrss) is not inherited across fork + exec."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(variant: str, source: Path, work_dir: Path) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", variant, "--source", str(source), "--work-dir", str(work_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{variant} on {source.name} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000, help="Events to generate.")
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".pes_ml" / "bench" / "ingest")
    parser.add_argument("--child", choices=["pes_ml", "pandas", "generate"], help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "generate":
        generate(args.data_dir, args.rows)
        return
    if args.child:
        child(args.child, args.source, args.work_dir)
        return

    load_before = os.getloadavg()
    start = time.perf_counter()
    # Generated in a subprocess so this parent stays small while it measures the variants.
    subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            "generate",
            "--rows",
            str(args.rows),
            "--data-dir",
            str(args.data_dir),
        ],
        check=True,
    )
    parquet, csv_gz = (
        args.data_dir / f"events_{args.rows}.parquet",
        args.data_dir / f"events_{args.rows}.csv.gz",
    )
    print(f"input: {args.rows:,} events; generated/reused in {time.perf_counter() - start:.1f}s")
    print(f"  {parquet} ({parquet.stat().st_size / 2**20:.0f} MiB)")
    print(f"  {csv_gz} ({csv_gz.stat().st_size / 2**20:.0f} MiB)")
    results: dict[tuple[str, str], dict[str, float]] = {}
    for fmt, source in (("CSV.gz", csv_gz), ("Parquet", parquet)):
        for variant in ("pes_ml", "pandas"):
            result = measure(variant, source, args.data_dir / f"work_{variant}_{fmt}")
            results[(fmt, variant)] = result
            print(
                f"{fmt:8} {variant:7} {result['seconds']:7.1f}s "
                f"{result['read'] / result['seconds']:>12,.0f} ev/s "
                f"peak RSS {result['peak_rss_mib']:7.0f} MiB  (read {result['read']:,.0f}, "
                f"loaded {result['loaded']:,.0f}, quarantined {result['quarantined']:,.0f})",
                flush=True,
            )
    load_after = os.getloadavg()
    print()
    print(
        f"date: {datetime.now(UTC):%Y-%m-%d}, machine: {os.cpu_count()} cores, {platform.machine()}, "
        f"python {platform.python_version()}"
    )
    print(f"load average (1, 5, 15 min) before: {load_before}, after: {load_after}")
    print()
    print(
        "| input | variant | wall s | CPU s | events/s (wall) | events/CPU-s | peak RSS MiB "
        "| speed vs pandas (wall) | CPU vs pandas | RSS vs pandas |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for fmt in ("CSV.gz", "Parquet"):
        base = results[(fmt, "pandas")]
        for variant in ("pes_ml", "pandas"):
            r = results[(fmt, variant)]
            speed = base["seconds"] / r["seconds"]
            cpu = base["cpu_seconds"] / r["cpu_seconds"]
            rss = r["peak_rss_mib"] / base["peak_rss_mib"]
            print(
                f"| {fmt} | {variant} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | "
                f"{r['read'] / r['seconds']:,.0f} | {r['read'] / r['cpu_seconds']:,.0f} | "
                f"{r['peak_rss_mib']:,.0f} | {speed:.2f}x | {cpu:.2f}x | {rss:.2f}x |"
            )


if __name__ == "__main__":
    main()
