"""What a scoring run must hold before the run store accepts it: columns, one as_of, one row per account.

The scores frame's columns come from :mod:`pes_ml.schemas`; the long SHAP table's
columns (one row per account, model and feature) are named here. Validation runs
before anything is written, so a bad frame never touches the store.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import pandas as pd

from pes_ml import schemas as S
from pes_ml.errors import DataContractError
from pes_ml.instants import to_utc

# Columns of the long-format SHAP table (one row per account, model and feature).
MODEL = "model"
FEATURE = "feature"
GROUP = "group"
SHAP_LOG_ODDS = "shap_log_odds"
PES_POINTS = "pes_points"

SCORE_REQUIRED: tuple[str, ...] = (
    S.ACCOUNT_ID,
    S.AS_OF,
    S.CHURN_PROBABILITY,
    S.EXPANSION_PROBABILITY,
    S.PES,
    S.EXPANSION_SCORE,
    S.TIER,
    S.MODEL_NAME,
    S.MODEL_VERSION,
)
REASON_REQUIRED: tuple[str, ...] = (
    S.ACCOUNT_ID,
    S.AS_OF,
    MODEL,
    FEATURE,
    GROUP,
    S.VALUE,
    SHAP_LOG_ODDS,
    PES_POINTS,
)


def as_of_key(as_of: str | date | datetime | pd.Timestamp) -> str:
    """Normalise an as_of to the ``YYYY-MM-DD`` key of its store partition.

    Raises
    ------
    DataContractError
        If ``as_of`` is not a date, or is a timestamp with a time of day.
    """
    ts = to_utc(as_of).tz_localize(None)
    if ts != ts.normalize():
        raise DataContractError(f"as_of must be midnight UTC of a date. Got {as_of!r} instead.")
    return str(ts.strftime("%Y-%m-%d"))


def new_run_id() -> str:
    """A new, sortable, unique run id: ``<UTC time>-<8 hex digits>``."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def _check_columns(frame: pd.DataFrame, required: tuple[str, ...], name: str) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataContractError(
            f"The {name} frame is missing required column(s) {', '.join(missing)}. "
            f"Expected at least: {', '.join(required)}. Got: {', '.join(map(str, frame.columns))}."
        )


def _check_as_of(frame: pd.DataFrame, key: str, name: str) -> None:
    if frame.empty:
        return
    distinct = pd.Series(frame[S.AS_OF].unique())  # few values: format those, not every row
    values = pd.to_datetime(distinct, utc=True, errors="coerce").dt.strftime("%Y-%m-%d")
    wrong = sorted({str(v) for v in values.unique() if v != key})
    if wrong:
        raise DataContractError(
            f"The {name} frame holds rows for as_of {', '.join(wrong[:5])}, but the run is for as_of {key}. "
            "Write one run per as_of."
        )


def check_run_id(run_id: str) -> str:
    """A run id is a plain folder name: not empty, no ``/``, not hidden.

    Raises
    ------
    DataContractError
        If it is not.
    """
    if not run_id or "/" in run_id or run_id.startswith("."):
        raise DataContractError(f"A run id must be a plain folder name. Got {run_id!r} instead.")
    return run_id


def _resolve_run_id(scores: pd.DataFrame, run_id: str | None) -> str:
    stamped = scores[S.RUN_ID].dropna().unique() if S.RUN_ID in scores.columns else []
    if len(stamped) > 1 or (run_id is not None and len(stamped) == 1 and stamped[0] != run_id):
        raise DataContractError(
            f"The scores frame is stamped with run id(s) {', '.join(map(str, stamped[:3]))}, "
            f"but the run id is {run_id!r}. Stamp every row with the one run id."
        )
    return check_run_id(run_id or (str(stamped[0]) if len(stamped) == 1 else new_run_id()))


def validate_scores(
    as_of: str | date | datetime | pd.Timestamp, scores: pd.DataFrame, run_id: str | None = None
) -> tuple[str, str]:
    """Check a run's scores (columns, one as_of, one row per account); return its as_of key and run id.

    The run id is ``run_id`` when given, else the scores' ``run_id`` column when it
    holds one value, else a new one.

    Raises
    ------
    DataContractError
        If the scores miss a required column, hold rows of another as_of, repeat an
        account, or are stamped with another run id.
    """
    key = as_of_key(as_of)
    _check_columns(scores, SCORE_REQUIRED, "scores")
    _check_as_of(scores, key, "scores")
    duplicated = scores[S.ACCOUNT_ID].duplicated()
    if duplicated.any():
        examples = ", ".join(map(str, scores.loc[duplicated, S.ACCOUNT_ID].head(3)))
        raise DataContractError(
            f"The scores frame holds {int(duplicated.sum())} repeated account_id(s) (e.g. {examples}); "
            "expected one row per account."
        )
    return key, _resolve_run_id(scores, run_id)


def validate_reasons(as_of: str | date | datetime | pd.Timestamp, reasons: pd.DataFrame) -> str:
    """Check (a chunk of) a run's long SHAP table: columns and one as_of; return the as_of key.

    Raises
    ------
    DataContractError
        If the frame misses a required column or holds rows of another as_of.
    """
    key = as_of_key(as_of)
    _check_columns(reasons, REASON_REQUIRED, "reasons")
    _check_as_of(reasons, key, "reasons")
    return key


def validate_run(
    as_of: str | date | datetime | pd.Timestamp,
    scores: pd.DataFrame,
    reasons: pd.DataFrame,
    run_id: str | None = None,
) -> tuple[str, str]:
    """Check a run's frames; return its as_of key and run id.

    The run id is ``run_id`` when given, else the scores' ``run_id`` column when it
    holds one value, else a new one.

    Raises
    ------
    DataContractError
        If a frame misses a required column, holds rows of another as_of, repeats an
        account, or is stamped with another run id.
    """
    _check_columns(scores, SCORE_REQUIRED, "scores")
    validate_reasons(as_of, reasons)
    return validate_scores(as_of, scores, run_id)


__all__ = [
    "FEATURE",
    "GROUP",
    "MODEL",
    "PES_POINTS",
    "REASON_REQUIRED",
    "SCORE_REQUIRED",
    "SHAP_LOG_ODDS",
    "as_of_key",
    "check_run_id",
    "new_run_id",
    "validate_reasons",
    "validate_run",
    "validate_scores",
]
