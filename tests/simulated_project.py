"""A project over simulated data in a temp folder: the settings the end-to-end tests share.

``project_settings(tmp)`` points the sources at ``simulate_saas(..., tmp / "sim")`` and keeps
the work dir, the MLflow store, its artifacts and the model cards inside ``tmp``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def project_settings(tmp: Path) -> dict[str, Any]:
    """Raw config (for ``PesConfig.model_validate``) of a project over ``tmp / "sim"``."""
    return {
        "work_dir": str(tmp / "work"),
        "sources": {
            "events": {"path": str(tmp / "sim" / "events")},
            "subscriptions": {"path": str(tmp / "sim" / "subscriptions.parquet")},
            "accounts": {"path": str(tmp / "sim" / "accounts.parquet")},
        },
        "dataset": {"frequency_days": 14},
        "train": {"model_spec": str(ROOT / "models" / "pes.yaml"), "bootstrap_rounds": 20},
        "tracking": {
            "tracking_uri": f"sqlite:///{tmp}/mlflow.db",
            "artifact_location": str(tmp / "mlartifacts"),
            "model_card_dir": str(tmp / "models"),
        },
    }
