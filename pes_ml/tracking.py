"""The only module that talks to MLflow tracking: runs, params, metrics, plots, and the pyfunc.

Default store: an embedded SQLite file in the working directory
(``sqlite:///mlflow.db``; MLflow 3 refuses the old ``./mlruns`` file store), with
artifacts under ``mlartifacts/`` — set when the experiment is created, since the
default artifact root would be ``./mlruns``. ``MLFLOW_TRACKING_URI`` overrides the
config; only the CLI reads it and passes it in.

Against a team server (``http(s)://``), an experiment created by pes_ml takes the
server's artifact root (``mlflow-artifacts:/`` with ``--serve-artifacts``) unless
``tracking.artifact_location`` is itself a URI: a path on one client's disk is no
place for a team's artifacts. An unreachable server is a
:class:`~pes_ml.errors.RegistryUnavailableError` (exit code 11) naming the URI, found
by a short TCP probe before MLflow's own retries (minutes, by default) start.

A training run logs: the flattened config; the feature catalog and its version;
the as_of range and split sizes with base rates; a fingerprint of the training
data; test metrics of the model and every baseline per outcome (and per segment);
ROC, PR, calibration, lift, feature-importance and SHAP plots as PNG; and the
model as a pyfunc (:class:`PesPyfunc`) with signature and input example.
"""

from __future__ import annotations

import json
import logging
import socket
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec
from mlflow.types.schema import AnyType

from pes_ml.config import PesConfig, TrackingConfig
from pes_ml.errors import ConfigError, RegistryUnavailableError, first_line
from pes_ml.model import CONVERSION_PROBABILITY, PesModel, is_categorical
from pes_ml.schemas import (
    ACCOUNT_ID,
    CHURN_PROBABILITY,
    EXPANSION_PROBABILITY,
    EXPANSION_SCORE,
    PES,
    TIER,
)
from pes_ml.train import TrainingResult

logger = logging.getLogger(__name__)

MODEL_ARTIFACT = "pes_model.json"
TEST_SNAPSHOTS_ARTIFACT = "evaluation/test_snapshots.parquet"
PIP_REQUIREMENTS = ["pes_ml", "lightgbm", "pandas", "numpy", "scikit-learn", "mlflow"]


class PesPyfunc(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined,misc]
    """``mlflow.pyfunc.load_model("models:/pes@champion").predict(features)`` -> scores.

    The whole :class:`~pes_ml.model.PesModel` (boosters, Platt parameters, base
    values, encoder, tier thresholds, reference distributions) is one JSON
    artifact; ``loaded.unwrap_python_model().model`` gives it to code that needs
    more than ``predict`` (the scorer's SHAP and drift checks).
    """

    def __init__(self) -> None:
        self.model: PesModel | None = None

    def load_context(self, context: Any) -> None:
        self.model = PesModel.from_json(Path(context.artifacts["pes_model"]).read_text(encoding="utf-8"))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        if self.model is None:
            self.load_context(context)
        assert self.model is not None  # noqa: S101  (set just above)
        return self.model.predict(model_input)


REMOTE_SCHEMES = ("http", "https")
PROBE_TIMEOUT_SECONDS = 5.0


