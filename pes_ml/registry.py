"""The only module that talks to the MLflow model registry: versions, aliases, the promotion gate.

Aliases, never the deprecated stages: ``@challenger`` is the latest trained
version, ``@champion`` the one that serves. :func:`promote` moves ``@champion``
only when the challenger passes every gate of ``promotion:`` in config, scored
on the challenger's own latest out-of-time test snapshots, with the champion
scored on *the same rows*:

- ``metric``: challenger beats the champion by at least ``min_improvement``
  (first promotion: beats every baseline by that margin);
- ``log_loss``: below the base-rate log loss (the model knows more than the base rate);
- ``ece``: at most ``max_ece``, and at most the champion's ECE + ``max_ece_increase``.

The decision and every gate's numbers are stored as tags on the version, and a
model card is written to ``<model_card_dir>/<name>/`` on promotion.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pes_ml.config import PesConfig
from pes_ml.errors import ModelNotFoundError, PromotionRejected, RegistryUnavailableError
from pes_ml.evaluate import METRICS_HIGHER_IS_BETTER, binary_metrics
from pes_ml.model import PesModel
from pes_ml.schemas import CHURN_PROBABILITY, EXPANSION_PROBABILITY
from pes_ml.tracking import (
    configure_tracking,
    is_unreachable,
    load_test_snapshots,
    reaching,
    redact,
    run_metrics,
)
from pes_ml.train import OUTCOME_LABELS

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
_PROBABILITY = {
    "churn": CHURN_PROBABILITY,
    "expansion": EXPANSION_PROBABILITY,
    "conversion": "conversion_probability",
}


def register(config: PesConfig, model_uri: str, run_id: str) -> str:
    """Register a logged model as a new version of ``tracking.model_name`` and alias it ``@challenger``."""
    configure_tracking(config.tracking)
    name = config.tracking.model_name
    version = mlflow.register_model(model_uri, name, tags={"run_id": run_id})
    MlflowClient().set_registered_model_alias(name, CHALLENGER, version.version)
    logger.info("registered %s version %s as @%s", name, version.version, CHALLENGER)
    return str(version.version)


def _version(client: MlflowClient, name: str, alias: str | None, version: str | None) -> Any:
    try:
        if version is not None:
            return client.get_model_version(name, version)
        return client.get_model_version_by_alias(name, alias or CHAMPION)
    except MlflowException as exc:
        if is_unreachable(exc):
            raise RegistryUnavailableError(
                f"The MLflow model registry at {redact(mlflow.get_tracking_uri())} stopped answering: "
                f"{exc.message[:300]}. Check that the server is up, then rerun."
            ) from exc
        what = f"version {version}" if version is not None else f"alias @{alias or CHAMPION}"
        raise ModelNotFoundError(
            f"No {what} of registered model {name!r}. Run `pes-ml train` to register one and "
            f"`pes-ml promote` to set @{CHAMPION}, or list versions with `pes-ml models`."
        ) from exc


def load_pes_model(
    config: PesConfig, alias: str | None = CHAMPION, version: str | None = None
) -> tuple[PesModel, str]:
    """The :class:`PesModel` behind a registered version or alias, and its version number."""
    configure_tracking(config.tracking)
    name = config.tracking.model_name
    found = _version(MlflowClient(), name, alias, version)
    # A pyfunc model is a pickle: only load from a registry you trust (docs/reliability.md).
    with reaching(config.tracking.tracking_uri):
        loaded = mlflow.pyfunc.load_model(f"models:/{name}/{found.version}")
    return loaded.unwrap_python_model().model, str(found.version)


def list_versions(config: PesConfig) -> pd.DataFrame:
    """Every version of the model: aliases, run, creation time and headline test metrics."""
    configure_tracking(config.tracking)
    client = MlflowClient()
    name = config.tracking.model_name
    try:
        versions = list(client.search_model_versions(f"name = '{name}'"))
    except MlflowException:
        versions = []
    aliases: dict[str, list[str]] = {}
    try:
        for alias, number in client.get_registered_model(name).aliases.items():
            aliases.setdefault(str(number), []).append(alias)
    except MlflowException:
        pass
    rows = []
    for v in sorted(versions, key=lambda v: int(v.version)):
        metrics = run_metrics(v.run_id) if v.run_id else {}
        rows.append(
            {
                "version": str(v.version),
                "aliases": ",".join(sorted(aliases.get(str(v.version), []))),
                "created": datetime.fromtimestamp(v.creation_timestamp / 1000, tz=UTC).strftime(
                    "%Y-%m-%d %H:%M"
                ),
                "run_id": v.run_id,
                "churn_roc_auc": metrics.get("churn.test.roc_auc"),
                "churn_ece": metrics.get("churn.test.ece"),
                "expansion_roc_auc": metrics.get("expansion.test.roc_auc"),
                "promotion": v.tags.get("pes_ml.promotion", ""),
            }
        )
    return pd.DataFrame(rows)


@dataclass
class PromotionDecision:
    """What the gate saw and decided."""

    version: str
    previous_champion: str | None
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    card_path: Path | None = None

    def check(self, ok: bool, line: str) -> None:
        """Record one gate's outcome."""
        (self.passed if ok else self.failed).append(line)

    @property
    def promoted(self) -> bool:
        return not self.failed


def _better(metric: str, candidate: float, reference: float, margin: float) -> bool:
    if METRICS_HIGHER_IS_BETTER[metric]:
        return candidate >= reference + margin
    return candidate <= reference - margin


