"""Simulator benchmark: events/s writing 10M events, peak RSS at 10M and 30M events.

Every measurement runs in its own subprocess, which reports its own peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss``), wall time and CPU time. Figures:

- events/s of ``simulate_saas`` at 10M events (wall and per CPU-second);
- peak RSS at 10M and 30M events, and their ratio (1.0 = memory does not grow with size);
- against a named baseline measured in the same run, at 2M events: **pandas-concat** —
  the same generator, but the events are written the naive way: one pandas DataFrame
  per account (string ids formatted per row), ``pd.concat`` of all of them and one
  ``DataFrame.to_parquet``. It shows what streaming dictionary-encoded chunks buys.

Usage::

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_simulate.py            # ~2-6 min
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_simulate.py --sizes 10M,30M,100M

It prints each figure and replaces the "## Simulator" section of benchmarks/RESULTS.md
(``--no-write`` to leave it alone).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
SECTION = "## Simulator"
BASELINE_EVENTS = int(os.environ.get("PES_BENCH_BASELINE_EVENTS", 2_000_000))


def _parse_size(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 1_000, "M": 1_000_000}.get(text[-1], 1)
    return int(float(text.rstrip("KM")) * scale)


def _child(n_events: int, out: Path, baseline: bool, seed: int) -> None:
    """Run one simulation in this process and print its measurements as JSON."""
    import numpy as np
    import pandas as pd

    from pes_ml.simulate import SimulationConfig, run, simulate_saas
    from pes_ml.simulate.writer import EventWriter

    class PandasConcatWriter(EventWriter):
        """The baseline: one DataFrame per account, concatenated, one to_parquet at the end."""

        def __init__(self, events_dir: Path, chunk_events: int, compression: str) -> None:
            super().__init__(events_dir, chunk_events, compression)
            self._all: list[tuple[np.ndarray, ...]] = []
            self._frames: list[pd.DataFrame] = []

        def begin_batch(self, account_ids: list[str], user_ids: list[str]) -> None:
            self._to_frames()
            self._batch_accounts, self._batch_users = account_ids, user_ids

        def add(self, account, user, code, micros, value) -> None:  # type: ignore[no-untyped-def]
            self._all.append((account, user, code, micros, value))

        def _to_frames(self) -> None:
            if not self._all:
                return
            from pes_ml.simulate.config import EVENT_NAMES

            account, user, code, micros, value = (np.concatenate(c) for c in zip(*self._all, strict=True))
            self._all.clear()
            for a in np.unique(account):
                rows = account == a
                self._frames.append(
                    pd.DataFrame(
                        {
                            "account_id": self._batch_accounts[a],
                            "user_id": [self._batch_users[u] for u in user[rows]],
                            "event": [EVENT_NAMES[c] for c in code[rows]],
                            "timestamp": pd.to_datetime(micros[rows], unit="us", utc=True),
                            "value": value[rows],
                        }
                    )
                )

        def flush(self) -> None:
            return None

        def close(self) -> None:
            self._to_frames()
            events = pd.concat(self._frames, ignore_index=True)
            path = self.events_dir / "part-00000.parquet"
            events.to_parquet(path, index=False)
            self.files.append(path)
            self.n_events = len(events)
            self._pool.shutdown()

    if baseline:
        run.EventWriter = PandasConcatWriter  # type: ignore[misc]
    config = SimulationConfig.for_target_events(n_events, seed=seed)
    cpu0 = time.process_time()
    began = time.perf_counter()
    summary = simulate_saas(config, out)
    wall = time.perf_counter() - began
    cpu = time.process_time() - cpu0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"events": summary.events, "accounts": config.n_accounts, "wall_s": wall, "cpu_s": cpu,
                      "peak_rss_mib": peak_kib / 1024}))  # fmt: skip


def _measure(n_events: int, baseline: bool, seed: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="pes-bench-sim-") as tmp:
        cmd = [sys.executable, __file__, "--child", str(n_events), "--out", tmp, "--seed", str(seed)]
        if baseline:
            cmd.append("--baseline")
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
        done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
        result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    result["events_per_s"] = result["events"] / result["wall_s"]
    result["events_per_cpu_s"] = result["events"] / result["cpu_s"]
    return result


def _line(name: str, r: dict[str, float]) -> str:
    return (
        f"| {name} | {r['events']:,.0f} | {r['wall_s']:.1f} | {r['events_per_s'] / 1e6:.2f} | "
        f"{r['events_per_cpu_s'] / 1e6:.2f} | {r['peak_rss_mib']:,.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10M,30M", help="Event counts to measure, e.g. 10M,30M,100M.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-write", action="store_true", help="Do not update benchmarks/RESULTS.md.")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.out, args.baseline, args.seed)
        return

    sizes = [_parse_size(s) for s in args.sizes.split(",")]
    load_before = os.getloadavg()
    rows: list[tuple[str, dict[str, float]]] = []
    print(f"baseline pandas-concat at {BASELINE_EVENTS:,} events ...", flush=True)
    base = _measure(BASELINE_EVENTS, baseline=True, seed=args.seed)
    print(_line("pandas-concat (baseline)", base), flush=True)
    ours_small = _measure(BASELINE_EVENTS, baseline=False, seed=args.seed)
    rows += [("pandas-concat (baseline)", base), ("simulate_saas", ours_small)]
    print(_line("simulate_saas", ours_small), flush=True)
    results: dict[int, dict[str, float]] = {}
    for size in sizes:
        print(f"simulate_saas at {size:,} events ...", flush=True)
        results[size] = _measure(size, baseline=False, seed=args.seed)
        rows.append(("simulate_saas", results[size]))
        print(_line("simulate_saas", results[size]), flush=True)
    load_after = os.getloadavg()

    first = sizes[0]
    ratios = [
        f"- events/s, simulate_saas vs pandas-concat at {BASELINE_EVENTS / 1e6:g}M events: "
        f"**{ours_small['events_per_s'] / base['events_per_s']:.1f}x** "
        f"(per CPU-second {ours_small['events_per_cpu_s'] / base['events_per_cpu_s']:.1f}x); "
        f"peak RSS {ours_small['peak_rss_mib'] / base['peak_rss_mib']:.2f}x the baseline's.",
        *(
            f"- peak RSS {size / 1e6:g}M / {first / 1e6:g}M events: "
            f"**{results[size]['peak_rss_mib'] / results[first]['peak_rss_mib']:.2f}** "
            f"({results[first]['peak_rss_mib']:,.0f} -> {results[size]['peak_rss_mib']:,.0f} MiB; "
            "1.00 = memory does not grow with size)."
            for size in sizes[1:]
        ),
    ]
    for line in ratios:
        print(line)
    if args.no_write:
        return
    table = [
        "| run | events | wall s | M events/s (wall) | M events/CPU-s | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|",
        *(_line(name, r) for name, r in rows),
    ]
    section = "\n".join(
        [
            SECTION,
            "",
            f"Date: {dt.date.today().isoformat()}. Machine: {os.cpu_count()} cores, `{platform.machine()}`, "
            f"Python {platform.python_version()}. Shared with other jobs: load average "
            f"{load_before[0]:.1f} before, {load_after[0]:.1f} after (on {os.cpu_count()} cores), "
            "so wall-clock figures are pessimistic; events per CPU-second is the steadier figure.",
            "",
            "Command: `OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_simulate.py"
            + (f" --sizes {args.sizes}`" if args.sizes != "10M,30M" else "`"),
            "",
            "Each run is a fresh subprocess reporting its own peak RSS; `simulate_saas` writes zstd Parquet "
            "part files of 2M events; the baseline (pandas-concat) runs the same generator but builds one "
            "pandas DataFrame per account, concatenates them and writes one file.",
            "",
            *table,
            "",
            *ratios,
            "",
        ]
    )
    _write_section(section)
    print(f"updated {RESULTS.relative_to(ROOT)}")


def _write_section(section: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    start = text.find(SECTION + "\n")
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        nxt = text.find("\n## ", start + len(SECTION))
        text = text[:start] + section + ("" if nxt == -1 else "\n" + text[nxt + 1 :])
    RESULTS.write_text(text if text.endswith("\n") else text + "\n")


if __name__ == "__main__":
    main()
