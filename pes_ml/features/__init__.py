"""Point-in-time engagement features and the classic PES, one definition on DuckDB and Spark.

Public API::

    from pes_ml.features import build_features, compute_features, write_features, CATALOG, CATALOG_VERSION
"""

from __future__ import annotations

from pes_ml.features.build import build_features, compute_features, write_features
from pes_ml.features.catalog import (
    CATALOG,
    CATALOG_VERSION,
    CATEGORICAL_FEATURES,
    FeatureSpec,
    event_type_specs,
    feature_specs,
    model_feature_names,
)
from pes_ml.features.inputs import FeatureTables

__all__ = [
    "CATALOG",
    "CATALOG_VERSION",
    "CATEGORICAL_FEATURES",
    "FeatureSpec",
    "FeatureTables",
    "build_features",
    "compute_features",
    "event_type_specs",
    "feature_specs",
    "model_feature_names",
    "write_features",
]
