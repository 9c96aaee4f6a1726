"""Exact SHAP throughput: pes_ml.explain.shap_values against shap.TreeExplainer, same model and rows.

Trains a binary LightGBM model of 300 trees x 31 leaves x 40 features (no early
stopping; 38 numeric features with 5% missing values and 2 categorical ones), then
explains the same rows with

- the baseline ``shap.TreeExplainer(booster).shap_values(X)``,
- ``pes_ml.explain.shap_values(booster, X)`` (Fast TreeSHAP v2 in numba, both cores,
  additivity check included), first call (table build) and warm,
- and, for the record, ``booster.predict(X, pred_contrib=True, num_threads=1|2)`` and
  our kernel on one thread.

It prints rows/s, the ratio to the baseline and the max abs difference. Run::

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_shap.py --rows 40000

The machine may be shared: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import lightgbm as lgb  # noqa: E402
import numpy as np  # noqa: E402
import shap  # noqa: E402

from pes_ml import explain  # noqa: E402

N_FEATURES = 40
N_CATEGORICAL = 2


def make_data(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    X = rng.normal(size=(n, N_FEATURES))
    X[rng.random(X.shape) < 0.05] = np.nan
    X[:, :N_CATEGORICAL] = rng.integers(0, 12, size=(n, N_CATEGORICAL))
    filled = np.nan_to_num(X[:, N_CATEGORICAL:])
    logit = (
        filled[:, 0]
        - 0.5 * filled[:, 1]
        + np.sin(filled[:, 2])
        + 0.3 * filled[:, 3] * filled[:, 4]
        + 0.2 * filled[:, 5:15].sum(axis=1)
        + 0.4 * (X[:, 0] % 3 == 0)
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, y


def timed(fn, rows: int) -> tuple[float, object]:
    """Rows per wall-clock second, and the result; rows per CPU-second is kept in CPU_RATES."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    CPU_RATES.append(rows / cpu_seconds)
    return rows / seconds, out


CPU_RATES: list[float] = []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=40_000, help="rows to explain")
    parser.add_argument("--train-rows", type=int, default=30_000, help="rows to train on")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    X_train, y_train = make_data(rng, args.train_rows)
    X, _ = make_data(rng, args.rows)
    params = {
        "objective": "binary",
        "num_leaves": 31,
        "learning_rate": 0.05,
        "verbose": -1,
        "num_threads": 2,
        "seed": args.seed,
    }
    start = time.perf_counter()
    train_set = lgb.Dataset(X_train, y_train, categorical_feature=list(range(N_CATEGORICAL)))
    booster = lgb.train(params, train_set, num_boost_round=300)
    leaves = [t["num_leaves"] for t in booster.dump_model()["tree_info"]]
    print(
        f"model: {booster.num_trees()} trees, {min(leaves)}-{max(leaves)} leaves, "
        f"{booster.num_feature()} features; trained in {time.perf_counter() - start:.1f}s"
    )
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}; load average before {os.getloadavg()}")
    print(f"rows explained: {args.rows:,}")

    def baseline():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # shap's notice about the binary LightGBM output shape
            return np.asarray(shap.TreeExplainer(booster).shap_values(X))

    base_rate, base_values = timed(baseline, args.rows)
    print(f"baseline shap.TreeExplainer(model).shap_values(X): {base_rate:,.0f} rows/s")

    cold_rate, cold = timed(lambda: explain.shap_values(booster, X), args.rows)
    warm_rate, ours = timed(lambda: explain.shap_values(booster, X), args.rows)
    one_rate, _ = timed(lambda: explain.shap_values(booster, X, n_threads=1), args.rows)
    pc1_rate, pc1 = timed(lambda: booster.predict(X, pred_contrib=True, num_threads=1), args.rows)
    pc2_rate, _ = timed(lambda: booster.predict(X, pred_contrib=True, num_threads=2), args.rows)

    diff_baseline = float(np.max(np.abs(ours.contributions - base_values)))
    diff_contrib = float(np.max(np.abs(ours.contributions - pc1[:, :-1])))
    diff_cold = float(np.max(np.abs(cold.contributions - ours.contributions)))
    print(
        f"pes_ml.explain.shap_values, first call (tables built): {cold_rate:,.0f} rows/s "
        f"({cold_rate / base_rate:.2f}x baseline)"
    )
    print(
        f"pes_ml.explain.shap_values, warm: {warm_rate:,.0f} rows/s ({warm_rate / base_rate:.2f}x baseline)"
    )
    print(f"pes_ml.explain.shap_values, 1 thread: {one_rate:,.0f} rows/s ({one_rate / base_rate:.2f}x)")
    print(f"pred_contrib num_threads=1: {pc1_rate:,.0f} rows/s ({pc1_rate / base_rate:.2f}x)")
    print(f"pred_contrib num_threads=2: {pc2_rate:,.0f} rows/s ({pc2_rate / base_rate:.2f}x)")
    names = ["baseline", "ours first call", "ours warm", "ours 1 thread", "pred_contrib 1", "pred_contrib 2"]
    print(
        "rows per CPU-second (steadier on a shared machine): "
        + ", ".join(f"{n} {r:,.0f}" for n, r in zip(names, CPU_RATES, strict=True))
    )
    print(f"max |ours - baseline| = {diff_baseline:.2e}; max |ours - pred_contrib| = {diff_contrib:.2e}")
    print(f"first vs warm call identical: {diff_cold == 0.0}; additivity gap {ours.max_additivity_error:.1e}")
    print(f"load average after {os.getloadavg()}")
    if diff_baseline > 1e-6:
        raise SystemExit(f"values differ from the baseline by {diff_baseline:.2e} > 1e-6")


if __name__ == "__main__":
    main()
