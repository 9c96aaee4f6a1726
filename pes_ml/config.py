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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from pes_ml.errors import ConfigError, DataContractError
from pes_ml.instants import EXPECTED, to_utc

EPOCH_FORMATS: tuple[str, ...] = ("epoch_s", "epoch_ms")
"""``timestamp_format`` values for numbers since 1970-01-01 UTC, in seconds or milliseconds."""


Outcome = Literal["churn", "expansion", "conversion"]
OUTCOMES: tuple[Outcome, ...] = ("churn", "expansion", "conversion")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _instant(value: str | None) -> str | None:
    """A config instant (``labels.data_end``, ``dataset.first_as_of``...) read as :func:`to_utc` reads it."""
    if value is not None:
        try:
            to_utc(value)
        except DataContractError:
            raise ValueError(f"must be {EXPECTED}, between 1677-09-22 and 2262-04-11") from None
    return value


class EventLookup(_Frozen):
    """A lookup table that turns an event code into an event name.

    Example: fightchurn's ``event_type_id`` -> ``event_type.csv`` (id, name).
    """

    path: str
    key: str = Field(description="Column of the lookup file holding the code.")
    name: str = Field(description="Column of the lookup file holding the event name.")


class JoinConfig(_Frozen):
    """A second file joined onto a source to bring columns it lacks (a many-to-one lookup).

    Example: ravenstack's feature-usage rows carry a ``subscription_id``; joining
    ``ravenstack_subscriptions.csv`` on it brings the ``account_id``. The key must be
    unique in the joined file, so the join never multiplies rows; source rows whose key
    has no match are quarantined.
    """

    path: str = Field(description="File, folder or glob of the table to join.")
    format: Literal["auto", "parquet", "csv", "jsonl", "duckdb"] = "auto"
    table: str | None = Field(default=None, description="Table name when format is duckdb.")
    key: str = Field(description="Key column in the joined file.")
    source_key: str | None = Field(default=None, description="Key column in the source; default: key.")
    columns: list[str] = Field(min_length=1, description="Columns of the joined file to bring in.")
    delimiter: str | None = Field(default=None, description="CSV delimiter; default: sniffed.")


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
        description="strptime format for text timestamps, e.g. '%d-%m-%Y'; or 'epoch_s' / 'epoch_ms' for "
        "seconds / milliseconds since 1970-01-01 UTC (numbers or digit strings). Default: ISO 8601.",
    )
    delimiter: str | None = Field(
        default=None,
        description="CSV delimiter; default: sniffed. 'whitespace': runs of spaces/tabs (e.g. cdnow).",
    )
    header: bool = True
    join: JoinConfig | None = Field(default=None, description="A file joined on a key, for extra columns.")
    value_maps: dict[str, dict[str, str | float | int | bool]] = Field(
        default_factory=dict,
        description="Canonical column -> {source text: value}, e.g. {billing_period_months: {monthly: 1}}.",
    )
    filter_before: str | None = Field(
        default=None,
        description="Keep only rows with timestamp (or start) before this date, e.g. a simulation end.",
    )
    deduplicate: bool = Field(
        default=True,
        description="Remove (and count) exact duplicate rows. Set false when identical rows are genuine.",
    )

    @field_validator("timestamp_format")
    @classmethod
    def _timestamp_format(cls, value: str | None) -> str | None:
        # A format without a directive (e.g. 'DD-MM-YYYY') would silently quarantine every row.
        if value is None or value in EPOCH_FORMATS or "%" in value:
            return value
        raise ValueError(
            "must be a strptime format such as '%d-%m-%Y' or '%Y-%m-%d %H:%M:%S', "
            f"or one of {', '.join(EPOCH_FORMATS)}"
        )


class SourcesConfig(_Frozen):
    events: SourceConfig
    subscriptions: SourceConfig | None = None
    accounts: SourceConfig | None = None


class ValidationConfig(_Frozen):
    min_timestamp: str = Field(default="1990-01-01", description="Earlier timestamps are quarantined.")
    _min_timestamp = field_validator("min_timestamp")(_instant)
    max_future_days: int = Field(
        default=1, ge=0, description="Timestamps more than this many days after now are quarantined."
    )
    allow_negative_values: bool = False


