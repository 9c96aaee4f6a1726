"""Point-in-time training sets: snapshots at regular as_of dates, split by time.

The split, newest first::

    ... train as_of ...  |gap|  validation as_of  |gap|  test as_of (latest fully labeled)

Test takes the latest ``test_dates`` fully-labeled as_of dates. Validation takes
the latest ``validation_dates`` dates whose label window ``[as_of, as_of + horizon)``
closes on or before the earliest test as_of. Train takes every earlier date
whose label window closes on or before the earliest validation as_of.

The second gap is a decision: validation drives early stopping and fits the
calibration, so a training label window that overlapped it would let one churn
event appear as a label on both sides and make early stopping and calibration
optimistic. The price is one horizon of history; the gain is that validation
metrics mean what test metrics mean.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pes_ml.config import DatasetConfig
from pes_ml.errors import DataContractError
from pes_ml.instants import to_utc
from pes_ml.schemas import ACCOUNT_ID, AS_OF, LABEL_COLUMNS

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
#: The longest look-back window of the feature catalog (90-day counts, 12-week slopes): snapshots
#: earlier than this after the data start would see truncated windows.
LONGEST_FEATURE_WINDOW_DAYS = 90


def as_of_schedule(
    config: DatasetConfig, data_start: object, data_end: object, horizon_days: int
) -> list[pd.Timestamp]:
    """Snapshot dates every ``frequency_days`` whose label window closes by ``data_end``.

    Parameters
    ----------
    config
        ``first_as_of`` (default: data start + the longest feature window, so no feature
        sees a truncated window),
        ``last_as_of`` (default: the latest fully-labeled date) and ``frequency_days``.
    data_start, data_end
        First observed instant and exclusive end of observed data.
    horizon_days
        The label horizon.

    Returns
    -------
    list of pandas.Timestamp
        Sorted UTC midnights, oldest first. The latest is ``data_end - horizon`` or earlier.
    """
    step = pd.Timedelta(days=config.frequency_days)
    end = to_utc(data_end)
    last_labeled = (end - pd.Timedelta(days=horizon_days)).floor("D")
    last = min(to_utc(config.last_as_of), last_labeled) if config.last_as_of else last_labeled
    warmup = pd.Timedelta(days=LONGEST_FEATURE_WINDOW_DAYS)
    first = to_utc(config.first_as_of) if config.first_as_of else to_utc(data_start).ceil("D") + warmup
    if first > last:
        days = (end - to_utc(data_start)) / pd.Timedelta(days=1)
        first_rule = ("is dataset.first_as_of" if config.first_as_of else
                      f"comes {LONGEST_FEATURE_WINDOW_DAYS} days after the data start (full feature windows)")
        last_rule = f"comes {horizon_days} days (the label horizon) before the data end" + (
            " or at dataset.last_as_of" if config.last_as_of else "")
        raise DataContractError(
            f"The data ({to_utc(data_start).date()} .. {end.date()}, {days:.0f} days) is too short to train "
            f"on: the first snapshot date ({first.date()}) {first_rule}, and the last ({last.date()}) "
            f"{last_rule}, so none is left. Use a longer history, shorten labels.horizon_days, or set "
            "dataset.first_as_of earlier (features then see less history)."
        )
    # Anchor on the latest date so the test snapshots sit as close to the data end as possible.
    count = int((last - first) // step)
    return [last - step * i for i in range(count, -1, -1)]


def join_snapshots(features: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Join a FeatureFrame and a LabelFrame on (account_id, as_of).

    The label frame decides the population (accounts eligible at as_of); an
    eligible account without a feature row is a contract break, not a silent drop.

    Raises
    ------
    DataContractError
        If some labeled keys have no features.
    """
    keys = [ACCOUNT_ID, AS_OF]
    left = labels.copy()
    left[AS_OF] = pd.to_datetime(left[AS_OF], utc=True)
    right = features.drop(columns=[c for c in LABEL_COLUMNS if c in features.columns])
    right = right.assign(**{AS_OF: pd.to_datetime(right[AS_OF], utc=True)})
    left[AS_OF] = left[AS_OF].astype(right[AS_OF].dtype)
    left[ACCOUNT_ID] = left[ACCOUNT_ID].astype(str)
    right = right.assign(**{ACCOUNT_ID: right[ACCOUNT_ID].astype(str)})
    snapshots = left.merge(right, on=keys, how="left", indicator=True, validate="one_to_one")
    missing = snapshots["_merge"] == "left_only"
    if missing.any():
        example = snapshots.loc[missing, keys].head(3).to_dict("records")
        raise DataContractError(
            f"{int(missing.sum())} labeled snapshots have no feature row (e.g. {example}). "
            "Build features for every as_of date of the labels."
        )
    logger.info("snapshots: %d labeled keys joined to features", len(snapshots))
    return snapshots.drop(columns="_merge")


