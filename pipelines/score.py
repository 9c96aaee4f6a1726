"""Scoring job: score every active account at an as_of and commit the run to the store.

The thin entry point a scheduler (cron, Airflow, Databricks) runs nightly or weekly; all
logic is in ``pes_ml.score``. Exit codes are those of ``pes-ml``: 0 ok, 3 data contract,
5 no model, 7 drift, 8 run in progress (retry later), 9 store, 11 registry unreachable.

    python pipelines/score.py --config pipelines/conf/base/pes.yaml --as-of 2025-06-22
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from pes_ml.config import load_config
from pes_ml.errors import PesError
from pes_ml.score import score_accounts


def main(argv: list[str] | None = None) -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--config", default="pipelines/conf/base/pes.yaml", help="Project YAML config.")
    parser.add_argument("--as-of", required=True, help="Cutoff date (YYYY-MM-DD).")
    parser.add_argument("--model-alias", default="champion", help="Registered model alias.")
    parser.add_argument("--allow-drift", action="store_true", help="Score despite drift errors.")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("mlflow", "alembic", "numba", "matplotlib", "py4j"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config = load_config(args.config).with_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI"))
        run = score_accounts(config, args.as_of, alias=args.model_alias, allow_drift=args.allow_drift)
        print(f"run {run.run_id}: scored {len(run.scores):,} accounts at as_of {run.as_of}")
    except PesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
