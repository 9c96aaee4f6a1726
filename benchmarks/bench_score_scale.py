"""End-to-end ``pes-ml score`` at scale: 1M accounts / ~100M events, against the same job at 1/10 the size.

The goal (issue 5): the whole scoring job — ingest + validate, features, both models, exact SHAP
for every account, top reasons, drift, change attribution, the atomic run-store write — under
15 minutes for 1M accounts and 100M events on this 2-core machine. The named baseline measured in
the same run is the same command on 100k accounts / 10M events from the same generator: the ratio
shows how the job scales (10.0 = linear in the data).

Steps, each a fresh process:

1. ``prepare``: generate 1M events / 10k accounts with ``bench_features.generate`` (the feature
   benchmark's SQL generator: sparse sessions, churned accounts fade out and stop, one account in
   12 buys an add-on), train the churn and expansion models on it and promote them (``--force``:
   this is a throughput benchmark, not a model-quality one) in a local MLflow store.
2. ``score --events N --accounts A``: generate the data (cached), write a config pointing at it
   with the champion above, and run ``pes-ml score --as-of 2024-06-29 --allow-drift`` as a
   subprocess; report wall time, the CLI process's peak RSS and the manifest's timings.

Run (from the project root)::

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_score_scale.py \
        [--events 103_000_000 --accounts 1_000_000] [--memory-limit 2GB]

(``--events`` is nominal: churned accounts stop early, so 103M nominal is ~100M real events.)

Data and the MLflow store go to ``benchmarks/out/score_scale`` (git-ignored). The machine may be
shared: the load average is printed before and after.
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
from datetime import date
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_features import ROOT, data_folder, generate  # noqa: E402

WORK = ROOT / "benchmarks" / "out" / "score_scale"
AS_OF = "2024-06-29"
TRAIN_SIZE = (1_000_000, 10_000)


def _raw_config(data: Path, name: str, memory_limit: str | None = None) -> dict[str, Any]:
    """A config for the generated tables; labels fit its 180 days (14-day horizon, weekly snapshots)."""
    return {
        "work_dir": str(WORK / f"work-{name}"),
        "duckdb_memory_limit": memory_limit,
        "sources": {
            "events": {"path": str(data / "events.parquet")},
            "subscriptions": {"path": str(data / "subscriptions.parquet")},
            "accounts": {"path": str(data / "accounts.parquet")},
        },
        "labels": {"horizon_days": 14},
        "dataset": {"frequency_days": 7},
        "train": {"model_spec": str(ROOT / "models" / "pes.yaml"), "bootstrap_rounds": 20},
        "tracking": {
            "tracking_uri": f"sqlite:///{WORK}/mlflow.db",
            "artifact_location": str(WORK / "mlartifacts"),
            "model_card_dir": str(WORK / "models"),
        },
        "store": {"path": str(WORK / f"runs-{name}")},
    }


def prepare() -> dict[str, Any]:
    """Train and promote the champion once (cached in ``WORK/prepared.json``)."""
    from pes_ml.config import PesConfig
    from pes_ml.ingest import ingest
    from pes_ml.registry import promote
    from pes_ml.training import run_training

    marker = WORK / "prepared.json"
    if marker.exists():
        return dict(json.loads(marker.read_text()))
    events, accounts = TRAIN_SIZE
    data = data_folder(events, accounts)
    generate(data, events, accounts)
    config = PesConfig.model_validate(_raw_config(data, "train"))
    started = time.perf_counter()
    ingest(config)
    run_training(config)
    promote(config, force=True)
    facts = {"train_data": str(data), "train_seconds": round(time.perf_counter() - started, 1)}
    marker.write_text(json.dumps(facts))
    return facts


def score(n_events: int, n_accounts: int, memory_limit: str | None) -> dict[str, Any]:
    """Run ``pes-ml score`` on generated data of this size; wall time, peak RSS, manifest timings."""
    import pyarrow.parquet as pq
    import yaml

    from pes_ml.store import RunStore

    data = data_folder(n_events, n_accounts)
    started = time.perf_counter()
    generate(data, n_events, n_accounts)
    generated = time.perf_counter() - started
    name = f"{n_events}_{n_accounts}"
    config_path = WORK / f"score-{name}.yaml"
    config_path.write_text(yaml.safe_dump(_raw_config(data, name, memory_limit)))
    cmd = [str(Path(sys.executable).parent / "pes-ml"), "score", "--config", str(config_path),
           "--as-of", AS_OF, "--allow-drift"]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"pes-ml score failed ({done.returncode}):\n{done.stderr[-3000:]}")
    manifest = RunStore(WORK / f"runs-{name}").read_manifest("latest")
    return {
        "events": pq.ParquetFile(data / "events.parquet").metadata.num_rows,
        "accounts_scored": manifest["counts"]["accounts"],
        "reason_rows": manifest["counts"]["reason_rows"],
        "seconds": round(seconds, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
        "timings_seconds": manifest["timings_seconds"],
        "generate_seconds": round(generated, 1),
    }


def _child(*args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"step {args} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _line(label: str, result: dict[str, Any]) -> str:
    timings = ", ".join(f"{k} {v:.1f}" for k, v in result["timings_seconds"].items())
    return (
        f"{label}: {result['accounts_scored']:,} accounts, {result['events']:,} events, "
        f"{result['reason_rows']:,} SHAP rows: {result['seconds']:.1f} s wall "
        f"({result['accounts_scored'] / result['seconds']:,.0f} accounts/s), peak RSS "
        f"{result['peak_rss_mib']:,} MiB; stages (s): {timings}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=lambda s: int(s.replace("_", "")), default=100_000_000)
    parser.add_argument("--accounts", type=lambda s: int(s.replace("_", "")), default=1_000_000)
    parser.add_argument("--memory-limit", default="", help="duckdb_memory_limit of the config (e.g. 2GB)")
    parser.add_argument("--step", choices=["prepare", "score"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    if args.step == "prepare":
        print(json.dumps(prepare()))
        return
    if args.step == "score":
        print(json.dumps(score(args.events, args.accounts, args.memory_limit or None)))
        return

    print(f"date {date.today()}, machine {platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()}")
    print("prepare", json.dumps(_child("--step", "prepare")), flush=True)
    small = (args.events // 10, args.accounts // 10)
    limit = ["--memory-limit", args.memory_limit] if args.memory_limit else []
    print(f"duckdb_memory_limit: {args.memory_limit or 'none'}")
    base = _child("--step", "score", "--events", str(small[0]), "--accounts", str(small[1]), *limit)
    print(_line("baseline (1/10 size)", base), flush=True)
    big = _child("--step", "score", "--events", str(args.events), "--accounts", str(args.accounts), *limit)
    print(_line("pes-ml score", big), flush=True)
    print(
        f"ratio vs 1/10 size: {big['seconds'] / base['seconds']:.2f}x time (10.00 = linear), "
        f"{big['peak_rss_mib'] / base['peak_rss_mib']:.2f}x peak RSS; "
        f"goal < 900 s: {'met' if big['seconds'] < 900 else 'NOT met'} ({big['seconds']:.0f} s)"
    )
    print(f"load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