@dataclass(frozen=True)
class Split:
    """Snapshots split by as_of date; every frame keeps its unlabeled rows (NaN) for the caller."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    horizon_days: int
    gap_days: int

    def frame(self, name: str) -> pd.DataFrame:
        """The split called ``name`` (train, validation or test)."""
        return {"train": self.train, "validation": self.validation, "test": self.test}[name]

    def dates(self, name: str) -> list[pd.Timestamp]:
        """The sorted as_of dates of one split."""
        return sorted(pd.to_datetime(self.frame(name)[AS_OF].unique(), utc=True))

    def summary(self) -> pd.DataFrame:
        """One row per split: as_of range, snapshot count and base rate per outcome."""
        rows = []
        for name in SPLITS:
            frame = self.frame(name)
            dates = self.dates(name)
            row: dict[str, object] = {
                "split": name,
                "first_as_of": dates[0].date().isoformat() if dates else None,
                "last_as_of": dates[-1].date().isoformat() if dates else None,
                "as_of_dates": len(dates),
                "snapshots": len(frame),
            }
            for outcome in LABEL_COLUMNS:
                if outcome in frame:
                    known = frame[outcome].dropna()
                    row[f"{outcome}_labeled"] = len(known)
                    row[f"{outcome}_rate"] = float(known.mean()) if len(known) else float("nan")
            rows.append(row)
        return pd.DataFrame(rows)


def split_by_time(snapshots: pd.DataFrame, config: DatasetConfig, horizon_days: int) -> Split:
    """Split snapshots into train, validation and test by as_of, with no label-window overlap.

    Parameters
    ----------
    snapshots
        Joined features and labels, keyed by (account_id, as_of).
    config
        ``validation_dates``, ``test_dates`` and ``gap_days`` (default: the horizon).
    horizon_days
        The label horizon; the gap must be at least this long.

    Returns
    -------
    Split

    Raises
    ------
    DataContractError
        If there are too few as_of dates for the three splits and their gaps.
    """
    gap_days = config.gap_days if config.gap_days is not None else horizon_days
    if gap_days < horizon_days:
        raise DataContractError(
            f"The 'gap_days' parameter of DatasetConfig must be >= the horizon ({horizon_days}) so "
            f"label windows never overlap. Got {gap_days} instead."
        )
    gap = pd.Timedelta(days=gap_days)
    as_of = pd.to_datetime(snapshots[AS_OF], utc=True)
    labeled = snapshots[[c for c in LABEL_COLUMNS if c in snapshots]].notna().any(axis=1)
    dates = sorted(as_of[labeled].unique())
    if len(dates) < config.test_dates:
        raise DataContractError(
            f"Need at least {config.test_dates} fully-labeled as_of dates for the test split; "
            f"got {len(dates)}. Extend the history or lower dataset.test_dates."
        )
    test_dates = dates[-config.test_dates :]
    validation_pool = [d for d in dates if d + gap <= test_dates[0]]
    validation_dates = validation_pool[-config.validation_dates :]
    train_dates = [d for d in dates if validation_dates and d + gap <= validation_dates[0]]
    if not validation_dates or not train_dates:
        raise DataContractError(
            f"Too few as_of dates for train, validation and test with a {gap_days}-day gap between "
            f"them: {len(dates)} labeled dates from {pd.Timestamp(dates[0]).date()} to "
            f"{pd.Timestamp(dates[-1]).date()}. Use a longer history, more frequent snapshots "
            "(dataset.frequency_days) or a shorter labels.horizon_days."
        )
    frames = {
        name: snapshots[as_of.isin(chosen) & labeled].reset_index(drop=True)
        for name, chosen in (("train", train_dates), ("validation", validation_dates), ("test", test_dates))
    }
    split = Split(horizon_days=horizon_days, gap_days=gap_days, **frames)
    for row in split.summary().to_dict("records"):
        logger.info("split %s", row)
    return split


def fingerprint(frame: pd.DataFrame) -> str:
    """A short content hash of a frame (values, columns and order), for the training run's record."""
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    digest = hashlib.sha256(hashed.tobytes())
    digest.update(",".join(map(str, frame.columns)).encode())
    return digest.hexdigest()[:16]


def label_window_overlap(
    earlier: Sequence[pd.Timestamp], later: Sequence[pd.Timestamp], horizon_days: int
) -> bool:
    """True when some label window of ``earlier`` dates reaches past the first ``later`` date."""
    if not len(earlier) or not len(later):
        return False
    return bool(np.max(earlier) + pd.Timedelta(days=horizon_days) > np.min(later))
