"""pes_ml: a predictive Product Engagement Score from SaaS product event logs.

Public API (everything else is internal and may change)::

    from pes_ml import load_config, ingest, simulate_saas
"""

from __future__ import annotations

__version__ = "0.1.0"

from pes_ml.config import PesConfig, load_config
from pes_ml.errors import (
    ConfigError,
    DataContractError,
    DriftError,
    LeakageError,
    ModelNotFoundError,
    PesError,
    PromotionRejected,
    RunInProgressError,
    StoreError,
)

__all__ = [
    "ConfigError",
    "DataContractError",
    "DriftError",
    "LeakageError",
    "ModelNotFoundError",
    "PesConfig",
    "PesError",
    "PromotionRejected",
    "RunInProgressError",
    "StoreError",
    "__version__",
    "load_config",
]
