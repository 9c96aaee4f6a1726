"""Batch scoring at an as_of: every present account gets its scores, reasons and change.

One scoring run::

    lock(as_of) -> champion model -> ingest -> features(as_of) -> signature check
      -> PES of every account (raw predictions, no SHAP) -> drift check
      -> for each chunk of ``score.chunk_accounts`` accounts:
           probabilities, PES, tiers, exact SHAP (both models), reasons,
           change since the previous run (that run's reasons of these accounts only)
           -> the chunk's long SHAP table streamed into the run's staging folder
      -> scores of all accounts + manifest -> run store commit (atomic)

Memory is bounded by the chunk size, not the number of accounts: the FeatureFrame and
the scores (one row per account) are held whole, the long SHAP table (accounts x
features x 2 models rows) only one chunk at a time. Every output of
:func:`score_features` depends on its own account only, so the chunks give the same
scores, reasons and changes as one pass.

Fault injection: each step calls ``_stage(name)`` (names in :data:`FAULT_STAGES`), a
no-op unless a test seam is installed — the CLI installs one when ``PES_FAULT_STAGE``
is set (see ``pes_ml.cli``), and the reliability tests SIGKILL the job there.

Safety checks happen before anything is written: the feature columns must match
the model's signature, drift (PSI per feature and of the score) above the error
threshold stops the run unless ``allow_drift``, unseen categories are reported,
and zero accounts is an error rather than an empty success. Drift is checked on all
accounts *before* SHAP: it needs only the features and the PES, which raw predictions
give in a few seconds (the same ``booster.predict(raw_score=True)`` that SHAP's
additivity check uses), so a drifted run fails before the expensive part and before
the store is touched (not even a staging folder). The as_of lock is held for the
whole run, so a second job for the same as_of stops before it spends any compute.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pes_ml import explain
from pes_ml import schemas as S
from pes_ml.config import PesConfig
from pes_ml.drift import DriftReport, check_drift
from pes_ml.errors import DataContractError, DriftError, StoreError
from pes_ml.features.catalog import CATALOG_VERSION
from pes_ml.model import PROBABILITY_COLUMNS, PesModel, assign_tiers
from pes_ml.progress import NoProgress, Progress
from pes_ml.store import ReasonReader, RunStore, RunWriter

logger = logging.getLogger(__name__)
AFTER_DATA_DAYS = 7
"""When no account has an event in this many days before as_of, a drift error says the as_of may lie
after the end of the data (every activity feature then reads "inactive")."""

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
"""The named points of a scoring run where a test seam may pause it (the store adds its own).

In run order: ``drift_checked`` comes right after ``signature_checked``; the SHAP stages
(``churn_started`` ... ``reasons_ranked``) repeat for every chunk; ``change_attributed``
is reached once every chunk is scored and staged, just before the commit."""

# A test seam, like pes_ml.store._stage_hook: called with each stage name; None in production.
_stage_hook: Callable[[str], None] | None = None


def _stage(name: str) -> None:
    if _stage_hook is not None:
        _stage_hook(name)


@dataclass(frozen=True)
class ScoreRun:
    """What one scoring run committed to the run store.

    The long SHAP table is not held in memory (it is accounts x features x 2 models rows):
    :attr:`reasons` reads it back from the store.
    """

    run_id: str
    as_of: str
    scores: pd.DataFrame
    manifest: dict[str, Any]
    drift: DriftReport
    store: RunStore

    @property
    def reasons(self) -> pd.DataFrame:
        """The run's long SHAP table, read from the run store (while the run is committed)."""
        return self.store.read_reasons(self.run_id)


