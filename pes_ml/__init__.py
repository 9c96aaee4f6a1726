"""pes_ml: a predictive Product Engagement Score from SaaS product event logs.

Public API (everything else is internal and may change)::

    from pes_ml import load_config, simulate_saas, SimulationConfig

Stage functions live in their modules: ``pes_ml.ingest.ingest``,
``pes_ml.features.build_features``, ``pes_ml.score.score_accounts``...
"""

from __future__ import annotations

__version__ = "0.1.0"

from pes_ml.config import PesConfig, load_config
from pes_ml.dataset import Split, split_by_time
from pes_ml.errors import (
    ConfigError,
    DataContractError,
    DriftError,
    ExplanationError,
    LeakageError,
    ModelNotFoundError,
    PesError,
    PromotionRejected,
    RunInProgressError,
    StoreError,
)
from pes_ml.labels import make_labels
from pes_ml.simulate import SimulationConfig, simulate_saas

# Heavy stages (LightGBM, MLflow) load on first use, so `import pes_ml` and the CLI stay fast.
_LAZY = {
    "TrainingResult": "pes_ml.train",
    "train_models": "pes_ml.train",
    "run_training": "pes_ml.training",
    "promote": "pes_ml.registry",
    "PesModel": "pes_ml.model",
    "CATALOG": "pes_ml.features",
    "CATALOG_VERSION": "pes_ml.features",
    "FeatureSpec": "pes_ml.features",
    "build_features": "pes_ml.features",
    "compute_features": "pes_ml.features",
    "model_feature_names": "pes_ml.features",
    "ScoreRun": "pes_ml.score",
    "score_accounts": "pes_ml.score",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pes_ml' has no attribute {name!r}")

__all__ = [
    "CATALOG",
    "CATALOG_VERSION",
    "ConfigError",
    "DataContractError",
    "DriftError",
    "ExplanationError",
    "FeatureSpec",
    "LeakageError",
    "ModelNotFoundError",
    "PesConfig",
    "PesError",
    "PesModel",
    "PromotionRejected",
    "RunInProgressError",
    "ScoreRun",
    "SimulationConfig",
    "Split",
    "StoreError",
    "TrainingResult",
    "build_features",
    "compute_features",
    "load_config",
    "make_labels",
    "model_feature_names",
    "promote",
    "run_training",
    "score_accounts",
    "simulate_saas",
    "split_by_time",
    "train_models",
    "__version__",
]