def redact(uri: str) -> str:
    """``uri`` without a password (``http://user:secret@host`` -> ``http://user:***@host``)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _unavailable(uri: str, why: object) -> RegistryUnavailableError:
    return RegistryUnavailableError(
        f"The MLflow tracking server at {redact(uri)} cannot be reached ({why}). Start it or check "
        "the network, or point MLFLOW_TRACKING_URI (or tracking.tracking_uri) at a running server; "
        "see docs/reliability.md."
    )


def is_unreachable(exc: BaseException) -> bool:
    """Whether an MLflow error was caused by a connection failure rather than an HTTP answer."""
    import requests

    seen: BaseException | None = exc
    for _depth in range(8):
        if seen is None:
            return False
        network = (requests.exceptions.ConnectionError, requests.exceptions.Timeout)
        if isinstance(seen, network + (ConnectionError, TimeoutError, socket.gaierror)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def check_reachable(uri: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> None:
    """For an ``http(s)://`` tracking URI, fail fast when nothing listens at its host and port.

    MLflow retries a refused connection with exponential backoff for minutes
    (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``); one TCP connect answers in milliseconds.

    Raises
    ------
    RegistryUnavailableError
        If the host does not resolve, refuses the connection, or does not answer within ``timeout``.
    """
    parts = urlsplit(uri)
    if parts.scheme not in REMOTE_SCHEMES or not parts.hostname:
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            pass
    except (OSError, ValueError) as exc:
        raise _unavailable(uri, getattr(exc, "strerror", None) or exc) from exc


@contextmanager
def reaching(uri: str) -> Iterator[None]:
    """Turn an MLflow connection failure inside the block into a :class:`RegistryUnavailableError`,
    and a tracking URI MLflow cannot open (an unknown scheme, a file that is no database) into a
    :class:`ConfigError`."""
    from mlflow.tracking.registry import UnsupportedModelRegistryStoreURIException
    from sqlalchemy.exc import DatabaseError

    try:
        yield
    except (UnsupportedModelRegistryStoreURIException, DatabaseError) as exc:
        raise ConfigError(
            f"The MLflow tracking URI {redact(uri)} cannot be opened ({first_line(exc)}). Point "
            "tracking.tracking_uri (or --tracking-uri, or MLFLOW_TRACKING_URI) at an MLflow database "
            "such as sqlite:///mlflow.db, or at a running tracking server (http://host:5000)."
        ) from exc
    except MlflowException as exc:
        if is_unreachable(exc):
            raise _unavailable(uri, "the connection failed") from exc
        raise


def configure_tracking(config: TrackingConfig) -> str:
    """Point MLflow at the configured store and experiment; return the experiment id.

    The experiment is created with ``artifact_location`` so artifacts never land in
    ``./mlruns`` — except on a remote server, whose artifact root is used unless
    ``artifact_location`` is a URI (see the module docstring).

    Raises
    ------
    RegistryUnavailableError
        If the tracking server cannot be reached.
    """
    uri = config.tracking_uri
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    # The registry lives in the same store; set it too, or a registry URI resolved earlier in the
    # process (another config, another test) would keep being used.
    mlflow.set_registry_uri(uri)
    with reaching(uri):
        experiment = mlflow.get_experiment_by_name(config.experiment)
        if experiment is None:
            location: str | None = config.artifact_location
            remote = urlsplit(uri).scheme in REMOTE_SCHEMES
            if location is not None and "://" not in location:
                location = None if remote else Path(location).resolve().as_uri()
            try:
                experiment_id = mlflow.create_experiment(config.experiment, artifact_location=location)
            except MlflowException:
                # Another process created it meanwhile (two trainings starting at once).
                experiment = mlflow.get_experiment_by_name(config.experiment)
                if experiment is None:
                    raise
                experiment_id = experiment.experiment_id
        else:
            experiment_id = experiment.experiment_id
        mlflow.set_experiment(experiment_id=experiment_id)
    return str(experiment_id)


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``; lists as JSON; values cut to MLflow's 6000 chars."""
    flat: dict[str, str] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            text = json.dumps(value) if isinstance(value, list | tuple) else str(value)
            flat[name] = text[:6000]
    return flat


def model_signature(model: PesModel) -> ModelSignature:
    """Inputs: account_id (optional) and every model feature; outputs: the score columns.

    Categoricals are ``string``. Numeric features are ``any``: MLflow's ``double``
    refuses int64 input ("cannot safely convert"), yet counts arrive as int64 — or
    as float64 when a window is empty — and the model's encoder turns both into
    float64. Their training dtypes stay in the model (``encoder.dtypes``) for the
    scorer's contract check.
    """
    inputs: list[ColSpec | TensorSpec] = [ColSpec("string", ACCOUNT_ID, required=False)]
    for name in model.encoder.feature_names:
        kind = "string" if name in model.encoder.categories else AnyType()  # type: ignore[no-untyped-call]
        inputs.append(ColSpec(kind, name, required=True))
    outputs: list[ColSpec | TensorSpec] = [ColSpec("string", ACCOUNT_ID, required=False)]
    outputs += [ColSpec("double", c) for c in (CHURN_PROBABILITY, EXPANSION_PROBABILITY)]
    if "conversion" in model.outcomes:
        outputs.append(ColSpec("double", CONVERSION_PROBABILITY))
    outputs += [ColSpec("double", PES), ColSpec("double", EXPANSION_SCORE), ColSpec("string", TIER)]
    outputs += [ColSpec("string", f"reason_{i + 1}") for i in range(model.top_reasons)]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def input_example(model: PesModel, features: pd.DataFrame, rows: int = 5) -> pd.DataFrame:
    """A few feature rows typed as the signature says (object strings, numbers)."""
    sample = features.head(rows)
    example = (
        pd.DataFrame({ACCOUNT_ID: sample[ACCOUNT_ID].astype(object)})
        if ACCOUNT_ID in sample
        else pd.DataFrame()
    )
    for name in model.encoder.feature_names:
        column = sample[name]
        if is_categorical(column):
            example[name] = column.astype(object).where(column.notna(), None)
        else:
            example[name] = pd.to_numeric(column, errors="coerce")
    return example.reset_index(drop=True)


