"""Explanation formatting: long table, reason sentences and change attribution at scale.

Times :func:`pes_ml.explain.long_format` (both models), :func:`pes_ml.explain.top_reasons`
(churn, k=3) and :func:`pes_ml.explain.attribute_change` (churn, against a previous run) on
the registered model of ``bench_score.py`` (its cached ``prepare`` step: simulated SaaS, trained
and promoted champion in ``benchmarks/out/score``):

- the real FeatureFrame at 2025-06-01, resampled to ``--accounts`` rows with new ids, as in
  ``bench_score.py``; resampling 700 real accounts repeats values, which would flatter the
  value-to-text step, so non-integral floats get a 1e-6 relative jitter (``--no-jitter`` to
  skip) and most values are distinct, as with real accounts;
- the previous run: the same accounts' features 14 days earlier, same resampling.

SHAP values are computed once, outside the timings. Each function runs ``--repeat`` times; the
best wall and CPU (process) seconds are reported, since the machine may be shared.
``--score`` also times the whole :func:`pes_ml.score.score_features` once.

Run::

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_explain.py --accounts 100000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_score  # noqa: E402  (the benchmarks directory is not a package)

PREVIOUS_AS_OF = "2025-05-18"


def _best(fn: Any, repeat: int) -> tuple[dict[str, float], Any]:
    wall, cpu, out = [], [], None
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {"wall_s": round(min(wall), 3), "cpu_s": round(min(cpu), 3)}, out


def _frames(work: Path, accounts: int, seed: int, jitter: bool) -> tuple[Any, Any, Any, Any]:
    import numpy as np

    from pes_ml.features import build_features
    from pes_ml.registry import load_pes_model
    from pes_ml.score import _with_model_vocabulary

    config = bench_score._config(work, work / "train-sim")
    model, _ = load_pes_model(config)
    vocabulary = _with_model_vocabulary(config, model)
    rng = np.random.default_rng(seed)
    frames = []
    real = build_features(vocabulary, [bench_score.TRAIN_AS_OF, PREVIOUS_AS_OF])
    current = real[real["as_of"] == real["as_of"].max()].reset_index(drop=True)
    previous = real[real["as_of"] == real["as_of"].min()].set_index("account_id")
    rows = rng.integers(0, len(current), accounts)
    for frame in (current, previous.reindex(current["account_id"]).reset_index()):
        sample = frame.iloc[rows].reset_index(drop=True)
        sample["account_id"] = [f"b{i:07d}" for i in range(accounts)]
        sample["account_id"] = sample["account_id"].astype("str")
        sample["as_of"] = frame["as_of"].dropna().iloc[0]
        if jitter:
            for column in sample.columns:
                if sample[column].dtype == np.float64:
                    values = sample[column].to_numpy().copy()
                    fraction = np.isfinite(values) & (values != np.round(values))
                    values[fraction] *= 1 + 1e-6 * rng.standard_normal(int(fraction.sum()))
                    sample[column] = values
        frames.append(sample)
    return model, vocabulary, frames[0], frames[1]


def run(work: Path, accounts: int, repeat: int, seed: int, jitter: bool, score: bool) -> dict[str, Any]:
    import pandas as pd

    from pes_ml import explain

    bench_score.prepare(work)
    model, _, current, previous = _frames(work, accounts, seed, jitter)
    specs = model.specs()
    longs: dict[str, dict[str, Any]] = {"current": {}, "previous": {}}
    shap: dict[str, dict[str, Any]] = {"current": {}, "previous": {}}
    for run_name, frame in (("current", current), ("previous", previous)):
        matrix = model.encoder.transform(frame)
        for outcome in ("churn", "expansion"):
            shap[run_name][outcome] = explain.shap_values(model.outcomes[outcome].booster, matrix)

    def long_tables(run_name: str, frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
        return {
            outcome: explain.long_format(
                shap[run_name][outcome],
                frame,
                model=outcome,
                specs=specs,
                platt_slope=model.outcomes[outcome].platt_slope,
            )
            for outcome in ("churn", "expansion")
        }

    seconds: dict[str, Any] = {}
    seconds["long_format_both_models"], longs["current"] = _best(
        lambda: long_tables("current", current), repeat
    )
    longs["previous"] = long_tables("previous", previous)
    churn = longs["current"]["churn"]
    seconds["top_reasons_churn_k3"], reasons = _best(lambda: explain.top_reasons(churn, specs, 3), repeat)
    seconds["attribute_change_churn"], change = _best(
        lambda: explain.attribute_change(longs["previous"]["churn"], churn, specs), repeat
    )
    result: dict[str, Any] = {
        "accounts": accounts,
        "features": len(shap["current"]["churn"].feature_names),
        "long_rows_per_model": len(churn),
        "reason_rows": len(reasons),
        "changed_accounts": len(change.accounts),
        "jitter": jitter,
        "seconds": seconds,
    }
    if score:
        from pes_ml.score import score_features

        result["seconds"]["score_features"], _ = _best(
            lambda: score_features(current, model, model_name="pes", model_version="bench", run_id="bench"), 1
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=bench_score.ROOT / "benchmarks" / "out" / "score")
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-jitter", action="store_true", help="keep the resampled values as they are")
    parser.add_argument("--score", action="store_true", help="also time score_features once")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"date {time.strftime('%Y-%m-%d %H:%M')} machine {os.cpu_count()} cores")
    print(f"load average before: {os.getloadavg()}", flush=True)
    result = run(args.work, args.accounts, args.repeat, args.seed, not args.no_jitter, args.score)
    print(json.dumps(result))
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
