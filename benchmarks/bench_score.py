"""Scoring throughput with exact SHAP: features / predict / SHAP / write, against named baselines.

Three measurements, each in a fresh subprocess (so each reports its own peak RSS, ``VmHWM``):

1. ``prepare`` (cached in ``--work``): simulate a small SaaS (700 accounts x 540 days), ingest,
   train the churn + expansion models and promote them to ``@champion`` in a local MLflow store.
2. ``frame --accounts N``: build the real FeatureFrame of the simulated accounts at one as_of,
   resample its rows to N accounts (new ids), and time, on the registered model:
   encode, predict (raw log-odds, both models), SHAP (:func:`pes_ml.explain.shap_values`,
   both models, additivity check included), the whole :func:`pes_ml.score.score_features`
   (adds PES points, long table, top-k reason sentences, tiers) and the run-store write
   (:meth:`RunStore.write_run`: scores + long SHAP table, fsync, rename, pointer swap).
   Baseline in the same run: ``shap.TreeExplainer(booster).shap_values(X)`` on the first
   ``--baseline-rows`` rows of the same matrix (it is ~10x slower, so a subset; rows/s compared),
   with the max abs difference to ours. ``--spark`` also times
   :func:`pes_ml.score_spark.score_features_spark` (local[*]) on the same frame.
3. ``e2e --accounts A --days D``: simulate A accounts x D days (another seed), point a config at
   it with the champion above, and run ``pes-ml score --as-of ... --allow-drift`` as a subprocess
   (ingest + features + scoring + SHAP + drift + write), reporting the manifest's timings.

Run::

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_score.py --accounts 100000 \
        --e2e-accounts 5000 --e2e-days 365

The machine may be shared: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

ROOT = Path(__file__).resolve().parents[1]
TRAIN_AS_OF = "2025-06-01"


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _raw_config(work: Path, data: Path, store: str) -> dict[str, Any]:
    return {
        "work_dir": str(work / f"work-{data.name}"),
        "sources": {
            "events": {"path": str(data / "events")},
            "subscriptions": {"path": str(data / "subscriptions.parquet")},
            "accounts": {"path": str(data / "accounts.parquet")},
        },
        "dataset": {"frequency_days": 14},
        "train": {"model_spec": str(ROOT / "models" / "pes.yaml"), "bootstrap_rounds": 20},
        "tracking": {
            "tracking_uri": f"sqlite:///{work}/mlflow.db",
            "artifact_location": str(work / "mlartifacts"),
            "model_card_dir": str(work / "models"),
        },
        "store": {"path": str(work / store)},
    }


def _config(work: Path, data: Path, store: str = "runs") -> Any:
    from pes_ml.config import PesConfig

    return PesConfig.model_validate(_raw_config(work, data, store))


def prepare(work: Path) -> dict[str, Any]:
    from pes_ml.ingest import ingest
    from pes_ml.registry import promote
    from pes_ml.simulate import SimulationConfig, simulate_saas
    from pes_ml.training import run_training

    data = work / "train-sim"
    if (work / "prepared.json").exists():
        return json.loads((work / "prepared.json").read_text())
    simulate_saas(SimulationConfig(n_accounts=700, days=540, start="2024-01-01", seed=11), data)
    config = _config(work, data)
    ingest(config)
    run_training(config)
    promote(config, force=True)
    facts = {"train_data": str(data)}
    (work / "prepared.json").write_text(json.dumps(facts))
    return facts


def _timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def frame(work: Path, accounts: int, baseline_rows: int, spark: bool, seed: int) -> dict[str, Any]:
    import numpy as np
    import shap

    from pes_ml import explain
    from pes_ml.features import build_features
    from pes_ml.registry import load_pes_model
    from pes_ml.run_contract import new_run_id
    from pes_ml.score import _with_model_vocabulary, score_features
    from pes_ml.store import RunStore

    config = _config(work, work / "train-sim")
    model, version = load_pes_model(config)
    seconds: dict[str, float] = {}
    seconds["features_real"], real = _timed(
        lambda: build_features(_with_model_vocabulary(config, model), [TRAIN_AS_OF])
    )
    rng = np.random.default_rng(seed)
    features = real.iloc[rng.integers(0, len(real), accounts)].reset_index(drop=True)
    features["account_id"] = [f"b{i:07d}" for i in range(accounts)]
    features["account_id"] = features["account_id"].astype("str")

    seconds["encode"], matrix = _timed(lambda: model.encoder.transform(features))
    boosters = {name: outcome.booster for name, outcome in model.outcomes.items() if name != "conversion"}
    explain.shap_values(next(iter(boosters.values())), matrix.head(100))  # numba JIT warm-up, not timed
    seconds["predict"] = 0.0
    seconds["shap"] = 0.0
    for booster in boosters.values():
        elapsed, _ = _timed(lambda b=booster: b.predict(matrix, raw_score=True))
        seconds["predict"] += elapsed
        elapsed, _ = _timed(lambda b=booster: explain.shap_values(b, matrix))
        seconds["shap"] += elapsed
    run_id = new_run_id()
    options = {"model_name": "pes", "model_version": version, "run_id": run_id, "top_reasons": 3}
    seconds["score_features"], (scores, reasons) = _timed(lambda: score_features(features, model, **options))
    store = RunStore(work / f"bench-runs-{accounts}")
    seconds["write"], _ = _timed(
        lambda: store.write_run(TRAIN_AS_OF, scores, reasons, {"bench": True}, run_id=run_id)
    )
    rss_after_score = _peak_rss_mib()

    # Baseline: shap's TreeExplainer on the same model and the first rows of the same matrix.
    subset = matrix.head(baseline_rows)
    baseline_rows_s, max_diff = {}, 0.0
    for name, booster in boosters.items():
        ours = explain.shap_values(booster, subset).contributions
        elapsed, theirs = _timed(lambda b=booster: shap.TreeExplainer(b).shap_values(subset.to_numpy()))
        baseline_rows_s[name] = len(subset) / elapsed
        max_diff = max(max_diff, float(np.max(np.abs(np.asarray(theirs) - ours))))
    result = {
        "accounts": accounts,
        "features": len(model.encoder.feature_names),
        "trees": {n: b.num_trees() for n, b in boosters.items()},
        "reason_rows": len(reasons),
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "shap_rows_per_s_per_model": round(accounts * len(boosters) / seconds["shap"] / len(boosters), 1),
        "baseline_rows": len(subset),
        "baseline_rows_per_s_per_model": {k: round(v, 1) for k, v in baseline_rows_s.items()},
        "max_abs_diff_vs_shap": max_diff,
        "accounts_per_s_score_features": round(accounts / seconds["score_features"], 1),
        "accounts_per_s_score_and_write": round(accounts / (seconds["score_features"] + seconds["write"]), 1),
        "peak_rss_mib_score": round(rss_after_score, 0),
    }
    if spark:
        from pes_ml.engine import spark_session
        from pes_ml.score_spark import score_features_spark

        session = spark_session("local[*]")
        score_features_spark(features.head(1000), model, spark=session, **options)  # start executors
        seconds["spark_score"], (spark_scores, _) = _timed(
            lambda: score_features_spark(features, model, spark=session, **options)
        )
        result["spark_seconds"] = round(seconds["spark_score"], 2)
        result["spark_accounts_per_s"] = round(accounts / seconds["spark_score"], 1)
        result["spark_max_abs_pes_diff"] = float(np.max(np.abs(spark_scores["pes"] - scores["pes"])))
    result["peak_rss_mib"] = round(_peak_rss_mib(), 0)
    return result


def e2e(work: Path, accounts: int, days: int, as_of: str) -> dict[str, Any]:
    import yaml

    from pes_ml.simulate import SimulationConfig, simulate_saas

    data = work / f"e2e-sim-{accounts}x{days}"
    if not (data / "accounts.parquet").exists():
        simulate_saas(SimulationConfig(n_accounts=accounts, days=days, start="2024-06-01", seed=23), data)
    import pyarrow.dataset as ds

    events = ds.dataset(str(data / "events"), format="parquet").count_rows()
    config_path = work / f"e2e-{accounts}x{days}.yaml"
    config_path.write_text(yaml.safe_dump(_raw_config(work, data, f"e2e-runs-{accounts}")))
    command = [str(Path(sys.executable).parent / "pes-ml"), "score", "--as-of", as_of]
    command += ["--config", str(config_path), "--allow-drift"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    import resource

    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if done.returncode != 0:
        raise SystemExit(f"pes-ml score failed ({done.returncode}): {done.stderr[-2000:]}")
    from pes_ml.store import RunStore

    manifest = RunStore(work / f"e2e-runs-{accounts}").read_manifest("latest")
    return {
        "accounts_simulated": accounts,
        "days": days,
        "events": events,
        "accounts_scored": manifest["counts"]["accounts"],
        "reason_rows": manifest["counts"]["reason_rows"],
        "wall_seconds": round(wall, 1),
        "timings_seconds": manifest["timings_seconds"],
        "peak_rss_mib": round(peak, 0),
        "command": " ".join(command[1:]),
    }


def _subprocess(args: list[str]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{args} failed: {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "out" / "score")
    parser.add_argument("--accounts", default="100000", help="comma-separated frame sizes")
    parser.add_argument("--baseline-rows", type=int, default=5000)
    parser.add_argument("--spark", action="store_true", help="also time the Spark scoring job")
    parser.add_argument("--e2e-accounts", type=int, default=0, help="0: skip the end-to-end run")
    parser.add_argument("--e2e-days", type=int, default=365)
    parser.add_argument("--e2e-as-of", default="2025-05-01")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step", choices=["prepare", "frame", "e2e"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.step == "prepare":
        print(json.dumps(prepare(args.work)))
        return
    if args.step == "frame":
        print(json.dumps(frame(args.work, int(args.accounts), args.baseline_rows, args.spark, args.seed)))
        return
    if args.step == "e2e":
        print(json.dumps(e2e(args.work, args.e2e_accounts, args.e2e_days, args.e2e_as_of)))
        return

    print(f"date {time.strftime('%Y-%m-%d %H:%M')} machine {os.cpu_count()} cores {platform.machine()}")
    print(f"load average before: {os.getloadavg()}")
    common = ["--work", str(args.work), "--baseline-rows", str(args.baseline_rows), "--seed", str(args.seed)]
    print("prepare", _subprocess(["--step", "prepare", *common]), flush=True)
    for size in args.accounts.split(","):
        extra = ["--spark"] if args.spark else []
        print(
            "frame",
            json.dumps(_subprocess(["--step", "frame", "--accounts", size, *common, *extra])),
            flush=True,
        )
    if args.e2e_accounts:
        e2e_args = [
            "--step",
            "e2e",
            "--e2e-accounts",
            str(args.e2e_accounts),
            "--e2e-days",
            str(args.e2e_days),
        ]
        e2e_args += ["--e2e-as-of", args.e2e_as_of]
        print("e2e", json.dumps(_subprocess([*e2e_args, *common])), flush=True)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
