"""Batch scoring as a Spark job: the one scoring definition, run over partitions.

With ``engine: spark`` the FeatureFrame is scored by :func:`score_features_spark`::

    FeatureFrame ──createDataFrame──> Spark DataFrame (n partitions)
        ──mapInPandas(score_features on each Arrow batch; PesModel broadcast as JSON)──>
    one Spark DataFrame of score rows and long SHAP rows (a ``_pes_ml_kind`` column tells them apart)
        ──write.partitionBy(kind).parquet(scratch)──> Parquet parts, read back by the driver with Arrow
        ──> scores, reasons (pandas, for drift, change attribution and the run store)

Why this shape:

- **One scoring definition.** Each partition calls :func:`pes_ml.score.score_features`,
  the pure function the DuckDB path calls, so probabilities, PES, tiers, exact SHAP
  and reason sentences cannot diverge between engines. Every output of that
  function is per account (SHAP, Platt, tiers, top-k reasons), so scoring a batch
  of accounts gives the same rows as scoring all of them at once; classic PES
  percentiles, which do depend on the whole population, are computed with the
  features, before the split.
- **One pass.** Scores and the long SHAP table come out of the same task, as rows of
  one DataFrame with the union of both column sets: SHAP is computed once per
  account, not once per output.
- **The model travels as text.** :meth:`PesModel.to_json` holds the boosters'
  model strings and the Platt parameters; it is broadcast once and parsed once per
  Python worker (cached), so executors need pes_ml, LightGBM and numba but no MLflow.
- **Exact types.** Spark has no pandas ``category``/``str``/tz-aware dtypes; the
  pandas dtypes of the FeatureFrame are broadcast with the model and restored in each
  batch before scoring, and those of the results are restored on the driver, so the
  frames equal the DuckDB path's column by column (the parity test compares them).
- **No collect through the JVM.** ``toArrow()`` would hold every task's result in the
  driver JVM at once (it fails past ``spark.driver.maxResultSize`` at 100k accounts:
  12M long SHAP rows); the executors write Parquet parts instead and the driver reads
  them directly. The run store then commits them with its usual atomic protocol
  (staging -> rename -> pointer swap), so both engines write the same run format.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pes_ml import explain
from pes_ml import schemas as S
from pes_ml.model import PesModel

if TYPE_CHECKING:
    from pyspark.sql import DataFrame as SparkDataFrame
    from pyspark.sql import SparkSession
    from pyspark.sql.types import DataType, StructType

logger = logging.getLogger(__name__)

KIND: Final = "_pes_ml_kind"
"""Column that tells score rows (``"score"``) from long SHAP rows (``"reason"``)."""
SCORE_KIND: Final = "score"
REASON_KIND: Final = "reason"
ROWS_PER_PARTITION: Final = 20_000
"""Target accounts per partition: big enough to amortise numba's per-call overhead,
small enough that a partition's long SHAP table (rows x features x 2 models) fits a task."""


@functools.lru_cache(maxsize=2)
def _model(payload: str) -> PesModel:
    """Parsed once per Python worker (Spark reuses workers between tasks)."""
    return PesModel.from_json(payload)


def _spark_type(dtype: Any) -> DataType:
    from pyspark.sql import types as T

    if pd.api.types.is_bool_dtype(dtype):
        return T.BooleanType()
    if pd.api.types.is_integer_dtype(dtype):
        return T.LongType()
    if pd.api.types.is_float_dtype(dtype):
        return T.DoubleType()
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return T.TimestampType()
    return T.StringType()


def _spark_schema(dtypes: Mapping[str, Any]) -> StructType:
    from pyspark.sql import types as T

    return T.StructType([T.StructField(name, _spark_type(dtype), True) for name, dtype in dtypes.items()])


def _restore(frame: pd.DataFrame, dtypes: Mapping[str, Any]) -> pd.DataFrame:
    """Give a frame that crossed Spark back its pandas dtypes (text, categories, UTC instants)."""
    columns = {}
    for name, dtype in dtypes.items():
        column = frame[name]
        if isinstance(dtype, pd.DatetimeTZDtype):
            # Spark hands instants over as naive values in the session time zone, which is UTC.
            if getattr(column.dtype, "tz", None) is None:
                column = pd.to_datetime(column).dt.tz_localize("UTC")
            column = column.dt.tz_convert(dtype.tz).astype(dtype)
        elif pd.api.types.is_bool_dtype(dtype) and column.isna().any():
            column = column.astype("boolean")
        elif pd.api.types.is_object_dtype(dtype):
            column = column.astype(object).where(column.notna(), None)
        else:
            column = column.astype(dtype)
        columns[name] = column.reset_index(drop=True)
    return pd.DataFrame(columns)


