"""The train stage end to end: clean tables -> snapshots -> models -> MLflow run -> @challenger.

``pes-ml train`` and ``pipelines/train.py`` call :func:`run_training`; each step
is a function of its own module, so this file only wires them together.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb
import pandas as pd

from pes_ml.config import PesConfig
from pes_ml.dataset import as_of_schedule, fingerprint, join_snapshots, split_by_time
from pes_ml.errors import DataContractError
from pes_ml.ingest.load import unreadable_clean_table
from pes_ml.instants import to_utc
from pes_ml.labels import make_labels
from pes_ml.progress import NoProgress, Progress
from pes_ml.schemas import AS_OF, START, TIMESTAMP
from pes_ml.train import TrainingResult, train_models

logger = logging.getLogger(__name__)

REFERENCE_DAYS = 7
"""The drift reference: the features at each of the last 7 days of data, pooled (see run_training)."""


@dataclass(frozen=True)
class TrainingOutcome:
    """What a training job produced."""

    run_id: str
    model_name: str
    version: str
    result: TrainingResult


def _time_range(path: Path, column: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        # epoch microseconds: fetching TIMESTAMPTZ values would need pytz
        query = f"SELECT epoch_us(min({column})), epoch_us(max({column})) FROM read_parquet(?)"
        try:
            low, high = con.execute(query, [str(path)]).fetchone()  # type: ignore[misc]
        except duckdb.Error as exc:
            raise unreadable_clean_table(path.stem, path, exc) from exc
    finally:
        con.close()
    if low is None:
        raise DataContractError(f"{path} has no rows with a {column}; nothing to train on.")
    return pd.Timestamp(low, unit="us", tz="UTC"), pd.Timestamp(high, unit="us", tz="UTC")


def data_window(config: PesConfig, paths: dict[str, Path]) -> tuple[pd.Timestamp, pd.Timestamp]:
    """(first observed instant, exclusive end of data): labels.data_end, else the day after the last event."""
    start, last = _time_range(paths["events"], TIMESTAMP)
    if paths["subscriptions"].is_file():
        sub_start, sub_last = _time_range(paths["subscriptions"], START)
        start, last = min(start, sub_start), max(last, sub_last)
    end = to_utc(config.labels.data_end) if config.labels.data_end else last.floor("D") + pd.Timedelta(days=1)
    return start, end


def run_training(
    config: PesConfig, progress: Progress | None = None, *, run_name: str | None = None
) -> TrainingOutcome:
    """Build point-in-time snapshots, train and evaluate, log to MLflow and register as @challenger.

    Parameters
    ----------
    config
        The project config. Clean tables are read from ``work_dir``; ingest runs first
        when they are missing.
    progress
        Progress reporter (the CLI draws a bar).
    run_name
        Optional MLflow run name.

    Returns
    -------
    TrainingOutcome

    Raises
    ------
    DataContractError
        If the data covers too little time for the horizon and the split.
    ConfigError
        If the churn model cannot be trained.
    """
    from pes_ml.features import CATALOG_VERSION, build_features, feature_specs, model_feature_names
    from pes_ml.ingest import clean_paths, ingest, ingest_needed, work_dir_lock
    from pes_ml.registry import register
    from pes_ml.tracking import log_training_run

    progress = progress or NoProgress()
    # Another job's ingest must not republish the clean tables while they are read here.
    with work_dir_lock(config):
        paths = clean_paths(config)
        why = ingest_needed(config)
        if why:
            logger.info("Ingesting first: %s.", why)
            ingest(config)
        start, end = data_window(config, paths)
        dates = as_of_schedule(config.dataset, start, end, config.labels.horizon_days)
        logger.info(
            "data %s .. %s; %d as_of dates %s .. %s",
            start, end, len(dates), dates[0].date(), dates[-1].date(),
        )
        progress.start("labels", total=None)
        subscriptions = pd.read_parquet(paths["subscriptions"]) if paths["subscriptions"].is_file() else None
        events = None
        if subscriptions is None or config.labels.mode == "activity":
            events = pd.read_parquet(paths["events"], columns=["account_id", TIMESTAMP])
        labels = make_labels(config.labels, dates, subscriptions=subscriptions, events=events, data_end=end)
        # One pass also computes the features of the last week of data: unlabeled, never trained on,
        # but the population the next scoring runs see, so they are the drift reference. A week, one
        # date per weekday: activity features swing between weekdays and weekends (on a quiet
        # weekend most accounts read "1 day since the last event" on Sunday), and a reference of
        # a single weekday flagged drift for a scoring run on another.
        reference_dates = [end.normalize() - pd.Timedelta(days=k) for k in range(REFERENCE_DAYS)]
        with_reference = build_features(config, sorted({*dates, *reference_dates}), progress)
        as_of = with_reference[AS_OF]
        features = with_reference[as_of.isin(dates)].reset_index(drop=True)
        features.attrs = with_reference.attrs
        reference_features = with_reference[as_of.isin(reference_dates)].reset_index(drop=True)
    snapshots = join_snapshots(features, labels)
    split = split_by_time(snapshots, config.dataset, config.labels.horizon_days)
    names = model_feature_names(features)
    specs = feature_specs(features)
    metadata = {
        "data_end": end.isoformat(),
        "catalog_version": CATALOG_VERSION,
        "data_fingerprint": fingerprint(snapshots),
        "feature_names": names,
        # Scoring must build the same columns: freeze the event-type vocabulary and core events.
        "event_types": list(features.attrs.get("event_types", [])),
        "core_events": list(features.attrs.get("core_events", [])),
        **{
            f"{s}_as_of": ", ".join(d.date().isoformat() for d in split.dates(s))
            for s in ("train", "validation", "test")
        },
        "drift_reference_as_of": ", ".join(d.date().isoformat() for d in sorted(reference_dates)),
    }
    progress.start("train", total=None)
    result = train_models(
        split, names, config, metadata=metadata, specs=specs, reference_features=reference_features
    )
    progress.start("log to MLflow", total=None)
    run_id, uri = log_training_run(
        result,
        config,
        catalog=[asdict(s) for s in specs],
        catalog_version=CATALOG_VERSION,
        data_fingerprint=metadata["data_fingerprint"],
        run_name=run_name,
    )
    version = register(config, uri, run_id)
    return TrainingOutcome(run_id, config.tracking.model_name, version, result)
