"""Feature benchmark against featuretools DFS (issue 3): pes_ml's full catalog on DuckDB vs a
comparable subset computed by featuretools ``dfs`` with cutoff times, on the same input, in the
same run (goal: pes_ml >= 50x faster).

featuretools fails on pandas 3, so it runs in its own venv, ``benchmarks/.venv-featuretools``
(git-ignored), created here when missing (``python3 -m venv`` + ``pip install -r
benchmarks/featuretools/requirements.txt``); the DFS script is ``benchmarks/featuretools/dfs_baseline.py``.

Each measurement runs in a fresh process (peak RSS is the process's own), one after the other:

- pes_ml, full catalog on DuckDB at one as_of: ``bench_features._measure_engine`` in a child
  process (``bench_features._child``), exactly as ``bench_features.py`` measures it;
- featuretools DFS at the same as_of for every account (7/30/90-day training windows, see
  ``dfs_baseline.py``), capped by ``--timeout``.

Then it checks that the two agree, feature by feature, on every account both computed (pes_ml's
values computed again, untimed, in this process).

``--monthly`` does the same at the 12 monthly as_of of ``bench_features.MONTHLY`` (a training
set's snapshot dates) instead of one: pes_ml computes them in one pass (``_child`` with the 12
dates); featuretools gets a cutoff-time dataframe with a row per (account, as_of), every account
at every date, in each of its DFS calls. The agreement check then aligns on (account_id, as_of).

Usage (from the project root)::

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_featuretools.py \
        --events 1_000_000 --accounts 10_000 [--monthly]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_features import DAYS, MONTHLY, MONTHLY_DAYS, ONE_AS_OF, ROOT, _child, data_folder, generate  # noqa: E402

FT_DIR = ROOT / "benchmarks" / "featuretools"
FT_VENV = ROOT / "benchmarks" / ".venv-featuretools"
FT_PYTHON = FT_VENV / "bin" / "python"
REQUIREMENTS = FT_DIR / "requirements.txt"

# Features both compute, with the same names (dfs_baseline.py renames featuretools' columns).
COMPARED = [
    "events_7d", "events_30d", "events_90d",
    "active_users_7d", "active_users_30d", "active_users_90d",
    "event_types_30d", "value_sum_30d", "value_sum_90d", "active_days_30d",
    "days_since_last_event",
]


def ensure_venv() -> None:
    """Create the featuretools venv and install the pinned requirements when they changed."""
    stamp = FT_VENV / ".requirements.sha256"
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if FT_PYTHON.exists() and stamp.exists() and stamp.read_text().strip() == wanted:
        return
    if not FT_PYTHON.exists():
        print(f"creating {FT_VENV.relative_to(ROOT)} (python3 -m venv)", flush=True)
        subprocess.run(["python3", "-m", "venv", str(FT_VENV)], check=True)
    print(f"installing {REQUIREMENTS.relative_to(ROOT)} into it", flush=True)
    subprocess.run([str(FT_PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "-r", str(REQUIREMENTS)], check=True)
    stamp.write_text(wanted + "\n")


def measure_featuretools(data: Path, dates: list[str], out: Path, timeout: float) -> dict[str, Any]:
    """Run dfs_baseline.py in a fresh process of the featuretools venv; figures, or why it stopped."""
    cmd = [str(FT_PYTHON), str(FT_DIR / "dfs_baseline.py"), "--data", str(data),
           "--as-of", ",".join(dates), "--out", str(out)]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    started = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=False,
                              timeout=timeout)
    except subprocess.TimeoutExpired as stopped:
        err = stopped.stderr.decode() if isinstance(stopped.stderr, bytes) else (stopped.stderr or "")
        return {"timeout": True, "seconds": time.perf_counter() - started, "log": err}
    if done.returncode:
        return {"failed": True, "seconds": time.perf_counter() - started,
                "log": done.stderr[-3000:]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["log"] = done.stderr
    return result


def pes_ml_values(data: Path, dates: list[str]) -> pd.DataFrame:
    """pes_ml's features at ``dates`` on DuckDB (untimed, for the agreement check)."""
    from pes_ml.config import PesConfig
    from pes_ml.engine import ibis_backend
    from pes_ml.features import FeatureTables, compute_features

    config = PesConfig.model_validate({"engine": "duckdb", "sources": {"events": {"path": "unused"}}})
    paths = {name: data / f"{name}.parquet" for name in ("events", "subscriptions", "accounts")}
    return compute_features(FeatureTables.from_paths(ibis_backend(config), paths), dates)


