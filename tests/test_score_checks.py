"""Scoring's check of the feature-catalog version the model was trained on."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

from pes_ml.features.catalog import CATALOG_VERSION
from pes_ml.score import check_catalog_version


def _model(metadata: dict[str, Any]) -> Any:
    return SimpleNamespace(metadata=metadata)


def test_a_model_trained_on_another_catalog_version_is_scored_with_a_warning_to_retrain(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="pes_ml.score"):
        assert not check_catalog_version(_model({"catalog_version": "catalog-old"}), "7")
    (record,) = caplog.records
    assert "Model version 7 was trained on feature catalog catalog-old" in record.getMessage()
    assert CATALOG_VERSION in record.getMessage()
    assert "Retrain (`pes-ml train`) and promote" in record.getMessage()


@pytest.mark.parametrize("metadata", [{"catalog_version": CATALOG_VERSION}, {}])
def test_the_current_catalog_or_an_unrecorded_one_passes_silently(
    metadata: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="pes_ml.score"):
        assert check_catalog_version(_model(metadata), "7")
    assert caplog.records == []