class FeatureConfig(_Frozen):
    top_event_types: int = Field(default=8, ge=0, le=50)
    core_events: list[str] | None = Field(
        default=None,
        max_length=62,  # one bit each in a 62-bit mask (pes_ml.features.definitions.BITS_PER_WORD)
        description="Core events (at most 62); default: the events most users of retained accounts use.",
    )
    n_core_events: int = Field(default=5, ge=1, le=50)
    event_types: list[str] | None = Field(
        default=None,
        description="Event types with their own count; default: the top_event_types most frequent "
        "in the 90 days before the earliest as_of. Pin them so training and scoring agree.",
    )
    pes_form: Literal["mean", "multiplicative"] = "mean"

    @field_validator("core_events", "event_types")
    @classmethod
    def _distinct(cls, value: list[str] | None) -> list[str] | None:
        """Each event named once: a repeated name would be counted twice (core events) or get two columns."""
        if value is not None:
            repeated = sorted({name for name in value if value.count(name) > 1})
            if repeated:
                raise ValueError(f"{repeated} listed more than once; list each event once")
        return value


class LabelConfig(_Frozen):
    """How churn, expansion and conversion are defined over ``[as_of, as_of + horizon)``."""

    mode: Literal["auto", "subscription", "activity"] = Field(
        default="auto", description="auto: subscription mode when a subscriptions table exists."
    )
    horizon_days: int = Field(default=90, ge=1, le=730)
    grace_days: int = Field(
        default=14, ge=0, le=365, description="A re-subscription within this gap is not churn."
    )
    expansion_measure: Literal["mrr", "seats"] = Field(
        default="mrr", description="mrr is measured at list price (list_mrr, before discount) when present."
    )
    expansion_ratio: float = Field(default=1.10, gt=1.0)
    activity_growth_ratio: float = Field(default=1.5, gt=1.0)
    trial_plans: list[str] = Field(
        default_factory=lambda: ["trial", "free"],
        description="Plans that count as trial/free for conversion (as does an MRR of 0).",
    )
    data_end: str | None = Field(
        default=None,
        description="End of observed data (exclusive); default: the latest event or subscription start.",
    )

    _data_end = field_validator("data_end")(_instant)


class DatasetConfig(_Frozen):
    """Snapshot dates and the time split of the training set."""

    first_as_of: str | None = Field(
        default=None, description="Default: data start + the longest feature window (90 days)."
    )
    last_as_of: str | None = Field(default=None, description="Default: the latest fully-labeled date.")
    _dates = field_validator("first_as_of", "last_as_of")(_instant)
    frequency_days: int = Field(default=30, ge=1, le=366)
    validation_dates: int = Field(default=2, ge=1)
    test_dates: int = Field(default=2, ge=1)
    gap_days: int | None = Field(
        default=None,
        ge=0,
        description="Gap between splits so label windows never overlap; default: the horizon.",
    )


class TrainConfig(_Frozen):
    """LightGBM training, calibration and evaluation."""

    model_spec: str = "models/pes.yaml"
    random_state: int = 7
    calibration: Literal["platt", "isotonic", "auto"] = "platt"
    bootstrap_rounds: int = Field(default=200, ge=10)
    min_positives: int = Field(
        default=20, ge=1, description="An outcome with fewer positives in train or validation is skipped."
    )
    outcomes: list[Outcome] = Field(default_factory=lambda: list(OUTCOMES))
    segment_columns: list[str] = Field(
        default_factory=lambda: ["plan", "size_band", "tenure_band"],
        description="Per-segment metrics; size_band and tenure_band are derived from seats and tenure.",
    )
    size_feature: str = "seats"
    tenure_feature: str = "tenure_days"


class TrackingConfig(_Frozen):
    tracking_uri: str = "sqlite:///mlflow.db"
    artifact_location: str = "mlartifacts"
    experiment: str = "pes_ml"
    model_name: str = "pes"
    model_card_dir: str = Field(default="models", description="Model cards go to <dir>/<model_name>/.")
    log_plots: bool = True


class PromotionConfig(_Frozen):
    metric: Literal["roc_auc", "pr_auc", "log_loss", "brier"] = "roc_auc"
    outcome: Literal["churn", "expansion", "conversion"] = "churn"
    min_improvement: float = Field(default=0.0, ge=0.0)
    max_ece: float = Field(default=0.05, gt=0.0)
    max_ece_increase: float = Field(default=0.01, ge=0.0)


class RuleCondition(_Frozen):
    """One signal of a rule score: ``feature op value``."""

    feature: str
    op: Literal[">", ">=", "<", "<=", "==", "!="] = ">="
    value: float | str


class WeightedRule(RuleCondition):
    """Points added when the condition holds (negative points subtract)."""

    points: float


class RuleScore(_Frozen):
    """A rule-based health score as CS teams write it in Gainsight or ChurnZero.

    ``binary``: the account is engaged when all (``require: all``) or any of the
    criteria hold. ``points``: the score is the sum of the points of the rules that hold.
    Higher is healthier.
    """

    name: str
    kind: Literal["binary", "points"]
    require: Literal["all", "any"] = "all"
    criteria: list[RuleCondition] = Field(default_factory=list)
    rules: list[WeightedRule] = Field(default_factory=list)


