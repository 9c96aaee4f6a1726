"""Config loading helpers that every entry point (CLI, pipelines) shares."""

from __future__ import annotations

import pytest

from pes_ml.config import parse_config
from pes_ml.errors import ConfigError


def test_with_tracking_uri_replaces_only_the_tracking_uri_and_ignores_an_empty_one() -> None:
    config = parse_config({"sources": {"events": {"path": "e.parquet"}}, "tracking": {"experiment": "x"}})
    moved = config.with_tracking_uri("http://127.0.0.1:5000")
    assert moved.tracking.tracking_uri == "http://127.0.0.1:5000"
    assert moved.tracking.experiment == "x"
    assert config.tracking.tracking_uri == "sqlite:///mlflow.db"  # the original is frozen, untouched
    assert config.with_tracking_uri(None) is config
    assert config.with_tracking_uri("") is config


def test_more_core_events_than_mask_bits_is_a_config_error_naming_the_key() -> None:
    raw: dict[str, object] = {
        "sources": {"events": {"path": "e.parquet"}},
        "features": {"core_events": [f"e{i}" for i in range(62)]},
    }
    assert len(parse_config(raw).features.core_events or []) == 62
    raw["features"] = {"core_events": [f"e{i}" for i in range(63)]}
    with pytest.raises(ConfigError, match=r"features\.core_events"):
        parse_config(raw, source="pes.yaml")


@pytest.mark.parametrize("key", ["core_events", "event_types"])
def test_an_event_listed_twice_is_a_config_error_naming_the_key_and_the_event(key: str) -> None:
    raw: dict[str, object] = {
        "sources": {"events": {"path": "e.parquet"}},
        "features": {key: ["login", "export", "login"]},
    }
    with pytest.raises(ConfigError, match=rf"features\.{key}.*\['login'\] listed more than once"):
        parse_config(raw, source="pes.yaml")
    raw["features"] = {key: ["login", "export"]}
    assert getattr(parse_config(raw).features, key) == ["login", "export"]


@pytest.mark.parametrize(("section", "key"), [("dataset", "first_as_of"), ("dataset", "last_as_of"),
                                              ("labels", "data_end"), ("validation", "min_timestamp")])
def test_a_config_date_that_is_not_iso_8601_is_a_config_error_naming_the_key(section: str, key: str) -> None:
    raw: dict[str, object] = {"sources": {"events": {"path": "e.parquet"}}, section: {key: "2024-06-01"}}
    assert getattr(getattr(parse_config(raw), section), key) == "2024-06-01"
    raw[section] = {key: "01/06/2024"}  # the 1st of June or the 6th of January: refused, not guessed
    with pytest.raises(ConfigError, match=rf"'{section}\.{key}': .*2024-06-01.*Got '01/06/2024'"):
        parse_config(raw)


def test_drift_thresholds_must_be_ordered_and_not_negative() -> None:
    base: dict[str, object] = {"sources": {"events": {"path": "e.parquet"}}}
    with pytest.raises(ConfigError, match=r"'score.psi_error': Input should be greater than or equal to 0"):
        parse_config({**base, "score": {"psi_error": -1}})
    with pytest.raises(ConfigError, match=r"'score.psi_error': .*must be at least score.psi_warn \(0.5\)"):
        parse_config({**base, "score": {"psi_warn": 0.5, "psi_error": 0.2}})
    assert parse_config({**base, "score": {"psi_warn": 0.2, "psi_error": 0.2}}).score.psi_error == 0.2


def test_invalid_yaml_is_one_line_naming_the_file(tmp_path) -> None:
    from pes_ml.config import load_config

    path = tmp_path / "pes.yaml"
    path.write_text("sources:\n  events: {path: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML") as caught:
        load_config(path)
    assert "\n" not in str(caught.value)
    assert str(path) in str(caught.value)