def _conform(frame: pd.DataFrame, schema: StructType) -> pd.DataFrame:
    """A frame with exactly the output columns, text as Python objects (None when missing)."""
    from pyspark.sql import types as T

    columns = {}
    for field in schema.fields:
        if field.name in frame.columns:
            column = frame[field.name]
        else:
            column = pd.Series(None, index=frame.index, dtype=object)
        if isinstance(field.dataType, T.StringType):
            column = column.astype(object).where(column.notna(), None)
        elif isinstance(column.dtype, pd.DatetimeTZDtype):
            # Naive UTC (the session time zone): Spark reads tz-aware columns through a
            # pandas API that pandas 3 deprecates.
            column = column.dt.tz_convert("UTC").dt.tz_localize(None)
        columns[field.name] = column
    return pd.DataFrame(columns, index=frame.index)


def _arrow_table(frame: pd.DataFrame, schema: StructType) -> pa.Table:
    """``frame`` as an Arrow table of ``schema``'s types, built column by column (no pandas metadata)."""
    from pyspark.sql import types as T

    frame = _conform(frame, schema)
    arrays, names = [], []
    for field in schema.fields:
        column = frame[field.name]
        if isinstance(field.dataType, T.TimestampType):
            array = pa.array(column.to_numpy(dtype="datetime64[us]"), type=pa.timestamp("us", tz="UTC"))
        elif isinstance(field.dataType, T.StringType):
            array = pa.array(column.to_numpy(dtype=object), type=pa.string(), from_pandas=True)
        elif isinstance(field.dataType, T.DoubleType):
            array = pa.array(column.to_numpy(dtype=np.float64, na_value=np.nan), type=pa.float64())
        else:
            array = pa.array(column, from_pandas=True)
        arrays.append(array)
        names.append(field.name)
    return pa.Table.from_arrays(arrays, names=names)


def _partitions(spark: SparkSession, n_rows: int, partitions: int | None) -> int:
    if partitions is not None:
        return max(1, int(partitions))
    parallelism = int(spark.sparkContext.defaultParallelism)
    return max(parallelism, math.ceil(n_rows / ROWS_PER_PARTITION))


def score_features_spark_frames(
    spark: SparkSession,
    features: pd.DataFrame,
    model: PesModel,
    *,
    model_name: str,
    model_version: str,
    run_id: str,
    top_reasons: int = 3,
    names: pd.Series | None = None,
    partitions: int | None = None,
) -> tuple[SparkDataFrame, dict[str, Any], dict[str, Any]]:
    """The scoring job as one lazy Spark DataFrame of score and long SHAP rows.

    Returns
    -------
    result, score_dtypes, reason_dtypes
        ``result`` holds both kinds of rows (see :data:`KIND`); the two dtype maps give
        the pandas columns and dtypes of :func:`pes_ml.score.score_features`'s outputs.
    """
    from pes_ml.score import score_features

    options: dict[str, Any] = {
        "model_name": model_name,
        "model_version": model_version,
        "run_id": run_id,
        "top_reasons": top_reasons,
    }
    # The output columns are whatever the one scoring definition returns: ask it on two rows.
    sample_scores, sample_reasons = score_features(features.head(2), model, names=names, **options)
    score_dtypes = sample_scores.dtypes.to_dict()
    reason_dtypes = sample_reasons.dtypes.to_dict()
    output_dtypes = {**score_dtypes, **{k: v for k, v in reason_dtypes.items() if k not in score_dtypes}}
    output_schema = _spark_schema({**output_dtypes, KIND: np.dtype(object)})

    feature_dtypes = features.dtypes.to_dict()
    payload = spark.sparkContext.broadcast((model.to_json(), feature_dtypes, names))

    def score_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model_json, dtypes, account_names = payload.value
        pes_model = _model(model_json)
        for batch in batches:
            if batch.empty:
                continue
            features = _restore(batch, dtypes)
            scores, reasons = score_features(features, pes_model, names=account_names, **options)
            yield _conform(scores.assign(**{KIND: SCORE_KIND}), output_schema)
            yield _conform(reasons.assign(**{KIND: REASON_KIND}), output_schema)

    n_partitions = _partitions(spark, len(features), partitions)
    frame = spark.createDataFrame(_arrow_table(features, _spark_schema(feature_dtypes))).repartition(
        n_partitions
    )
    logger.info("Scoring %d accounts on Spark in %d partitions", len(features), n_partitions)
    return frame.mapInPandas(cast(Any, score_batches), schema=output_schema), score_dtypes, reason_dtypes


