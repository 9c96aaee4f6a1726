"""Batch scoring at an as_of: every present account gets its scores, reasons and change.

One scoring run::

    lock(as_of) -> champion model -> ingest -> features(as_of) -> safety checks
      -> probabilities, PES, tiers -> exact SHAP (both models) -> reasons
      -> change since the previous run -> run store (atomic commit)

Fault injection: each step calls ``_stage(name)`` (names in :data:`FAULT_STAGES`), a
no-op unless a test seam is installed — the CLI installs one when ``PES_FAULT_STAGE``
is set (see ``pes_ml.cli``), and the reliability tests SIGKILL the job there.

Safety checks happen before anything is written: the feature columns must match
the model's signature, drift (PSI per feature and of the score) above the error
threshold stops the run unless ``allow_drift``, unseen categories are reported,
and zero accounts is an error rather than an empty success. The as_of lock is
held for the whole run, so a second job for the same as_of stops before it
spends any compute.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pes_ml import explain
from pes_ml import schemas as S
from pes_ml.config import PesConfig
from pes_ml.drift import DriftReport, check_drift
from pes_ml.errors import DataContractError, DriftError
from pes_ml.locking import run_lock
from pes_ml.model import PROBABILITY_COLUMNS, PesModel, assign_tiers
from pes_ml.progress import NoProgress, Progress
from pes_ml.store import RunStore

logger = logging.getLogger(__name__)

SCORE_REFERENCE = "__pes__"
"""Key of the score's own training distribution in the model's references."""
CLASSIC_PES_COLUMNS = (
    "adoption",
    "stickiness",
    "growth",
    "adoption_percentile",
    "stickiness_percentile",
    "growth_percentile",
    "classic_pes",
)
ACCOUNT_ATTRIBUTES = (S.NAME, S.SEGMENT, S.PLAN)
SCORE_MODELS: tuple[explain.Model, ...] = ("churn", "expansion")

FAULT_STAGES = (
    "locked",
    "model_loaded",
    "ingested",
    "features_started",
    "features_built",
    "signature_checked",
    "churn_started",
    "churn_scored",
    "expansion_started",
    "expansion_scored",
    "reasons_ranked",
    "drift_checked",
    "change_attributed",
)
"""The named points of a scoring run where a test seam may pause it (the store adds its own)."""

# A test seam, like pes_ml.store._stage_hook: called with each stage name; None in production.
_stage_hook: Callable[[str], None] | None = None


def _stage(name: str) -> None:
    if _stage_hook is not None:
        _stage_hook(name)


@dataclass(frozen=True)
class ScoreRun:
    """What one scoring run committed to the run store."""

    run_id: str
    as_of: str
    scores: pd.DataFrame
    reasons: pd.DataFrame
    manifest: dict[str, Any]
    drift: DriftReport


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, step: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[step] = round(time.perf_counter() - start, 3)


def check_feature_signature(features: pd.DataFrame, model: PesModel, model_version: str) -> None:
    """The FeatureFrame must hold every feature the model was trained on, with a compatible dtype.

    Raises
    ------
    DataContractError
        Naming the missing features (and the extra ones, for context) and the model version.
    """
    expected = model.encoder.feature_names
    missing = [name for name in expected if name not in features.columns]
    if missing:
        extra = sorted(set(features.columns) - set(expected) - {S.ACCOUNT_ID, S.AS_OF})
        raise DataContractError(
            f"The features built at scoring do not match model version {model_version}: "
            f"missing {missing}; not used by the model: {extra[:20]}. The feature catalog changed "
            "since this model was trained: retrain (`pes-ml train`) and promote, or score with the "
            "pes_ml version that trained it."
        )
    wrong = []
    for name in model.encoder.categorical_features:
        if pd.api.types.is_numeric_dtype(features[name]) and not features[name].isna().all():
            wrong.append(f"{name} (expected text categories, got {features[name].dtype})")
    for name in set(expected) - set(model.encoder.categorical_features):
        column = features[name]
        if not (pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)):
            wrong.append(f"{name} (expected a number, got {column.dtype})")
    if wrong:
        raise DataContractError(
            f"Feature types do not match model version {model_version}: {'; '.join(wrong)}. "
            "Retrain the model on the current feature catalog."
        )


def _with_model_vocabulary(config: PesConfig, model: PesModel) -> PesConfig:
    """The config with the event types and core events the model was trained on.

    Both are learned from data at training time; scoring with a vocabulary learned
    from today's data would build different columns (train/serve skew).
    """
    frozen = {
        key: model.metadata[key]
        for key in ("event_types", "core_events")
        if model.metadata.get(key) is not None
    }
    if not frozen:
        return config
    return config.model_copy(update={"features": config.features.model_copy(update=frozen)})


INGEST_LOCK_TIMEOUT_SECONDS = 3600.0


def _work_dir_lock(config: PesConfig) -> AbstractContextManager[Path]:
    """Serialise ingest + feature reads of jobs sharing ``work_dir``.

    ``ingest`` rebuilds ``<work_dir>/.staging`` and republishes ``<work_dir>/clean``; two
    scoring jobs for different as_of dates (which may run at once) would otherwise
    delete each other's staging files. Held for seconds, so the other job waits.
    """
    lock = Path(config.work_dir) / ".locks" / "ingest.lock"
    return run_lock(lock, f"an ingest into {config.work_dir}", timeout=INGEST_LOCK_TIMEOUT_SECONDS)


def _fingerprint(config: PesConfig) -> dict[str, str]:
    from pes_ml.ingest import clean_paths

    prints = {}
    for table, path in clean_paths(config).items():
        if path.exists():
            stat = path.stat()
            prints[table] = hashlib.sha256(f"{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return prints


def account_names(config: PesConfig) -> pd.Series | None:
    """Display names by account_id from the clean accounts table, when it has a name column."""
    import pyarrow.parquet as pq

    from pes_ml.ingest import clean_paths

    path = clean_paths(config)["accounts"]
    if not path.is_file() or S.NAME not in pq.read_schema(path).names:
        return None
    accounts = pd.read_parquet(path, columns=[S.ACCOUNT_ID, S.NAME])
    return accounts.drop_duplicates(S.ACCOUNT_ID).set_index(S.ACCOUNT_ID)[S.NAME]


def _arr(features: pd.DataFrame) -> pd.Series:
    if S.MRR in features.columns:
        return pd.to_numeric(features[S.MRR], errors="coerce") * 12.0
    return pd.Series(np.nan, index=features.index)


def score_features(
    features: pd.DataFrame,
    model: PesModel,
    *,
    model_name: str,
    model_version: str,
    run_id: str,
    top_reasons: int = 3,
    names: pd.Series | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scores and the long SHAP table for a FeatureFrame (pure: no I/O).

    Returns
    -------
    scores, reasons
        ``scores``: one row per account (probabilities, PES, expansion score, tier, classic PES,
        reason_1..k of the churn model, model name/version, run id). ``reasons``: the long table
        of :func:`pes_ml.explain.long_format` for both models, with the model version.
    names
        Account display names by account_id (from the accounts table), for CS-facing outputs.
    """
    matrix = model.encoder.transform(features)
    specs = model.specs()
    keyed = features.reset_index(drop=True)
    scores = keyed[[S.ACCOUNT_ID, S.AS_OF]].copy()
    longs = []
    for outcome in SCORE_MODELS:
        calibrated = model.outcomes.get(outcome)
        if calibrated is None:
            scores[PROBABILITY_COLUMNS[outcome]] = np.nan
            continue
        _stage(f"{outcome}_started")
        result = explain.shap_values(calibrated.booster, matrix)
        scores[PROBABILITY_COLUMNS[outcome]] = calibrated.probability(result.raw_score)
        column = S.PES if outcome == "churn" else S.EXPANSION_SCORE
        scores[column] = calibrated.points(result.raw_score)
        longs.append(
            explain.long_format(result, keyed, model=outcome, specs=specs, platt_slope=calibrated.platt_slope)
        )
        _stage(f"{outcome}_scored")
    for column in (S.PES, S.EXPANSION_SCORE):
        if column not in scores:
            scores[column] = np.nan
    scores[S.TIER] = assign_tiers(
        scores[S.CHURN_PROBABILITY], scores[S.EXPANSION_PROBABILITY], model.tier_thresholds
    )
    for column in (*CLASSIC_PES_COLUMNS, *ACCOUNT_ATTRIBUTES):
        if column in keyed.columns:
            scores[column] = keyed[column]
    scores["arr"] = _arr(keyed)
    if names is not None:
        scores[S.NAME] = scores[S.ACCOUNT_ID].map(names).fillna(scores[S.ACCOUNT_ID]).astype("str")
    reasons = pd.concat(longs, ignore_index=True) if longs else pd.DataFrame(columns=explain.LONG_COLUMNS)
    reasons[S.MODEL_VERSION] = model_version
    if "churn" in model.outcomes:
        top = explain.top_reasons(reasons[reasons[explain.MODEL] == "churn"], specs, top_reasons)
        wide = top.pivot(index=S.ACCOUNT_ID, columns=explain.REASON_RANK, values=explain.SENTENCE)
        for rank in range(1, top_reasons + 1):
            column = wide[rank] if rank in wide.columns else pd.Series(dtype="str")
            scores[f"reason_{rank}"] = scores[S.ACCOUNT_ID].map(column).fillna("").astype("str")
        _stage("reasons_ranked")
    scores[S.MODEL_NAME] = model_name
    scores[S.MODEL_VERSION] = model_version
    scores[S.RUN_ID] = run_id
    return scores, reasons


