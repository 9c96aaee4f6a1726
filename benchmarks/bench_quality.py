"""Model quality vs baselines on the simulator and on fightchurn, plus training cost at 1M snapshots.

    python benchmarks/bench_quality.py                      # everything (simulates 20k accounts once)
    python benchmarks/bench_quality.py --only sim|fightchurn|scale

Each dataset goes through the real stages (ingest -> features -> labels -> time
split -> train_models); snapshots are cached as Parquet under --work-dir so a rerun
only retrains. The scale run replicates the simulator's training snapshots (new account
ids, same as_of dates) to >= --scale-rows rows x the full catalog and measures wall time
and peak RSS of train_models in a child process. Prints Markdown tables for
benchmarks/RESULTS.md.
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
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import pandas as pd  # noqa: E402

from pes_ml.config import PesConfig, load_config  # noqa: E402
from pes_ml.dataset import as_of_schedule, join_snapshots, split_by_time  # noqa: E402
from pes_ml.evaluate import comparison_table  # noqa: E402
from pes_ml.labels import make_labels  # noqa: E402
from pes_ml.train import train_models  # noqa: E402
from pes_ml.training import data_window  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = [
    "roc_auc",
    "roc_auc_low",
    "roc_auc_high",
    "pr_auc",
    "log_loss",
    "base_log_loss",
    "brier",
    "ece",
    "top_decile_lift",
]


def markdown(frame: pd.DataFrame, index: bool = True) -> str:
    """A Markdown table (pandas' to_markdown needs tabulate, which is not a dependency)."""
    frame = frame.reset_index() if index else frame
    cells = [
        [f"{v:.4f}" if isinstance(v, float) else str(v) for v in row] for row in frame.itertuples(index=False)
    ]
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def sim_config(work: Path, sim_dir: Path) -> PesConfig:
    raw = load_config(ROOT / "pipelines/conf/base/pes.yaml").model_dump(mode="json")
    raw["work_dir"] = str(work / "sim_work")
    raw["sources"] = {
        "events": {"path": str(sim_dir / "events")},
        "subscriptions": {"path": str(sim_dir / "subscriptions.parquet")},
        "accounts": {"path": str(sim_dir / "accounts.parquet")},
    }
    raw["train"]["model_spec"] = str(ROOT / "models/pes.yaml")
    return PesConfig.model_validate(raw)


def fightchurn_config(work: Path, data: Path) -> PesConfig:
    raw = load_config(ROOT / "pipelines/conf/shared/fightchurn_socialnet7.yaml").model_dump(mode="json")
    base = load_config(ROOT / "pipelines/conf/base/pes.yaml").model_dump(mode="json")
    raw["work_dir"] = str(work / "fightchurn_work")
    for table in ("events", "subscriptions", "accounts"):
        raw["sources"][table]["path"] = str(data / Path(raw["sources"][table]["path"]).name)
    raw["sources"]["events"]["event_lookup"]["path"] = str(data / "event_type.csv")
    # Six months of monthly subscriptions: a 30-day horizon and weekly snapshots.
    raw["labels"].update({"horizon_days": 30, "grace_days": 7, "data_end": "2020-07-01"})
    # Every account starts in 2020: the data start is the product's start, so snapshots from week 2 on
    # see all the history there is (the default 90-day warm-up would leave no training dates).
    raw["dataset"] = {
        "frequency_days": 7,
        "validation_dates": 2,
        "test_dates": 2,
        "first_as_of": "2020-01-13",
    }
    raw["train"] = {**base["train"], "model_spec": str(ROOT / "models/pes.yaml"), "outcomes": ["churn"]}
    # The scorecards of the base config use B2B signals; keep only the untrained baselines here.
    raw["baselines"] = {**base["baselines"], "rule_scores": []}
    return PesConfig.model_validate(raw)


def snapshots_for(config: PesConfig, cache: Path) -> tuple[pd.DataFrame, list[str]]:
    """Ingest (if needed), build features and labels at every as_of date; cached."""
    from pes_ml.features import build_features, model_feature_names
    from pes_ml.ingest import clean_paths, ingest

    names_file = cache.with_suffix(".names.json")
    if cache.is_file() and names_file.is_file():
        return pd.read_parquet(cache), json.loads(names_file.read_text())
    paths = clean_paths(config)
    if not paths["events"].is_file():
        ingest(config)
    start, end = data_window(config, paths)
    dates = as_of_schedule(config.dataset, start, end, config.labels.horizon_days)
    subscriptions = pd.read_parquet(paths["subscriptions"])
    labels = make_labels(config.labels, dates, subscriptions=subscriptions, data_end=end)
    features = build_features(config, dates)
    names = model_feature_names(features)
    snapshots = join_snapshots(features, labels)
    snapshots.attrs = {}
    cache.parent.mkdir(parents=True, exist_ok=True)
    snapshots.to_parquet(cache, index=False)
    names_file.write_text(json.dumps(names))
    return snapshots, names


def quality(name: str, config: PesConfig, cache: Path) -> dict:
    started = time.perf_counter()
    snapshots, names = snapshots_for(config, cache)
    prepared = time.perf_counter() - started
    split = split_by_time(snapshots, config.dataset, config.labels.horizon_days)
    result = train_models(split, names, config)
    print(f"\n### {name}\n")
    print(
        f"{len(snapshots):,} snapshots, {len(names)} features; snapshots built in {prepared:.0f} s, "
        f"trained + evaluated in {result.seconds:.0f} s\n"
    )
    print(markdown(result.split_summary, index=False))
    tables = {}
    for outcome, report in result.reports.items():
        table = comparison_table(report.metrics).reindex(columns=COLUMNS)
        tables[outcome] = table
        print(
            f"\n**{outcome}** ({report.rows['test']:,} test snapshots, "
            f"{int(report.metrics['model']['positives'])} positives, "
            f"{result.model.outcomes[outcome].best_iteration} trees, "
            f"calibration {result.model.outcomes[outcome].calibration})\n"
        )
        print(markdown(table.rename_axis("scorer")))
    for outcome, reason in result.skipped.items():
        print(f"\n{outcome} not trained: {reason}")
    return {o: t.to_dict() for o, t in tables.items()}


def scale_child(cache: Path, rows: int, config_json: str) -> None:
    """Run in a child process: replicate the *training* snapshots to ``rows`` and time train_models.

    Copies get new account ids and keep their as_of dates; validation and test stay as they are,
    so the measurement is "1M training snapshots" with the usual evaluation around it.
    """
    from pes_ml.dataset import Split

    snapshots = pd.read_parquet(cache)
    names = json.loads(cache.with_suffix(".names.json").read_text())
    config = PesConfig.model_validate_json(config_json)
    split = split_by_time(snapshots, config.dataset, config.labels.horizon_days)
    copies = -(-rows // len(split.train))
    frames = []
    for k in range(copies):
        copy = split.train.copy()
        copy["account_id"] = copy["account_id"].astype(str) + f"_{k}"
        frames.append(copy)
    big = Split(
        train=pd.concat(frames, ignore_index=True),
        validation=split.validation,
        test=split.test,
        horizon_days=split.horizon_days,
        gap_days=split.gap_days,
    )
    del frames, snapshots
    started = time.perf_counter()
    result = train_models(big, names, config)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    trees = {o: m.best_iteration for o, m in result.model.outcomes.items()}
    total = len(big.train) + len(big.validation) + len(big.test)
    print(
        json.dumps(
            {
                "rows": total,
                "features": len(names),
                "train_rows": len(big.train),
                "seconds": seconds,
                "peak_rss_gib": peak,
                "trees": trees,
            }
        )
    )


def scale(config: PesConfig, cache: Path, rows: int) -> dict:
    config = config.model_copy(update={"train": config.train.model_copy(update={"bootstrap_rounds": 50})})
    command = [
        sys.executable,
        __file__,
        "--scale-child",
        str(cache),
        "--scale-rows",
        str(rows),
        "--config-json",
        config.model_dump_json(),
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    measured = json.loads(output.strip().splitlines()[-1])
    print(
        f"\n### Training cost at scale\n\n{measured['rows']:,} snapshot rows ({measured['train_rows']:,} in "
        f"train) x {measured['features']} features: train_models (churn + expansion + calibration + "
        f"all baselines + evaluation) {measured['seconds']:.0f} s, "
        f"peak RSS {measured['peak_rss_gib']:.2f} GiB "
        f"(whole process, incl. the replicated frame); trees {measured['trees']}"
    )
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=["sim", "fightchurn", "scale"], default=None)
    parser.add_argument("--work-dir", type=Path, default=ROOT / ".pes_ml/bench_quality")
    parser.add_argument("--sim-dir", type=Path, default=None, help="Simulator output; simulated when absent.")
    parser.add_argument("--sim-accounts", type=int, default=20_000)
    parser.add_argument("--sim-days", type=int, default=450)
    parser.add_argument("--fightchurn", type=Path, default=ROOT.parent / "shared/data/fightchurn_socialnet7")
    parser.add_argument("--scale-rows", type=int, default=1_000_000)
    parser.add_argument("--scale-child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--config-json", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scale_child is not None:
        scale_child(args.scale_child, args.scale_rows, args.config_json)
        return
    import logging

    logging.basicConfig(level=logging.WARNING)
    print(
        f"date {time.strftime('%Y-%m-%d')}; machine {platform.node()} {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}"
    )
    sim_dir = args.sim_dir or args.work_dir / f"sim{args.sim_accounts}"
    config = sim_config(args.work_dir, sim_dir)
    sim_cache = args.work_dir / f"sim{args.sim_accounts}_snapshots.parquet"
    if args.only in (None, "sim", "scale") and not (sim_dir / "subscriptions.parquet").is_file():
        from pes_ml.simulate import SimulationConfig, simulate_saas

        simulate_saas(SimulationConfig(n_accounts=args.sim_accounts, days=args.sim_days, seed=11), sim_dir)
    if args.only in (None, "sim"):
        quality(f"Simulator ({args.sim_accounts:,} accounts, {args.sim_days} days)", config, sim_cache)
    if args.only in (None, "fightchurn"):
        if args.fightchurn.is_dir():
            fc = fightchurn_config(args.work_dir, args.fightchurn)
            quality("fightchurn socialnet7 (churn only)", fc, args.work_dir / "fightchurn_snapshots.parquet")
        else:
            print(f"\nfightchurn skipped: {args.fightchurn} not found")
    if args.only in (None, "scale"):
        if not sim_cache.is_file():
            snapshots_for(config, sim_cache)
        scale(config, sim_cache, args.scale_rows)


if __name__ == "__main__":
    main()
