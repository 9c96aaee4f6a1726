"""Config loading helpers that every entry point (CLI, pipelines) shares."""

from __future__ import annotations

from pes_ml.config import parse_config


def test_with_tracking_uri_replaces_only_the_tracking_uri_and_ignores_an_empty_one() -> None:
    config = parse_config({"sources": {"events": {"path": "e.parquet"}}, "tracking": {"experiment": "x"}})
    moved = config.with_tracking_uri("http://127.0.0.1:5000")
    assert moved.tracking.tracking_uri == "http://127.0.0.1:5000"
    assert moved.tracking.experiment == "x"
    assert config.tracking.tracking_uri == "sqlite:///mlflow.db"  # the original is frozen, untouched
    assert config.with_tracking_uri(None) is config
    assert config.with_tracking_uri("") is config
