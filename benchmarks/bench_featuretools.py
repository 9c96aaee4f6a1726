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

Usage (from the project root)::

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_featuretools.py \
        --events 1_000_000 --accounts 10_000
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
from bench_features import DAYS, ONE_AS_OF, ROOT, _child, data_folder, generate  # noqa: E402

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


def measure_featuretools(data: Path, as_of: str, out: Path, timeout: float) -> dict[str, Any]:
    """Run dfs_baseline.py in a fresh process of the featuretools venv; figures, or why it stopped."""
    cmd = [str(FT_PYTHON), str(FT_DIR / "dfs_baseline.py"), "--data", str(data), "--as-of", as_of,
           "--out", str(out)]
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


def pes_ml_values(data: Path, as_of: str) -> pd.DataFrame:
    """pes_ml's features at ``as_of`` on DuckDB (untimed, for the agreement check)."""
    from pes_ml.config import PesConfig
    from pes_ml.engine import ibis_backend
    from pes_ml.features import FeatureTables, compute_features

    config = PesConfig.model_validate({"engine": "duckdb", "sources": {"events": {"path": "unused"}}})
    paths = {name: data / f"{name}.parquet" for name in ("events", "subscriptions", "accounts")}
    return compute_features(FeatureTables.from_paths(ibis_backend(config), paths), [as_of])


def agreement(pes: pd.DataFrame, ft: pd.DataFrame) -> list[str]:
    """Per-feature agreement on the accounts both computed (lines to print)."""
    pes = pes.set_index("account_id")
    ft = ft.assign(account_id=ft["account_id"].astype(str)).set_index("account_id")
    common = pes.index.intersection(ft.index)
    lines = [f"agreement on {len(common):,} accounts in both (pes_ml {len(pes):,} rows: accounts with an "
             f"active subscription at as_of; featuretools {len(ft):,}: every account)"]
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
            note = (f" (featuretools floored; not counted as equal: {beyond:,} accounts whose last event "
                    f"is >= 90 days before as_of, NaN in featuretools: outside its training window)")
        elif name.startswith(("active_users_", "event_types_")):
            # featuretools NUM_UNIQUE is NaN (not 0) for an account with no event in the window.
            missing = int((f.isna() & (p == 0)).sum())
            f = f.fillna(0)
            if missing:
                note = f" (featuretools NaN read as 0 for {missing:,} accounts with no event in the window)"
        both_nan = p.isna() & f.isna()
        close = np.isclose(p, f, rtol=1e-9, atol=1e-6) | both_nan
        diff = (p - f).abs()
        lines.append(f"  {name}: {int(close.sum()):,}/{len(common):,} equal, max |diff| "
                     f"{np.nanmax(diff.to_numpy()) if diff.notna().any() else 0:.6g}{note}")
    sample = list(common[:3])
    shown = [c for c in ("events_30d", "active_users_30d", "days_since_last_event") if c in ft.columns]
    lines.append(f"  sample (pes_ml / featuretools) for {', '.join(sample)}:")
    for account in sample:
        pairs = ", ".join(f"{c} {pes.at[account, c]:g} / {float(ft.at[account, c]):g}" for c in shown)
        lines.append(f"    {account}: {pairs}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=lambda s: int(s.replace("_", "")), default=1_000_000)
    parser.add_argument("--accounts", type=lambda s: int(s.replace("_", "")), default=10_000)
    parser.add_argument("--data", type=Path, default=None, help="Folder for the generated input.")
    parser.add_argument("--as-of", default=ONE_AS_OF[0])
    parser.add_argument("--timeout", type=float, default=1200.0,
                        help="Stop the featuretools run after this many seconds (default 1200).")
    parser.add_argument("--skip-agreement", action="store_true")
    args = parser.parse_args()
    data = args.data or data_folder(args.events, args.accounts)

    ensure_venv()
    started = time.perf_counter()
    paths = generate(data, args.events, args.accounts)
    import pyarrow.parquet as pq

    n_events = pq.ParquetFile(paths["events"]).metadata.num_rows
    print(
        f"input: {n_events:,} events, {args.accounts:,} accounts, {DAYS} days at {data} "
        f"(ready in {time.perf_counter() - started:.1f} s); as_of {args.as_of}"
    )
    print(
        f"date {date.today()}, machine {platform.machine()}, {os.cpu_count()} cores (shared), "
        f"load average {os.getloadavg()[0]:.1f}"
    )

    one = _child("duckdb", data, [args.as_of])
    print(
        f"pes_ml duckdb, full catalog ({one['columns']} columns), 1 as_of: {one['seconds']:.2f} s wall, "
        f"{one['cpu_seconds']:.2f} CPU-s; {n_events / one['seconds'] / 1e6:.2f}M events/s wall, "
        f"{n_events / one['cpu_seconds'] / 1e6:.2f}M events per CPU-s; peak RSS "
        f"{one['peak_rss_mib']:.0f} MiB, {one['rows']:,} rows",
        flush=True,
    )

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "featuretools.parquet"
        ft = measure_featuretools(data, args.as_of, out, args.timeout)
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
            + f"), 1 cutoff time, training windows 7/30/90 d: {ft['seconds']:.2f} s wall "
            f"(read {phases['read']:.1f}, entity set {phases['entityset']:.1f}, dfs {phases['dfs']:.1f}), "
            f"{ft['cpu_seconds']:.2f} CPU-s; {n_events / ft['seconds'] / 1e6:.3f}M events/s wall, "
            f"{n_events / ft['cpu_seconds'] / 1e6:.3f}M events per CPU-s; peak RSS "
            f"{ft['peak_rss_mib']:.0f} MiB, {ft['rows']:,} rows"
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
    for line in agreement(pes_ml_values(data, args.as_of), featuretools_values):
        print(line)


if __name__ == "__main__":
    main()
