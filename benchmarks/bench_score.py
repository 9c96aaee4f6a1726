"""Scoring throughput with exact SHAP: features / predict / SHAP / write, against named baselines.

Three measurements, each in a fresh subprocess (so each reports its own peak RSS, ``VmHWM``):

1. ``prepare`` (cached in ``--work``): simulate a small SaaS (700 accounts x 540 days), ingest,
   train the churn + expansion models and promote them to ``@champion`` in a local MLflow store.
2. ``frame --accounts N``: build the real FeatureFrame of the simulated accounts at one as_of,
   resample its rows to N accounts (new ids), and run the chunked scoring path of
   ``pes-ml score`` on the registered model (:func:`pes_ml.score.score_chunks`, chunks of
   ``--chunk-accounts``, streamed into a run of :meth:`RunStore.begin_run`), timing four phases,
   each with its own peak RSS (the kernel's high-water mark is reset when a phase starts,
   ``/proc/self/clear_refs``; per-chunk phases report their largest chunk):

   - ``features``: build the real FeatureFrame and resample it to N rows;
   - ``predict``: encode + raw log-odds of both models for all accounts, a chunk at a time
     (what the drift check needs before any SHAP);
   - ``shap``: time inside :func:`pes_ml.explain.shap_values` (both models, additivity check);
   - ``reasons``: the rest of :func:`pes_ml.score.score_features` (probabilities, PES points,
     long table, top-k reason sentences, tiers);
   - ``write``: :meth:`RunWriter.add_reasons` per chunk + the commit (scores, fsync, rename,
     pointer swap).

   Baseline in the same run: ``shap.TreeExplainer(booster).shap_values(X)`` on the first
   ``--baseline-rows`` rows of the same matrix (it is ~10x slower, so a subset; rows/s compared),
   with the max abs difference to ours (``--baseline-rows 0`` skips it). ``--spark`` also times
   :func:`pes_ml.score_spark.score_features_spark` (local[*]) on the whole frame.
3. ``e2e --accounts A --days D``: simulate A accounts x D days (another seed), point a config at
   it with the champion above, and run ``pes-ml score --as-of ... --allow-drift`` as a subprocess
   (ingest + features + scoring + SHAP + drift + write), reporting the manifest's timings.

Run::

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_score.py --accounts 100000 \
        --e2e-accounts 5000 --e2e-days 365
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_score.py --accounts 1000000 \
        --chunk-accounts 100000 --baseline-rows 0

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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

ROOT = Path(__file__).resolve().parents[1]
TRAIN_AS_OF = "2025-06-01"
CHANGE_AS_OF = "2025-07-01"


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak_rss() -> bool:
    """Reset the peak RSS (VmHWM) to the current RSS; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class _Phases:
    """Seconds and peak RSS (MiB) per phase; a phase may be entered many times (once per chunk)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.peak_rss_mib: dict[str, float] = {}
        self.current: str | None = None
        self.started = time.perf_counter()
        self.peak_resets = True

    def switch(self, phase: str | None) -> str | None:
        """End the current phase (record its time and peak) and start ``phase``; return the old one."""
        now = time.perf_counter()
        previous = self.current
        if previous is not None:
            self.seconds[previous] = self.seconds.get(previous, 0.0) + now - self.started
            self.peak_rss_mib[previous] = max(self.peak_rss_mib.get(previous, 0.0), _peak_rss_mib())
        self.peak_resets &= _reset_peak_rss()
        self.current, self.started = phase, now
        return previous


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


def frame(
    work: Path, accounts: int, baseline_rows: int, spark: bool, seed: int, chunk_accounts: int, change: bool
) -> dict[str, Any]:
    import numpy as np
    import pandas as pd

    from pes_ml import explain
    from pes_ml.features import build_features
    from pes_ml.registry import load_pes_model
    from pes_ml.score import _with_model_vocabulary, score_chunks
    from pes_ml.store import RunStore

    config = _config(work, work / "train-sim")
    model, version = load_pes_model(config)
    boosters = {name: outcome.booster for name, outcome in model.outcomes.items() if name != "conversion"}
    phases = _Phases()

    phases.switch("features")
    real = build_features(_with_model_vocabulary(config, model), [TRAIN_AS_OF])
    rng = np.random.default_rng(seed)
    ids = pd.array([f"b{i:07d}" for i in range(accounts)], dtype="str")

    def resampled(as_of: str) -> pd.DataFrame:
        frame = real.iloc[rng.integers(0, len(real), accounts)].reset_index(drop=True)
        frame["account_id"] = ids
        frame["as_of"] = pd.Timestamp(as_of, tz="UTC").as_unit(frame["as_of"].dt.unit)
        return frame

    features = resampled(TRAIN_AS_OF)

    phases.switch("predict")
    for start in range(0, accounts, chunk_accounts):
        matrix = model.encoder.transform(features.iloc[start : start + chunk_accounts])
        for name in boosters:
            model.outcomes[name].raw(matrix)
    del matrix
    phases.switch(None)

    explain.shap_values(next(iter(boosters.values())), model.encoder.transform(features.head(100)))  # JIT
    real_shap_values = explain.shap_values

    def timed_shap(*args: Any, **kwargs: Any) -> Any:
        outer = phases.switch("shap")
        try:
            return real_shap_values(*args, **kwargs)
        finally:
            phases.switch(outer)

    step_phase = {"shap_and_reasons": "reasons", "change": "change", "write_reasons": "write"}

    @contextmanager
    def timer(step: str) -> Iterator[None]:
        phases.switch(step_phase[step])
        try:
            yield
        finally:
            phases.switch(None)

    store = RunStore(work / f"bench-runs-{accounts}")

    def score_run(frame: pd.DataFrame, as_of: str, previous: Any) -> tuple[str, pd.DataFrame, int]:
        with store.begin_run(as_of) as run:
            scores = score_chunks(
                frame,
                model,
                run,
                model_name="pes",
                model_version=version,
                chunk_accounts=chunk_accounts,
                top_reasons=3,
                previous=previous,
                timer=timer,
            )
            phases.switch("write")
            run_id = run.commit(scores, {"bench": True, "chunk_accounts": chunk_accounts})
            phases.switch(None)
            return run_id, scores, run.reason_rows

    explain.shap_values = timed_shap  # type: ignore[assignment]
    try:
        run_id, scores, reason_rows = score_run(features, TRAIN_AS_OF, None)
        seconds_first = dict(phases.seconds)
        if change:
            # A second as_of for the same accounts, each resampled from another real account, with
            # change attribution against the first run (read a chunk of accounts at a time).
            if not spark:  # as in a real job, only one as_of's frames in memory (baseline: first rows)
                features, scores = features.head(baseline_rows), scores.head(0)
            phases.switch("features")
            later = resampled(CHANGE_AS_OF)
            phases.switch(None)
            with store.open_reasons(run_id) as previous:
                later_run_id, later_scores, _ = score_run(later, CHANGE_AS_OF, previous)
    finally:
        explain.shap_values = real_shap_values  # type: ignore[assignment]

    scoring = seconds_first["shap"] + seconds_first["reasons"] + seconds_first["write"]
    result: dict[str, Any] = {
        "accounts": accounts,
        "chunk_accounts": chunk_accounts,
        "chunks": -(-accounts // chunk_accounts),
        "features": len(model.encoder.feature_names),
        "trees": {n: b.num_trees() for n, b in boosters.items()},
        "reason_rows": reason_rows,
        "seconds": {k: round(v, 2) for k, v in seconds_first.items()},
        "accounts_per_s": {
            "predict": round(accounts / seconds_first["predict"], 1),
            "shap": round(accounts / seconds_first["shap"], 1),
            "shap_reasons_write": round(accounts / scoring, 1),
        },
        "shap_rows_per_s_per_model": round(accounts / seconds_first["shap"], 1),  # each model: all rows
        "store_bytes": sum(f.stat().st_size for f in store.get_run(run_id).path.rglob("*") if f.is_file()),
    }
    if change:
        result["second_run_with_change_seconds"] = {
            k: round(v - seconds_first.get(k, 0.0), 2) for k, v in phases.seconds.items()
        }
        result["accounts_with_pes_delta"] = int(later_scores["pes_delta"].notna().sum())
        result["second_run_id"] = later_run_id
    result["peak_rss_mib"] = {k: round(v) for k, v in phases.peak_rss_mib.items()}
    result["peak_rss_is_per_phase"] = phases.peak_resets
    if store.verify():
        raise SystemExit(f"run store inconsistent: {store.verify()}")

    if baseline_rows:
        import shap

        # Baseline: shap's TreeExplainer on the same model and the first rows of the same matrix.
        subset = model.encoder.transform(features.head(baseline_rows))
        baseline_rows_s, max_diff = {}, 0.0
        for name, booster in boosters.items():
            ours = explain.shap_values(booster, subset).contributions
            elapsed, theirs = _timed(lambda b=booster: shap.TreeExplainer(b).shap_values(subset.to_numpy()))
            baseline_rows_s[name] = len(subset) / elapsed
            max_diff = max(max_diff, float(np.max(np.abs(np.asarray(theirs) - ours))))
        result["baseline_rows"] = len(subset)
        result["baseline_rows_per_s_per_model"] = {k: round(v, 1) for k, v in baseline_rows_s.items()}
        result["max_abs_diff_vs_shap"] = max_diff
    if spark:
        from pes_ml.engine import spark_session
        from pes_ml.score_spark import score_features_spark

        options = {"model_name": "pes", "model_version": version, "run_id": run_id, "top_reasons": 3}
        session = spark_session("local[*]")
        score_features_spark(features.head(1000), model, spark=session, **options)  # start executors
        spark_seconds, (spark_scores, _) = _timed(
            lambda: score_features_spark(features, model, spark=session, **options)
        )
        result["spark_seconds"] = round(spark_seconds, 2)
        result["spark_accounts_per_s"] = round(accounts / spark_seconds, 1)
        result["spark_max_abs_pes_diff"] = float(np.max(np.abs(spark_scores["pes"] - scores["pes"])))
    result["peak_rss_mib_process"] = round(max(phases.peak_rss_mib.values()), 0)
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
    parser.add_argument("--baseline-rows", type=int, default=5000, help="0: skip the shap baseline")
    parser.add_argument("--chunk-accounts", type=int, default=100_000, help="accounts per scoring chunk")
    parser.add_argument("--change", action="store_true", help="also score a second as_of with change")
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
        result = frame(
            args.work,
            int(args.accounts),
            args.baseline_rows,
            args.spark,
            args.seed,
            args.chunk_accounts,
            args.change,
        )
        print(json.dumps(result))
        return
    if args.step == "e2e":
        print(json.dumps(e2e(args.work, args.e2e_accounts, args.e2e_days, args.e2e_as_of)))
        return

    print(f"date {time.strftime('%Y-%m-%d %H:%M')} machine {os.cpu_count()} cores {platform.machine()}")
    print(f"load average before: {os.getloadavg()}")
    common = ["--work", str(args.work), "--baseline-rows", str(args.baseline_rows), "--seed", str(args.seed)]
    common += ["--chunk-accounts", str(args.chunk_accounts)]
    print("prepare", _subprocess(["--step", "prepare", *common]), flush=True)
    for size in args.accounts.split(","):
        extra = (["--spark"] if args.spark else []) + (["--change"] if args.change else [])
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
