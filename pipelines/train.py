"""Training job: build point-in-time snapshots, train, compare with baselines, register, promote.

The thin entry point a scheduler (cron, Airflow, Databricks) runs; all logic is in
``pes_ml``. Exit codes are those of ``pes-ml``: 0 ok, 6 promotion refused, other
non-zero for config and data errors.

    python pipelines/train.py --config pipelines/conf/base/pes.yaml [--promote]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from pes_ml.config import load_config
from pes_ml.errors import PesError, PromotionRejected
from pes_ml.registry import promote
from pes_ml.training import run_training


def main(argv: list[str] | None = None) -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--config", default="pipelines/conf/base/pes.yaml", help="Project YAML config.")
    parser.add_argument("--promote", action="store_true", help="Promote if the gate passes.")
    parser.add_argument("--run-name", default=None, help="MLflow run name.")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("mlflow", "alembic", "numba", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config = load_config(args.config).with_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI"))
        outcome = run_training(config, run_name=args.run_name)
        print(f"run {outcome.run_id}: {outcome.model_name} v{outcome.version} registered as @challenger")
        if args.promote:
            decision = promote(config)
            print(f"v{decision.version} promoted to @champion; model card {decision.card_path}")
    except PromotionRejected as exc:
        print("not promoted:\n  - " + "\n  - ".join(exc.failed_gates), file=sys.stderr)
        return exc.exit_code
    except PesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
