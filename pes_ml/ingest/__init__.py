"""Ingest: read the sources, map them onto the data contract, validate, quarantine, reconcile.

Public API::

    from pes_ml.ingest import ingest, clean_paths, Reconciliation

    recon = ingest(config)            # writes <work_dir>/clean/*.parquet and quarantine/*.parquet
    recon.balanced                    # read = loaded + quarantined + deduplicated, per table and reason
    events = clean_paths(config)["events"]

Modules: :mod:`~pes_ml.ingest.readers` (formats), :mod:`~pes_ml.ingest.mapping`
(column mapping and casts), :mod:`~pes_ml.ingest.validate` (checks, in priority
order), :mod:`~pes_ml.ingest.quarantine` (atomic Parquet writes),
:mod:`~pes_ml.ingest.reconcile` (counts), :mod:`~pes_ml.ingest.load` (the stage).
"""

from __future__ import annotations

from pes_ml.ingest.load import (
    clean_paths,
    ingest,
    ingest_needed,
    quarantine_paths,
    reconciliation_path,
    unreadable_clean_table,
    work_dir_lock,
)
from pes_ml.ingest.reconcile import ReasonCount, Reconciliation, TableCount

__all__ = [
    "ReasonCount",
    "Reconciliation",
    "TableCount",
    "clean_paths",
    "ingest",
    "ingest_needed",
    "quarantine_paths",
    "reconciliation_path",
    "unreadable_clean_table",
    "work_dir_lock",
]