def _log_figures(result: TrainingResult, directory: Path) -> None:
    from pes_ml import explain, plots

    for outcome, report in result.reports.items():
        title = f"{outcome} — test snapshots"
        figures = {
            "roc": plots.roc_figure(report.predictions, title),
            "pr": plots.pr_figure(report.predictions, title),
            "calibration": plots.calibration_figure(report.predictions, title),
            "lift": plots.lift_figure(report.predictions, title),
            "feature_importance": plots.importance_figure(report.importance, f"{outcome} — gain"),
        }
        matrix = result.model.encoder.transform(result.test_snapshots.head(2000))
        shap = explain.shap_values(result.model.outcomes[outcome].booster, matrix)
        for kind, fig in plots.shap_figures(
            shap.contributions, matrix, f"{outcome} — SHAP (log-odds)"
        ).items():
            figures[f"shap_{kind}"] = fig
        for name, fig in figures.items():
            fig.savefig(directory / f"{outcome}_{name}.png", dpi=90, bbox_inches="tight")
            plots.close(fig)


def log_training_run(
    result: TrainingResult,
    config: PesConfig,
    *,
    catalog: list[dict[str, Any]] | None = None,
    catalog_version: str = "",
    data_fingerprint: str = "",
    run_name: str | None = None,
) -> tuple[str, str]:
    """Log one training run and its pyfunc model; return ``(run_id, model_uri)``."""
    configure_tracking(config.tracking)
    model = result.model
    with mlflow.start_run(run_name=run_name) as run, tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        mlflow.log_params(flatten(config.model_dump(mode="json")))
        tags = {
            "pes_ml.catalog_version": catalog_version,
            "pes_ml.data_fingerprint": data_fingerprint,
            "pes_ml.outcomes": ",".join(model.outcomes),
            "pes_ml.skipped": json.dumps(result.skipped),
        }
        for row in result.split_summary.to_dict("records"):
            tags[f"pes_ml.{row['split']}.as_of_range"] = f"{row['first_as_of']}..{row['last_as_of']}"
            for key, value in row.items():
                if key not in ("split", "first_as_of", "last_as_of") and pd.notna(value):
                    mlflow.log_metric(f"split.{row['split']}.{key}", float(value))
        mlflow.set_tags(tags)
        for outcome, report in result.reports.items():
            for scorer, metrics in report.metrics.items():
                prefix = (
                    f"{outcome}.test"
                    if scorer == "model"
                    else f"{outcome}.baseline.{scorer.replace(':', '_')}"
                )
                mlflow.log_metrics({f"{prefix}.{k}": float(v) for k, v in metrics.items() if np.isfinite(v)})
            mlflow.log_metrics(
                {
                    f"{outcome}.validation.{k}": float(v)
                    for k, v in report.validation_metrics.items()
                    if np.isfinite(v)
                }
            )
            mlflow.log_metric(f"{outcome}.trees", model.outcomes[outcome].best_iteration)
            report.segments.to_csv(directory / f"{outcome}_segments.csv", index=False)
            report.importance.to_csv(directory / f"{outcome}_importance.csv", index=False)
            pd.DataFrame(report.metrics).T.to_csv(directory / f"{outcome}_comparison.csv")
        mlflow.log_metric("train.seconds", result.seconds)
        result.split_summary.to_csv(directory / "split_summary.csv", index=False)
        if catalog is not None:
            (directory / "feature_catalog.json").write_text(json.dumps(catalog, indent=1), encoding="utf-8")
        mlflow.log_artifacts(str(directory), artifact_path="evaluation")
        test_path = directory / "test_snapshots.parquet"
        result.test_snapshots.to_parquet(test_path, index=False)
        mlflow.log_artifact(str(test_path), artifact_path="evaluation")
        if config.tracking.log_plots:
            plot_dir = directory / "plots"
            plot_dir.mkdir()
            _log_figures(result, plot_dir)
            mlflow.log_artifacts(str(plot_dir), artifact_path="plots")
        model_path = directory / MODEL_ARTIFACT
        model_path.write_text(model.to_json(), encoding="utf-8")
        info = mlflow.pyfunc.log_model(
            name="pes_model",
            python_model=PesPyfunc(),
            artifacts={"pes_model": str(model_path)},
            signature=model_signature(model),
            input_example=input_example(model, result.test_snapshots),
            pip_requirements=PIP_REQUIREMENTS,
        )
        logger.info("logged training run %s, model %s", run.info.run_id, info.model_uri)
        return run.info.run_id, info.model_uri


def load_test_snapshots(run_id: str) -> pd.DataFrame:
    """The test snapshots a training run was evaluated on (for comparing champion and challenger)."""
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=TEST_SNAPSHOTS_ARTIFACT)
    return pd.read_parquet(path)


def run_metrics(run_id: str) -> dict[str, float]:
    """All metrics of a run."""
    return dict(mlflow.get_run(run_id).data.metrics)