def _ordered(
    scores: pd.DataFrame, reasons: pd.DataFrame, features: pd.DataFrame, model: PesModel
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows in the order the in-process path gives: accounts as in the features; reasons by model."""
    accounts = pd.Index(features[S.ACCOUNT_ID].to_numpy())
    scores = scores.iloc[np.argsort(accounts.get_indexer(scores[S.ACCOUNT_ID]), kind="stable")]
    model_rank = {name: i for i, name in enumerate(("churn", "expansion"))}
    feature_rank = {name: i for i, name in enumerate(model.encoder.feature_names)}
    order = np.lexsort(
        (
            reasons[explain.FEATURE].map(feature_rank).to_numpy(),
            accounts.get_indexer(reasons[S.ACCOUNT_ID]),
            reasons[explain.MODEL].map(model_rank).to_numpy(),
        )
    )
    return scores.reset_index(drop=True), reasons.iloc[order].reset_index(drop=True)


def _read_kind(folder: Path, kind: str, dtypes: Mapping[str, Any]) -> pd.DataFrame:
    """The rows of one kind that the Spark job wrote, with their pandas dtypes restored."""
    parts = folder / f"{KIND}={kind}"
    if not parts.is_dir():  # no row of this kind
        return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in dtypes.items()})
    table = pq.read_table(parts, columns=list(dtypes), partitioning=None)
    return _restore(table.to_pandas(), dtypes)


def score_features_spark(
    features: pd.DataFrame,
    model: PesModel,
    *,
    model_name: str,
    model_version: str,
    run_id: str,
    top_reasons: int = 3,
    names: pd.Series | None = None,
    spark: SparkSession | None = None,
    master: str = "local[*]",
    partitions: int | None = None,
    scratch_dir: str | os.PathLike[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scores and the long SHAP table of a FeatureFrame, computed as a Spark job.

    The same result as :func:`pes_ml.score.score_features` (same columns, dtypes,
    values and row order), with the predictions and exact SHAP values computed by
    Spark tasks over partitions of accounts; the tasks write their rows as Parquet parts
    under ``scratch_dir``, which the driver reads back for the drift check, change
    attribution and the run store.

    Parameters
    ----------
    features
        The FeatureFrame at one as_of (one row per account).
    model
        The registered model.
    model_name, model_version, run_id, top_reasons, names
        As for :func:`pes_ml.score.score_features` (``names`` is broadcast to the tasks).
    spark
        The Spark session; default: :func:`pes_ml.engine.spark_session` on ``master``.
    master
        Spark master URL when no session is given.
    partitions
        Number of partitions; default: at least the default parallelism, and one per
        :data:`ROWS_PER_PARTITION` accounts.
    scratch_dir
        Where the executors write their result parts for the driver to read (removed
        afterwards); on a cluster, a folder that the driver and executors share.
        Default: the system's temporary folder.

    Returns
    -------
    scores, reasons
        As :func:`pes_ml.score.score_features` returns them.

    Examples
    --------
    >>> scores, reasons = score_features_spark(features, model, model_name="pes",  # doctest: +SKIP
    ...     model_version="3", run_id=new_run_id())
    """
    from pes_ml.engine import spark_session

    spark = spark or spark_session(master)
    started = time.perf_counter()
    result, score_dtypes, reason_dtypes = score_features_spark_frames(
        spark,
        features,
        model,
        model_name=model_name,
        model_version=model_version,
        run_id=run_id,
        top_reasons=top_reasons,
        names=names,
        partitions=partitions,
    )
    scratch = Path(tempfile.mkdtemp(prefix="pes_ml-score-", dir=scratch_dir))
    try:
        # Executors write their rows as Parquet parts; the driver reads them with Arrow. Collecting
        # through the JVM driver instead (toArrow) holds the whole long SHAP table there at once
        # (100k accounts x 2 models x ~60 features) and exceeds spark.driver.maxResultSize.
        spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        result.write.partitionBy(KIND).mode("overwrite").parquet(str(scratch / "result"))
        scores = _read_kind(scratch / "result", SCORE_KIND, score_dtypes)
        reasons = _read_kind(scratch / "result", REASON_KIND, reason_dtypes)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    scores, reasons = _ordered(scores, reasons, features, model)
    logger.info(
        "Spark scoring: %d accounts, %d reason rows in %.1f s",
        len(scores),
        len(reasons),
        time.perf_counter() - started,
    )
    return scores, reasons


__all__ = ["KIND", "score_features_spark", "score_features_spark_frames"]