def _day(values: pd.Series) -> pd.Series:
    """as_of values (pes_ml: UTC-aware; featuretools: tz-naive UTC) as ``YYYY-MM-DD`` keys."""
    stamps = pd.to_datetime(values)
    if stamps.dt.tz is not None:
        stamps = stamps.dt.tz_convert("UTC")
    return stamps.dt.strftime("%Y-%m-%d")


def _num(value: Any) -> str:
    """A value for the sample lines: NaN for a missing value (pd.NA, None, NaN)."""
    return "NaN" if pd.isna(value) else f"{float(value):g}"


def agreement(pes: pd.DataFrame, ft: pd.DataFrame, multi: bool = False) -> list[str]:
    """Per-feature agreement on the accounts (``multi``: the (account_id, as_of) rows) both computed
    (lines to print)."""
    ft = ft.assign(account_id=ft["account_id"].astype(str))
    if multi:
        keys, unit = ["account_id", "as_of"], "(account, as_of) rows"
        pes = pes.assign(as_of=_day(pes["as_of"]))
        ft = ft.assign(as_of=_day(ft["as_of"]))
        dates = sorted(set(pes["as_of"]) | set(ft["as_of"]))
        scope = f"at {len(dates)} as_of {dates[0]} .. {dates[-1]}; "
    else:
        keys, unit, scope = ["account_id"], "accounts", ""
    pes = pes.set_index(keys)
    ft = ft.set_index(keys)
    common = pes.index.intersection(ft.index)
    lines = [f"agreement on {len(common):,} {unit} in both ({scope}pes_ml {len(pes):,} rows: accounts with "
             f"an active subscription at as_of; featuretools {len(ft):,}: every account"
             f"{' at every as_of' if multi else ''})"]
    type_columns = sorted(c for c in ft.columns if c.startswith("events_type_") and c in pes.columns)
    for name in COMPARED + type_columns:
        if name not in pes.columns or name not in ft.columns:
            lines.append(f"  {name}: not in {'pes_ml' if name not in pes.columns else 'featuretools'}")
            continue
        p = pes.loc[common, name].astype("float64")
        f = ft.loc[common, name].astype("float64")
        note = ""
        if name == "days_since_last_event":
            # featuretools: fractional days since the last event in the 90-day training window;
            # pes_ml: whole days (floor), over all history before as_of.
            f = np.floor(f)
            beyond = int(((p >= 90) & f.isna()).sum())
            note = (f" (featuretools floored; not counted as equal: {beyond:,} {unit} whose last event "
                    f"is >= 90 days before as_of, NaN in featuretools: outside its training window)")
        elif name.startswith(("active_users_", "event_types_")):
            # featuretools NUM_UNIQUE is NaN (not 0) for an account with no event in the window.
            missing = int((f.isna() & (p == 0)).sum())
            f = f.fillna(0)
            if missing:
                note = f" (featuretools NaN read as 0 for {missing:,} {unit} with no event in the window)"
        both_nan = p.isna() & f.isna()
        close = np.isclose(p, f, rtol=1e-9, atol=1e-6) | both_nan
        diff = (p - f).abs()
        lines.append(f"  {name}: {int(close.sum()):,}/{len(common):,} equal, max |diff| "
                     f"{np.nanmax(diff.to_numpy()) if diff.notna().any() else 0:.6g}{note}")
    sample = list(common[:: max(1, len(common) // 3)][:3]) if multi else list(common[:3])
    label = "@".join if multi else str
    shown = [c for c in ("events_30d", "active_users_30d", "days_since_last_event") if c in ft.columns]
    lines.append(f"  sample (pes_ml / featuretools) for {', '.join(label(k) for k in sample)}:")
    for key in sample:
        pairs = ", ".join(f"{c} {_num(pes.at[key, c])} / {_num(ft.at[key, c])}" for c in shown)
        lines.append(f"    {label(key)}: {pairs}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=lambda s: int(s.replace("_", "")), default=1_000_000)
    parser.add_argument("--accounts", type=lambda s: int(s.replace("_", "")), default=10_000)
    parser.add_argument("--data", type=Path, default=None, help="Folder for the generated input.")
    parser.add_argument("--as-of", default=ONE_AS_OF[0])
    parser.add_argument("--monthly", action="store_true",
                        help="Compare at the 12 monthly as_of of bench_features.MONTHLY instead of --as-of.")
    parser.add_argument("--timeout", type=float, default=1200.0,
                        help="Stop the featuretools run after this many seconds (default 1200).")
    parser.add_argument("--skip-agreement", action="store_true")
    args = parser.parse_args()
    days = MONTHLY_DAYS if args.monthly else DAYS  # monthly: the 450-day log of bench_features
    data = args.data or data_folder(args.events, args.accounts, days)
    dates = list(MONTHLY) if args.monthly else [args.as_of]
    n = len(dates)
    when = f"{n} monthly as_of {dates[0]} .. {dates[-1]}" if args.monthly else f"as_of {args.as_of}"

    ensure_venv()
    started = time.perf_counter()
    paths = generate(data, args.events, args.accounts, days)
    import pyarrow.parquet as pq

    n_events = pq.ParquetFile(paths["events"]).metadata.num_rows
    print(
        f"input: {n_events:,} events, {args.accounts:,} accounts, {days} days at {data} "
        f"(ready in {time.perf_counter() - started:.1f} s); {when}"
    )
    print(
        f"date {date.today()}, machine {platform.machine()}, {os.cpu_count()} cores (shared), "
        f"load average {os.getloadavg()[0]:.1f}"
    )

    one = _child("duckdb", data, dates)
    print(
        f"pes_ml duckdb, full catalog ({one['columns']} columns), "
        f"{f'{n} monthly as_of (one pass)' if args.monthly else '1 as_of'}: {one['seconds']:.2f} s wall, "
        f"{one['cpu_seconds']:.2f} CPU-s; {n_events / one['seconds'] / 1e6:.2f}M events/s wall, "
        f"{n_events / one['cpu_seconds'] / 1e6:.2f}M events per CPU-s; peak RSS "
        f"{one['peak_rss_mib']:.0f} MiB, {one['rows']:,} rows",
        flush=True,
    )

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "featuretools.parquet"
        ft = measure_featuretools(data, dates, out, args.timeout)
        if ft.get("timeout") or ft.get("failed"):
            last = str(ft["log"]).strip().splitlines()[-3:]
            what = "did not finish within" if ft.get("timeout") else "failed after"
            print(f"featuretools dfs {what} {ft['seconds']:.0f} s; its last progress lines:")
            for line in last:
                print(f"  {line}")
            print(f"pes_ml is > {ft['seconds'] / one['seconds']:.0f}x faster wall (lower bound)")
            return
        phases, versions = ft["phases"], ft["versions"]
        print(
            f"featuretools dfs ({ft['columns']} columns; "
            + ", ".join(f"{k} {v}" for k, v in versions.items())
            + f"), {n} cutoff time{'s' if n > 1 else ''}"
            + (f" ({n} x {ft['rows'] // n:,} accounts)" if n > 1 else "")
            + f", training windows 7/30/90 d: {ft['seconds']:.2f} s wall "
            f"(read {phases['read']:.1f}, entity set {phases['entityset']:.1f}, dfs {phases['dfs']:.1f}), "
            f"{ft['cpu_seconds']:.2f} CPU-s; {n_events / ft['seconds'] / 1e6:.3f}M events/s wall, "
            f"{n_events / ft['cpu_seconds'] / 1e6:.3f}M events per CPU-s; peak RSS "
            f"{ft['peak_rss_mib']:.0f} MiB, {ft['rows']:,} rows"
            + (f"; dfs {phases['dfs'] / n:.1f} s per cutoff time" if n > 1 else "")
        )
        print(
            f"ratio: pes_ml is {ft['seconds'] / one['seconds']:.1f}x faster wall, "
            f"{ft['cpu_seconds'] / one['cpu_seconds']:.1f}x per CPU-s, "
            f"{ft['peak_rss_mib'] / one['peak_rss_mib']:.2f}x less peak RSS "
            f"(featuretools / pes_ml; goal >= 50x faster)",
            flush=True,
        )
        if args.skip_agreement:
            return
        featuretools_values = pd.read_parquet(out)
    for line in agreement(pes_ml_values(data, dates), featuretools_values, multi=n > 1):
        print(line)


if __name__ == "__main__":
    main()
