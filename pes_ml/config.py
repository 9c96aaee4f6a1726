"""Typed, frozen configuration, loaded once from YAML and passed explicitly.

One file configures every stage (``pipelines/conf/base/pes.yaml``); a file in
``pipelines/conf/local/`` with the same name, if present, is overlaid on it for
URIs and secrets. Unknown keys are rejected with the nearest valid key
suggested, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pes_ml.errors import ConfigError


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EventLookup(_Frozen):
    """A lookup table that turns an event code into an event name.

    Example: fightchurn's ``event_type_id`` -> ``event_type.csv`` (id, name).
    """

    path: str
    key: str = Field(description="Column of the lookup file holding the code.")
    name: str = Field(description="Column of the lookup file holding the event name.")


class SourceConfig(_Frozen):
    """Where one input table lives and how its columns map onto the contract."""

    path: str = Field(description="File, folder, glob, or DuckDB database file.")
    format: Literal["auto", "parquet", "csv", "jsonl", "duckdb"] = "auto"
    table: str | None = Field(default=None, description="Table name when format is duckdb.")
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Canonical column -> column name in the source, e.g. {timestamp: event_time}.",
    )
    constants: dict[str, str | float | int | bool] = Field(
        default_factory=dict,
        description="Canonical column -> constant value, for columns the source lacks.",
    )
    event_lookup: EventLookup | None = None
    timestamp_format: str | None = Field(
        default=None,
        description="strptime format for text timestamps, e.g. '%d-%m-%Y'. Default: ISO 8601.",
    )
    delimiter: str | None = Field(default=None, description="CSV delimiter; default: sniffed.")
    header: bool = True
    filter_before: str | None = Field(
        default=None,
        description="Keep only rows with timestamp (or start) before this date, e.g. a simulation end.",
    )


class SourcesConfig(_Frozen):
    events: SourceConfig
    subscriptions: SourceConfig | None = None
    accounts: SourceConfig | None = None


class ValidationConfig(_Frozen):
    min_timestamp: str = Field(default="1990-01-01", description="Earlier timestamps are quarantined.")
    max_future_days: int = Field(
        default=1, ge=0, description="Timestamps more than this many days after now are quarantined."
    )
    allow_negative_values: bool = False


class FeatureConfig(_Frozen):
    top_event_types: int = Field(default=8, ge=0, le=50)
    core_events: list[str] | None = Field(
        default=None, description="Core events; default: the events most users of retained accounts use."
    )
    n_core_events: int = Field(default=5, ge=1, le=50)
    pes_form: Literal["mean", "multiplicative"] = "mean"


class LabelConfig(_Frozen):
    mode: Literal["auto", "subscription", "activity"] = "auto"
    horizon_days: int = Field(default=90, ge=1, le=730)
    grace_days: int = Field(default=14, ge=0, le=365)
    expansion_measure: Literal["mrr", "seats"] = "mrr"
    expansion_ratio: float = Field(default=1.10, gt=1.0)
    activity_growth_ratio: float = Field(default=1.5, gt=1.0)


class DatasetConfig(_Frozen):
    first_as_of: str | None = None
    last_as_of: str | None = None
    frequency_days: int = Field(default=30, ge=1, le=366)
    validation_dates: int = Field(default=2, ge=1)
    test_dates: int = Field(default=2, ge=1)


class TrainConfig(_Frozen):
    model_spec: str = "models/pes.yaml"
    random_state: int = 7
    calibration: Literal["platt", "isotonic", "auto"] = "platt"
    bootstrap_rounds: int = Field(default=200, ge=10)


class TrackingConfig(_Frozen):
    tracking_uri: str = "sqlite:///mlflow.db"
    artifact_location: str = "mlartifacts"
    experiment: str = "pes_ml"
    model_name: str = "pes"


class PromotionConfig(_Frozen):
    metric: Literal["roc_auc", "pr_auc", "log_loss", "brier"] = "roc_auc"
    min_improvement: float = Field(default=0.0, ge=0.0)
    max_ece: float = Field(default=0.05, gt=0.0)
    max_ece_increase: float = Field(default=0.01, ge=0.0)


class ScoreConfig(_Frozen):
    top_reasons: int = Field(default=3, ge=1, le=20)
    psi_warn: float = 0.1
    psi_error: float = 0.25
    at_risk_churn_probability: float | None = None
    expand_probability: float | None = None


class PesConfig(_Frozen):
    """The whole configuration of a pes_ml project."""

    work_dir: str = Field(default=".pes_ml", description="Clean tables, quarantine and run store.")
    engine: Literal["duckdb", "spark"] = "duckdb"
    spark_master: str = "local[*]"
    entity: Literal["account", "user"] = "account"
    sources: SourcesConfig
    validation: ValidationConfig = ValidationConfig()
    features: FeatureConfig = FeatureConfig()
    labels: LabelConfig = LabelConfig()
    dataset: DatasetConfig = DatasetConfig()
    train: TrainConfig = TrainConfig()
    tracking: TrackingConfig = TrackingConfig()
    promotion: PromotionConfig = PromotionConfig()
    score: ScoreConfig = ScoreConfig()

    @field_validator("work_dir")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a non-empty path")
        return value


def _nearest_key(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """Walk the model along ``loc`` and suggest the closest valid key for its last part."""
    current: Any = model
    for part in loc[:-1]:
        field = current.model_fields.get(part) if isinstance(current, type) else None
        if field is None:
            return ""
        annotation = field.annotation
        candidates = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)]
        models = [a for a in candidates if issubclass(a, BaseModel)]
        if not models:
            return ""
        current = models[0]
    keys = list(current.model_fields) if isinstance(current, type) else []
    match = difflib.get_close_matches(str(loc[-1]), keys, n=1)
    return f" Did you mean {match[0]!r}?" if match else f" Valid keys: {', '.join(keys)}."


def _deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_config(raw: dict[str, Any], source: str = "<config>") -> PesConfig:
    """Validate a config mapping, turning pydantic errors into one readable ConfigError."""
    try:
        return PesConfig.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            key = ".".join(str(p) for p in loc)
            if error["type"] == "extra_forbidden":
                lines.append(f"unknown key {key!r}.{_nearest_key(PesConfig, loc)}")
            elif error["type"] == "missing":
                lines.append(f"missing required key {key!r}.")
            else:
                lines.append(f"{key!r}: {error['msg']}. Got {error.get('input')!r} instead.")
        raise ConfigError(f"Invalid config {source}: " + " ".join(lines)) from None


def load_config(path: str | Path) -> PesConfig:
    """Load a YAML config, overlaid by ``conf/local/<same name>`` when that file exists.

    Relative source paths are kept as written: they are resolved against the
    working directory, the way the README's commands are run.

    Raises
    ------
    ConfigError
        If the file is missing, is not YAML, or has unknown or invalid keys.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file {str(path)!r} does not exist. Pass --config with a YAML file.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"Config file {str(path)!r} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"Config file {str(path)!r} must hold a mapping at the top level.")
    local = path.parent.parent / "local" / path.name
    if path.parent.name == "base" and local.is_file():
        overlay = yaml.safe_load(local.read_text(encoding="utf-8")) or {}
        raw = _deep_merge(raw, overlay)
    return parse_config(raw, source=str(path))