class _Timer:
    """Seconds per step; a step timed several times (once per chunk) adds up."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, step: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[step] = round(self.seconds.get(step, 0.0) + time.perf_counter() - start, 3)


def check_catalog_version(model: PesModel, model_version: str) -> bool:
    """Whether the model was trained on the feature catalog this pes_ml computes; warns when not.

    A different catalog version means some feature definition changed since training:
    the columns may still match (so the signature check passes) while their meaning moved.
    Scoring goes on — the manifest records both versions — but the model should be retrained.
    """
    trained = model.metadata.get("catalog_version")
    if trained is None or trained == CATALOG_VERSION:
        return True
    logger.warning(
        "Model version %s was trained on feature catalog %s, but this pes_ml computes catalog %s: some "
        "feature definitions changed since training. Retrain (`pes-ml train`) and promote to score with "
        "matching features.", model_version, trained, CATALOG_VERSION,
    )
    return False


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
    scores: pd.DataFrame, reasons: pd.DataFrame, previous: ReasonReader | None, specs: dict[str, Any]
) -> None:
    """Fill ``pes_delta`` and ``what_changed`` of a chunk's scores from the previous run.

    Reads only the previous run's churn reasons of the chunk's accounts, so the previous
    long table is never loaded whole.
    """
    scores["pes_delta"] = np.nan
    scores["what_changed"] = ""
    if previous is None:
        return
    before = previous.read(accounts=scores[S.ACCOUNT_ID].tolist(), model="churn")
    if before.empty:  # none of these accounts was scored by the previous run
        return
    change = explain.attribute_change(before, reasons[reasons[explain.MODEL] == "churn"], specs)
    accounts = change.accounts.set_index(S.ACCOUNT_ID)
    scores["pes_delta"] = scores[S.ACCOUNT_ID].map(accounts["pes_delta"]).astype("float64")
    scores["what_changed"] = scores[S.ACCOUNT_ID].map(accounts["sentence"]).fillna("").astype("str")


def _previous_reasons(store: RunStore, as_of: str) -> ReasonReader | None:
    """The reasons of the latest committed run before ``as_of``, opened (pinned) for the whole run."""
    for _attempt in range(3):
        previous = store.previous_run(as_of)
        if previous is None:
            return None
        try:
            return store.open_reasons(previous.run_id)
        except StoreError:
            after = store.previous_run(as_of)
            if after is not None and after.run_id == previous.run_id:
                raise  # not replaced meanwhile: a real read error
    raise StoreError(f"The run before as_of {as_of} keeps being replaced; rerun when its backfill ends.")


def predicted_pes(features: pd.DataFrame, model: PesModel, chunk_accounts: int) -> np.ndarray:
    """The PES of every account from raw predictions (no SHAP), a chunk at a time; NaN without a churn model.

    The same raw log-odds as :func:`pes_ml.explain.shap_values` returns (both call
    ``booster.predict(raw_score=True)``), hence the same PES as :func:`score_features`.
    """
    churn = model.outcomes.get("churn")
    if churn is None:
        return np.full(len(features), np.nan)
    parts = [
        churn.points(churn.raw(model.encoder.transform(features.iloc[start : start + chunk_accounts])))
        for start in range(0, len(features), chunk_accounts)
    ]
    return np.concatenate(parts) if parts else np.empty(0)


def score_chunks(
    features: pd.DataFrame,
    model: PesModel,
    run: RunWriter,
    *,
    model_name: str,
    model_version: str,
    chunk_accounts: int,
    top_reasons: int = 3,
    names: pd.Series | None = None,
    previous: ReasonReader | None = None,
    scorer: Callable[..., tuple[pd.DataFrame, pd.DataFrame]] = score_features,
    progress: Progress | None = None,
    timer: Callable[[str], AbstractContextManager[None]] | None = None,
) -> pd.DataFrame:
    """Score a FeatureFrame ``chunk_accounts`` accounts at a time, streaming the long SHAP table into ``run``.

    For each chunk: :func:`score_features` (or ``scorer``), the change since ``previous``
    (that run's churn reasons of the chunk's accounts only), then
    :meth:`~pes_ml.store.RunWriter.add_reasons`. Only one chunk's long table is in memory
    at a time; the scores of all accounts are returned for the caller to commit.

    Parameters
    ----------
    features
        The FeatureFrame at one as_of (one row per account).
    model
        The registered model.
    run
        The run being written (:meth:`pes_ml.store.RunStore.begin_run`); not committed here.
    model_name, model_version, top_reasons, names
        As for :func:`score_features`; the run id is ``run.run_id``.
    chunk_accounts
        Accounts per chunk (``score.chunk_accounts``).
    previous
        The reasons of the previous committed run (:meth:`~pes_ml.store.RunStore.open_reasons`),
        for ``pes_delta`` and ``what_changed``; None: no change to attribute.
    scorer
        :func:`score_features`, or the Spark job (:func:`pes_ml.score_spark.score_features_spark`).
    progress
        Advanced by the accounts of each chunk.
    timer
        Called with a step name around each step (``shap_and_reasons``, ``change``,
        ``write_reasons``); the scoring run's timings.

    Returns
    -------
    pandas.DataFrame
        The scores of every account, in the FeatureFrame's order, with ``pes_delta`` and
        ``what_changed``: exactly what one chunk of all accounts would give.
    """
    progress = progress or NoProgress()
    steps = timer or (lambda _step: nullcontext())
    specs = model.specs()
    n_chunks = -(-len(features) // chunk_accounts)
    parts = []
    for number, start in enumerate(range(0, len(features), chunk_accounts), start=1):
        batch = features.iloc[start : start + chunk_accounts]
        with steps("shap_and_reasons"):
            scores, reasons = scorer(
                batch,
                model,
                model_name=model_name,
                model_version=model_version,
                run_id=run.run_id,
                top_reasons=top_reasons,
                names=names,
            )
        with steps("change"):
            _add_change(scores, reasons, previous, specs)
        with steps("write_reasons"):
            run.add_reasons(reasons)
        parts.append(scores)
        logger.info(
            "Chunk %d/%d: %d accounts scored, %d reason rows staged",
            number,
            n_chunks,
            len(batch),
            len(reasons),
        )
        del reasons
        progress.advance(len(batch))
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]


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
    from pes_ml.ingest import ingest, work_dir_lock
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
        check_catalog_version(model, model_version)
        # Jobs sharing work_dir: one ingest + clean-table read at a time (see ingest.work_dir_lock).
        with work_dir_lock(config):
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
        with timer("predict"):
            pes = predicted_pes(features, model, config.score.chunk_accounts)
        drift_frame = features.assign(**{SCORE_REFERENCE: pes})
        drift = check_drift(
            drift_frame,
            model.reference,
            warn_threshold=config.score.psi_warn,
            error_threshold=config.score.psi_error,
            unseen_categories=model.encoder.unseen_levels(features),
            # Account age moves forward between training and scoring by construction.
            warn_only=frozenset(n for n, spec in model.specs().items() if spec.group == "tenure"),
        )
        del drift_frame
        if drift.errors:
            worst = sorted(drift.errors.items(), key=lambda item: -item[1])[:5]
            listed = ", ".join(f"{name} (PSI {value:.2f})" for name, value in worst)
            recency = features.get(S.DAYS_SINCE_LAST_EVENT)
            quiet_days = None if recency is None else recency.min()
            after_data = (
                f" No account has an event in the {int(quiet_days)} days before as_of {key}: is it after "
                "the end of the data? Score a date the data covers, or load newer data."
                if quiet_days is not None and quiet_days >= AFTER_DATA_DAYS else ""
            )
            if not allow_drift:
                raise DriftError(
                    f"Scoring data at as_of {key} drifted from model version {model_version}'s training "
                    f"data above PSI {config.score.psi_error}: {listed}. Nothing was written.{after_data} "
                    "Check the inputs (a changed export or column mapping?), retrain, or rerun with "
                    "--allow-drift."
                )
            logger.warning("Scoring despite drift above PSI %s (--allow-drift): %s.%s",
                           config.score.psi_error, listed, after_data)
        _stage("drift_checked")
        progress.start(f"Scoring {len(features):,} accounts", total=len(features))
        chunk = config.score.chunk_accounts
        n_chunks = -(-len(features) // chunk)
        # Staging is invisible to readers and removed if anything below fails; the previous run's
        # reasons stay open (readable) for change attribution even if a backfill replaces that run.
        with store.begin_run(key, run_id) as run, ExitStack() as stack:
            before = _previous_reasons(store, key)
            previous = None if before is None else stack.enter_context(before).run
            scores = score_chunks(
                features,
                model,
                run,
                model_name=config.tracking.model_name,
                model_version=model_version,
                chunk_accounts=chunk,
                top_reasons=config.score.top_reasons,
                names=account_names(config),
                previous=before,
                scorer=_scorer(config),
                progress=progress,
                timer=timer,
            )
            _stage("change_attributed")
            change = (
                None
                if previous is None
                else {"previous_run_id": previous.run_id, "previous_as_of": str(previous.as_of)}
            )
            manifest = {
                "as_of": key,
                "model": {"name": config.tracking.model_name, "version": model_version, "alias": alias},
                "model_metadata": model.metadata,
                "metrics": version_metrics(config, model_version),
                "feature_catalog_version": model.metadata.get("catalog_version"),
                "scoring_catalog_version": CATALOG_VERSION,
                "input_fingerprints": _fingerprint(config),
                "reconciliation": recon.to_dict(),
                "drift": drift.to_dict(),
                "change": change,
                "tier_thresholds": model.tier_thresholds,
                "timings_seconds": dict(timer.seconds),
                "counts": {"accounts": len(scores), "reason_rows": run.reason_rows, "chunks": n_chunks},
            }
            with timer("commit"):
                committed = run.commit(scores, manifest)
    logger.info("Scored %d accounts at as_of %s as run %s (%s)", len(scores), key, committed, timer.seconds)
    return ScoreRun(committed, key, scores, manifest, drift, store)