def _scorer(config: PesConfig) -> Callable[..., tuple[pd.DataFrame, pd.DataFrame]]:
    """:func:`score_features` in process, or the same function run as a Spark job (``engine: spark``)."""
    if config.engine != "spark":
        return score_features
    from pes_ml.score_spark import score_features_spark

    scratch = Path(config.work_dir) / ".staging"
    scratch.mkdir(parents=True, exist_ok=True)
    return functools.partial(score_features_spark, master=config.spark_master, scratch_dir=scratch)


def _add_change(
    scores: pd.DataFrame, reasons: pd.DataFrame, store: RunStore, as_of: str, specs: dict[str, Any]
) -> dict[str, Any] | None:
    previous = store.previous_run(as_of)
    if previous is None:
        scores["pes_delta"] = np.nan
        scores["what_changed"] = ""
        return None
    before = store.read_reasons(previous.run_id)
    change = explain.attribute_change(
        before[before[explain.MODEL] == "churn"], reasons[reasons[explain.MODEL] == "churn"], specs
    )
    accounts = change.accounts.set_index(S.ACCOUNT_ID)
    scores["pes_delta"] = scores[S.ACCOUNT_ID].map(accounts["pes_delta"])
    scores["what_changed"] = scores[S.ACCOUNT_ID].map(accounts["sentence"]).fillna("").astype("str")
    return {"previous_run_id": previous.run_id, "previous_as_of": str(previous.as_of)}