class BaselinesConfig(_Frozen):
    """Baselines evaluated on the same split as the model."""

    classic_pes: bool = True
    days_since_last_event: bool = True
    logistic_regression: bool = True
    logistic_c: float = Field(default=1.0, gt=0.0)
    rule_scores: list[RuleScore] = Field(default_factory=list)


class ScoreConfig(_Frozen):
    """Batch scoring: reasons per account, drift thresholds, tiers, and the chunk size."""

    top_reasons: int = Field(default=3, ge=1, le=20)
    chunk_accounts: int = Field(
        default=100_000,
        ge=1,
        description=(
            "Accounts per scoring chunk: SHAP values, reasons and the long SHAP table are built and "
            "streamed to the run store one chunk at a time, so memory is bounded by this, not by the "
            "number of accounts (57 features, 1M accounts, 100,000 per chunk: peak RSS ~4.6 GiB, "
            "~6.1 GiB with change attribution; smaller chunks shrink the per-chunk share)."
        ),
    )
    psi_warn: float = Field(default=0.1, ge=0.0)
    psi_error: float = Field(default=0.25, ge=0.0, description="At least psi_warn.")
    at_risk_churn_probability: float | None = None
    expand_probability: float | None = None

    @field_validator("psi_error")
    @classmethod
    def _error_not_below_warn(cls, value: float, info: ValidationInfo) -> float:
        warn = info.data.get("psi_warn")
        if warn is not None and value < warn:
            raise ValueError(f"must be at least score.psi_warn ({warn}), the drift that only warns")
        return value


class StoreConfig(_Frozen):
    """The run store: where scoring runs are kept, and how long a second job waits for the lock."""

    path: str | None = Field(default=None, description="Run store folder; default: <work_dir>/runs.")
    lock_timeout_seconds: float = Field(
        default=0.0, ge=0.0, description="Wait this long for a busy as_of lock; 0 fails at once."
    )


class PesConfig(_Frozen):
    """The whole configuration of a pes_ml project."""

    work_dir: str = Field(default=".pes_ml", description="Clean tables, quarantine and run store.")
    engine: Literal["duckdb", "spark"] = "duckdb"
    spark_master: str = "local[*]"
    duckdb_memory_limit: str | None = Field(
        default=None,
        pattern=r"(?i)^\s*\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$",
        description="Memory DuckDB may use in ingest and features, e.g. '2GB'; beyond it, it spills to "
        "<work_dir>/.spill. Default: DuckDB's own (80% of RAM).",
    )
    entity: Literal["account", "user"] = "account"
    sources: SourcesConfig
    validation: ValidationConfig = ValidationConfig()
    features: FeatureConfig = FeatureConfig()
    labels: LabelConfig = LabelConfig()
    dataset: DatasetConfig = DatasetConfig()
    train: TrainConfig = TrainConfig()
    tracking: TrackingConfig = TrackingConfig()
    promotion: PromotionConfig = PromotionConfig()
    baselines: BaselinesConfig = BaselinesConfig()
    score: ScoreConfig = ScoreConfig()
    store: StoreConfig = StoreConfig()

    def with_tracking_uri(self, tracking_uri: str | None) -> PesConfig:
        """This config with ``tracking.tracking_uri`` replaced (e.g. by ``MLFLOW_TRACKING_URI``).

        An empty or missing URI leaves the config unchanged.
        """
        if not tracking_uri:
            return self
        tracking = self.tracking.model_copy(update={"tracking_uri": tracking_uri})
        return self.model_copy(update={"tracking": tracking})

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
        is_model = isinstance(current, type) and issubclass(current, BaseModel)
        field = current.model_fields.get(part) if is_model else None
        if field is None:
            return ""
        annotation = field.annotation
        candidates = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)]
        models = [a for a in candidates if issubclass(a, BaseModel)]
        if not models:
            return ""
        current = models[0]
    keys = list(current.model_fields) if isinstance(current, type) and issubclass(current, BaseModel) else []
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
        one_line = " ".join(str(exc).split())
        raise ConfigError(f"Config file {str(path)!r} is not valid YAML: {one_line}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"Config file {str(path)!r} must hold a mapping at the top level.")
    local = path.parent.parent / "local" / path.name
    if path.parent.name == "base" and local.is_file():
        overlay = yaml.safe_load(local.read_text(encoding="utf-8")) or {}
        raw = _deep_merge(raw, overlay)
    return parse_config(raw, source=str(path))