def _score_on(model: PesModel, snapshots: pd.DataFrame, outcome: str) -> dict[str, float]:
    label = OUTCOME_LABELS[outcome]
    known = snapshots[snapshots[label].notna()]
    scores = model.predict(known)
    return binary_metrics(known[label].to_numpy(float), scores[_PROBABILITY[outcome]].to_numpy(float))


def promote(config: PesConfig, version: str | None = None, *, force: bool = False) -> PromotionDecision:
    """Move ``@champion`` to the challenger (or ``version``) when it passes every gate.

    Parameters
    ----------
    config
        ``promotion`` (metric, margin, calibration tolerances) and ``tracking`` sections.
    version
        The version to consider; default: ``@challenger``.
    force
        Promote even when gates fail (the failures are still recorded on the version).

    Returns
    -------
    PromotionDecision

    Raises
    ------
    ModelNotFoundError
        If there is no challenger (or no such version).
    PromotionRejected
        If a gate fails; ``failed_gates`` lists them.
    """
    configure_tracking(config.tracking)
    client = MlflowClient()
    gate = config.promotion
    name = config.tracking.model_name
    candidate = _version(client, name, CHALLENGER if version is None else None, version)
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champion = None
    if champion is not None and str(champion.version) == str(candidate.version):
        # Nothing to decide: the champion's own promotion record and tags stay as they are.
        raise PromotionRejected(
            f"{name} v{candidate.version} is already @{CHAMPION}: nothing to promote. Train a new "
            "challenger with `pes-ml train`, or pass another version.",
            [f"version {candidate.version} is already @{CHAMPION}"],
        )
    decision = PromotionDecision(str(candidate.version), str(champion.version) if champion else None)
    snapshots = load_test_snapshots(candidate.run_id)
    challenger_model, _ = load_pes_model(config, version=str(candidate.version))
    ours = _score_on(challenger_model, snapshots, gate.outcome)
    decision.metrics["challenger"] = ours
    metric, margin = gate.metric, gate.min_improvement
    if champion is not None:
        champion_model, _ = load_pes_model(config, version=str(champion.version))
        theirs = _score_on(champion_model, snapshots, gate.outcome)
        decision.metrics["champion"] = theirs
        decision.check(
            _better(metric, ours[metric], theirs[metric], margin),
            f"{metric}: challenger {ours[metric]:.4f} vs champion v{champion.version} {theirs[metric]:.4f} "
            f"(margin {margin}) on the same {int(ours['n'])} test snapshots",
        )
        decision.check(
            ours["ece"] <= theirs["ece"] + gate.max_ece_increase,
            f"ece: {ours['ece']:.4f} vs champion {theirs['ece']:.4f} + {gate.max_ece_increase}",
        )
    else:
        # First champion: beat every baseline, as logged on the same test snapshots at training.
        logged = run_metrics(candidate.run_id)
        prefix, suffix = f"{gate.outcome}.baseline.", f".{metric}"
        baselines = {
            k[len(prefix) : -len(suffix)]: v
            for k, v in logged.items()
            if k.startswith(prefix) and k.endswith(suffix)
        }
        decision.metrics["baselines"] = baselines
        for baseline, value in sorted(baselines.items()):
            decision.check(
                _better(metric, ours[metric], value, margin),
                f"{metric}: model {ours[metric]:.4f} vs baseline {baseline} {value:.4f} (margin {margin})",
            )
    decision.check(
        ours["log_loss"] < ours["base_log_loss"],
        f"log_loss: {ours['log_loss']:.4f} < base-rate log loss {ours['base_log_loss']:.4f}",
    )
    decision.check(ours["ece"] <= gate.max_ece, f"ece: {ours['ece']:.4f} <= max_ece {gate.max_ece}")
    record = json.dumps(
        {"passed": decision.passed, "failed": decision.failed, "at": datetime.now(UTC).isoformat()}
    )
    client.set_model_version_tag(name, candidate.version, "pes_ml.promotion_gates", record[:5000])
    if decision.failed and not force:
        client.set_model_version_tag(name, candidate.version, "pes_ml.promotion", "rejected")
        raise PromotionRejected(
            f"{name} v{candidate.version} was not promoted: {len(decision.failed)} gate(s) failed: "
            + "; ".join(decision.failed),
            decision.failed,
        )
    client.set_registered_model_alias(name, CHAMPION, candidate.version)
    client.set_model_version_tag(
        name, candidate.version, "pes_ml.promotion", "forced" if decision.failed else "promoted"
    )
    logger.info("promoted %s v%s to @%s", name, candidate.version, CHAMPION)
    from pes_ml.model_card import write_model_card

    decision.card_path = write_model_card(config, decision, challenger_model, run_metrics(candidate.run_id))
    return decision


def champion_version(config: PesConfig) -> str | None:
    """The version number behind ``@champion``, or None."""
    configure_tracking(config.tracking)
    try:
        return str(MlflowClient().get_model_version_by_alias(config.tracking.model_name, CHAMPION).version)
    except MlflowException:
        return None


def version_metrics(config: PesConfig, version: str) -> dict[str, float]:
    """The evaluation metrics logged by the training run of a registered version (model and baselines)."""
    configure_tracking(config.tracking)
    found = _version(MlflowClient(), config.tracking.model_name, None, version)
    return run_metrics(found.run_id) if found.run_id else {}