def score_accounts(
    config: PesConfig,
    as_of: str,
    *,
    alias: str = "champion",
    version: str | None = None,
    allow_drift: bool = False,
    progress: Progress | None = None,
) -> ScoreRun:
    """Score every account present at ``as_of`` with the registered model and commit the run.

    Parameters
    ----------
    config
        The project config (sources, tracking, store, score thresholds).
    as_of
        The cutoff date: features see events strictly before it.
    alias, version
        Which registered model version to use (default ``@champion``).
    allow_drift
        Score even when a feature's PSI is above ``score.psi_error``.
    progress
        Progress reporter (the CLI passes a progress bar).

    Raises
    ------
    RunInProgressError
        If another job is scoring the same as_of.
    ModelNotFoundError
        If the alias or version does not exist.
    DataContractError
        If there is no account to score, or the features do not match the model.
    DriftError
        If drift is above the error threshold and ``allow_drift`` is False.
    """
    from pes_ml.features import build_features
    from pes_ml.ingest import ingest
    from pes_ml.registry import load_pes_model, version_metrics
    from pes_ml.run_contract import as_of_key, new_run_id

    progress = progress or NoProgress()
    store = RunStore.from_config(config)
    key = as_of_key(as_of)
    timer = _Timer()
    with store.lock(key, timeout=config.store.lock_timeout_seconds):
        _stage("locked")
        # The model first: an unreachable registry or a missing alias fails before any compute.
        with timer("load_model"):
            model, model_version = load_pes_model(config, alias=alias, version=version)
        _stage("model_loaded")
        # Jobs for other as_of dates share <work_dir>/clean: one ingest (and read of it) at a time.
        with _work_dir_lock(config):
            with timer("ingest"):
                recon = ingest(config, progress=progress)
            _stage("ingested")
            _stage("features_started")
            with timer("features"):
                features = build_features(_with_model_vocabulary(config, model), [key], progress=progress)
        _stage("features_built")
        if features.empty:
            raise DataContractError(
                f"No account is active at as_of {key}: nothing to score. Check the as_of date against "
                "the data's time range (`pes-ml validate` prints it) and that subscriptions are loaded."
            )
        check_feature_signature(features, model, model_version)
        _stage("signature_checked")
        run_id = new_run_id()
        progress.start(f"Scoring {len(features):,} accounts", total=None)
        with timer("predict_and_shap"):
            scores, reasons = _scorer(config)(
                features,
                model,
                model_name=config.tracking.model_name,
                model_version=model_version,
                run_id=run_id,
                top_reasons=config.score.top_reasons,
                names=account_names(config),
            )
        drift_frame = features.assign(**{SCORE_REFERENCE: scores[S.PES].to_numpy()})
        drift = check_drift(
            drift_frame,
            model.reference,
            warn_threshold=config.score.psi_warn,
            error_threshold=config.score.psi_error,
            unseen_categories=model.encoder.unseen_levels(features),
            # Account age moves forward between training and scoring by construction.
            warn_only=frozenset(n for n, spec in model.specs().items() if spec.group == "tenure"),
        )
        if drift.errors and not allow_drift:
            worst = sorted(drift.errors.items(), key=lambda item: -item[1])[:5]
            listed = ", ".join(f"{name} (PSI {value:.2f})" for name, value in worst)
            raise DriftError(
                f"Scoring data at as_of {key} drifted from model version {model_version}'s training data "
                f"above PSI {config.score.psi_error}: {listed}. Nothing was written. Check the inputs "
                "(a changed export or column mapping?), retrain, or rerun with --allow-drift."
            )
        _stage("drift_checked")
        change = _add_change(scores, reasons, store, key, model.specs())
        _stage("change_attributed")
        manifest = {
            "as_of": key,
            "model": {"name": config.tracking.model_name, "version": model_version, "alias": alias},
            "model_metadata": model.metadata,
            "metrics": version_metrics(config, model_version),
            "feature_catalog_version": model.metadata.get("catalog_version"),
            "input_fingerprints": _fingerprint(config),
            "reconciliation": recon.to_dict(),
            "drift": drift.to_dict(),
            "change": change,
            "tier_thresholds": model.tier_thresholds,
            "timings_seconds": timer.seconds,
            "counts": {"accounts": len(scores), "reason_rows": len(reasons)},
        }
        with timer("write"):
            committed = store.write_run(key, scores, reasons, manifest, run_id=run_id)
    logger.info("Scored %d accounts at as_of %s as run %s (%s)", len(scores), key, committed, timer.seconds)
    return ScoreRun(committed, key, scores, reasons, manifest, drift)
