"""Build the FeatureFrame: one row per (account_id, as_of) for every account present at as_of.

:func:`compute_features` takes Ibis relations (any backend) and as_of dates;
:func:`build_features` reads the clean tables of a config on the configured
engine. Both return the same typed frame, keyed by ``(account_id, as_of)``.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Literal

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pes_ml.atomic import write_file_atomically
from pes_ml.config import FeatureConfig, PesConfig
from pes_ml.engine import materialized, to_arrow
from pes_ml.errors import DataContractError
from pes_ml.features import definitions as d
from pes_ml.features import point_in_time as pit
from pes_ml.features.assemble import KEY, assemble
from pes_ml.features.catalog import CATALOG_VERSION
from pes_ml.features.classic_pes import add_classic_pes
from pes_ml.features.definitions import ACCOUNT_NUMBER
from pes_ml.features.finish import finish_features
from pes_ml.features.inputs import AsOfGrid, FeatureTables, J, as_of_grids
from pes_ml.instants import AsOfLike
from pes_ml.progress import NoProgress, Progress
from pes_ml.schemas import ACCOUNT_ID, AS_OF, EVENT

logger = logging.getLogger(__name__)

Mode = Literal["auto", "subscription", "activity"]


def _resolve_mode(tables: FeatureTables, mode: Mode) -> str:
    if mode != "auto":
        if mode == "subscription" and tables.subscriptions is None:
            raise DataContractError(
                "labels.mode is 'subscription' but no subscriptions table was given. "
                "Configure sources.subscriptions or set labels.mode: activity."
            )
        return mode
    if tables.subscriptions is None:
        return "activity"
    has_rows = int(to_arrow(tables.subscriptions.limit(1)).num_rows) > 0
    return "subscription" if has_rows else "activity"


def _core_events(
    user_days: ir.Table, present: ir.Table | None, grid: AsOfGrid, names: list[str], n: int
) -> list[str]:
    """The ``n`` event types used by the most users of the accounts present at the earliest as_of
    (``None``: all accounts), in the 90 days before it (ties by name)."""
    row = to_arrow(d.core_event_users(user_days, grid, present, names)).to_pylist()[0]
    users = {name: int(row[f"users_{k}"] or 0) for k, name in enumerate(names)}
    ranked = sorted((name for name in names if users[name] > 0), key=lambda name: (-users[name], name))
    return ranked[:n]


def _vocabulary(
    counts: dict[str, int],
    user_days: ir.Table,
    present: ir.Table | None,
    grid: AsOfGrid,
    config: FeatureConfig,
    names: list[str],
) -> dict[str, list[str]]:
    """Event types with their own count, and core events: from config, or from data before the first as_of.

    ``counts`` are the events per type in the 90 days before the first as_of (:func:`d.event_counts`).
    """
    first = grid.as_of[0].isoformat()
    seen = {name: n for name, n in counts.items() if n > 0}
    if config.event_types is not None:
        event_types = list(config.event_types)
    else:
        event_types = sorted(seen, key=lambda name: (-seen[name], name))[: config.top_event_types]
        if not event_types:
            logger.warning(
                "No events in the 90 days before the first as_of %s, where the per-event-type columns are "
                "chosen: this run has none at any of its as_of dates. Drop that as_of, or set "
                "features.event_types in the config.", first,
            )
    if config.core_events is not None:
        core = list(config.core_events)
    else:
        core = _core_events(user_days, present, grid, names, config.n_core_events)
        if not core:
            why = (
                "no user of the accounts present then has an event there (core events are the events most "
                "users use: is user_id mapped?)"
                if seen else "there are no events there"
            )
            logger.warning(
                "Core events are unknown for every as_of of this run: they are chosen in the 90 days before "
                "the first as_of %s, and %s. Adoption and core-event features are NaN. Set "
                "features.core_events in the config.", first, why,
            )
    logger.info("event types: %s; core events: %s", event_types, core)
    return {"event_types": event_types, "core_events": core}


def _present(mode: str, state: pa.Table, grid: AsOfGrid, horizon_days: int) -> pa.Table:
    """The (account_number, j) pairs of the snapshot (see :mod:`pes_ml.features.point_in_time`).

    ``state`` is the subscription state in subscription mode, the activity history in activity mode.
    """
    if mode == "subscription":
        return state.select(list(KEY)).filter(pc.greater(state["active_now"], 0))
    # Activity mode: an event in [as_of - horizon, as_of).
    day_of_as_of = np.asarray(grid.days, dtype=np.int64)[state[J].to_numpy()]
    recent = state["last_day"].to_numpy() >= day_of_as_of - horizon_days
    return state.select(list(KEY)).filter(pa.array(recent))


def _grid_features(
    tables: FeatureTables,
    grid: AsOfGrid,
    mode: str,
    config: FeatureConfig,
    horizon_days: int,
    vocabulary: dict[str, list[str]],
) -> pd.DataFrame:
    events = d.events_before(tables.events, grid)
    counted = to_arrow(d.event_counts(events, grid))
    counts = {str(name): int(n) for name, n in zip(counted[EVENT].to_pylist(), counted[d.N].to_pylist(),
                                                      strict=True)}
    names = sorted(counts)  # the bit order: by code point, the byte order both engines sort by
    with ExitStack() as stack:
        user_days = stack.enter_context(materialized(d.user_days(events, names)))
        if "event_types" not in vocabulary:
            present = None
            if mode == "subscription" and tables.subscriptions is not None:
                present = pit.subscribed_accounts(tables.subscriptions, grid.as_of[0].to_pydatetime())
            vocabulary.update(_vocabulary(counts, user_days, present, grid, config, names))
        event_types, core = vocabulary["event_types"], vocabulary["core_events"]
        numbers = stack.enter_context(materialized(d.account_numbers(events, tables.subscriptions)))
        account_days = stack.enter_context(
            materialized(d.account_days(events, numbers, event_types, core, names))
        )
        first_days = stack.enter_context(materialized(d.user_first_days(user_days, numbers)))
        numbered_days = stack.enter_context(
            materialized(d.numbered_user_days(user_days, first_days, core, names))
        )
        max_users = int(to_arrow(d.most_users(first_days))["users"][0].as_py())
        max_events = int(to_arrow(d.busiest_day(account_days))["events"][0].as_py())
        activity, new_users = pit.history_aggregates(account_days, first_days, len(core), grid)
        windows = [  # the user counts first: the largest query runs beside the fewest placed columns
            # (52 weekly as_of dates at 10M events: peak RSS ~4.3 -> ~3.9 GB; 12 monthly: ~1.68 -> ~1.56 GB)
            d.user_aggregates(numbered_days, first_days, grid, max_users, len(core)),
            d.recent_event_aggregates(account_days, grid, len(event_types), len(core), max_events),
            d.quarter_event_aggregates(account_days, grid, max_events),
        ]
        states = {"activity": activity, "new_users": new_users}
        lookups = {}
        if tables.subscriptions is not None:
            subscriptions = stack.enter_context(
                materialized(pit.numbered_subscriptions(d.numbered(tables.subscriptions, numbers)))
            )
            states["subscriptions"] = pit.subscription_state(subscriptions, grid)
            lookups[pit.MAIN_SUBSCRIPTION] = to_arrow(pit.subscription_contracts(subscriptions))
        per_account = [pit.account_first_days(account_days, len(core))]
        if tables.accounts is not None:
            per_account.append(pit.account_attributes(d.numbered(tables.accounts, numbers)))
        accounts = numbers
        for columns in per_account:
            accounts = accounts.left_join(columns, ACCOUNT_NUMBER).select(~ibis.selectors.endswith("_right"))
        # Presence first; then every other part is collected only when the assembly reaches it,
        # so one part at a time is held beside the frame (12 as_of dates at 10M events: ~0.5 GiB
        # less at the peak than collecting them all first).
        presence = "subscriptions" if mode == "subscription" else "activity"
        collected = {presence: to_arrow(states[presence])}
        present = _present(mode, collected[presence], grid, horizon_days)
        raw = assemble(
            present,
            (to_arrow(part) for part in windows),
            (collected.pop(name) if name in collected else to_arrow(part) for name, part in states.items()),
            to_arrow(accounts),
            grid,
            lookups,
        )
    return finish_features(raw, grid, event_types, core, horizon_days)


@contextmanager
def _small_pages() -> Iterator[None]:
    """Turn off numpy's request for transparent huge pages for the block; restore it after.

    numpy asks Linux for 2 MiB pages (``madvise``) for arrays of 4 MiB and more. On a
    virtual machine that hands freed memory back to its host, every fresh huge page is a
    fault to the host: filling 2 GiB of new arrays took 4.7 s with them and 0.9 s without
    on the benchmark machine, and the 12-date feature run 8.2 s and 7.0 s (medians of
    three; assembly and finish build a million-row frame out of fresh arrays). Left alone
    when the user set ``NUMPY_MADVISE_HUGEPAGE`` (numpy's own switch), or when numpy lacks
    the toggle. The setting is process-wide: builds overlapping in threads of one process
    may leave it off, which changes speed only, never a value.
    """
    toggle = getattr(importlib.import_module("numpy._core.multiarray"), "_set_madvise_hugepage", None)
    if toggle is None or "NUMPY_MADVISE_HUGEPAGE" in os.environ:
        yield
        return
    previous = toggle(False)
    try:
        yield
    finally:
        toggle(previous)


def compute_features(
    tables: FeatureTables,
    as_of_dates: Sequence[AsOfLike],
    feature_config: FeatureConfig | None = None,
    horizon_days: int = 90,
    *,
    mode: Mode = "auto",
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Compute every catalog feature for every account present at each as_of, in one pass.

    Parameters
    ----------
    tables
        The canonical tables as Ibis relations (:meth:`FeatureTables.from_relations`
        or :meth:`FeatureTables.from_paths`); their backend runs the computation.
    as_of_dates
        Snapshot instants; dates and naive values are UTC midnight.
    feature_config
        Top-N event types, core events and the classic PES form.
    horizon_days
        The label horizon: ``renewal_in_horizon``, and presence in activity mode.
    mode
        ``subscription`` (present = active subscription at as_of), ``activity``
        (present = an event in the horizon before as_of), or ``auto`` (subscription
        mode when a non-empty subscriptions table is given).
    progress
        Progress reporter.

    Returns
    -------
    pandas.DataFrame
        FeatureFrame sorted by (as_of, account_id): ``account_id`` (str), ``as_of``
        (UTC), the catalog features, per-event-type counts and the classic PES.
        ``attrs`` holds ``event_types``, ``core_events`` and ``catalog_version``.

    Raises
    ------
    DataContractError
        If no as_of is given or one is not a whole second.
    """
    config = feature_config or FeatureConfig()
    progress = progress or NoProgress()
    grids = sorted(as_of_grids(as_of_dates), key=lambda g: g.as_of[0])
    resolved = _resolve_mode(tables, mode)
    vocabulary: dict[str, list[str]] = {}
    frames = []
    progress.start("Computing features", total=len(grids))
    started = time.perf_counter()
    with _small_pages():
        for grid in grids:
            frames.append(_grid_features(tables, grid, resolved, config, horizon_days, vocabulary))
            progress.advance()
        if len(frames) == 1:
            features = frames[0]  # already in (as_of, account_id) order (pes_ml.features.assemble)
        else:  # as_of dates at different times of day: grids interleave
            features = pd.concat(frames, ignore_index=True)
            features = features.sort_values([AS_OF, ACCOUNT_ID], ignore_index=True)
        features = add_classic_pes(features, config.pes_form)
    features.attrs.update(
        event_types=vocabulary.get("event_types", []),
        core_events=vocabulary.get("core_events", []),
        catalog_version=CATALOG_VERSION,
        mode=resolved,
    )
    logger.info(
        "features: %d rows (%d as_of, %s mode) in %.1f s",
        len(features), sum(len(g.as_of) for g in grids), resolved, time.perf_counter() - started,
    )
    return features


def build_features(
    config: PesConfig, as_of_dates: Sequence[AsOfLike], progress: Progress | None = None
) -> pd.DataFrame:
    """Read the clean tables of ``config`` and compute the FeatureFrame on ``config.engine``.

    Parameters
    ----------
    config
        The project config: work_dir (clean tables), engine, features, labels.
    as_of_dates
        Snapshot instants (str, date or datetime; naive values are UTC).
    progress
        Progress reporter (the CLI passes a progress bar).

    Returns
    -------
    pandas.DataFrame
        See :func:`compute_features`.

    Raises
    ------
    DataContractError
        If the clean events table is missing (run ``pes-ml validate`` first).
    ConfigError
        If DuckDB runs out of memory under ``duckdb_memory_limit``.

    Examples
    --------
    >>> config = load_config("pipelines/conf/base/pes.yaml")  # doctest: +SKIP
    >>> features = build_features(config, ["2024-06-01"])  # doctest: +SKIP
    """
    import duckdb

    from pes_ml.engine import ibis_backend, out_of_memory
    from pes_ml.ingest import clean_paths

    backend: Any = ibis_backend(config)
    tables = FeatureTables.from_paths(backend, clean_paths(config))
    try:
        return compute_features(
            tables, as_of_dates, config.features, config.labels.horizon_days,
            mode=config.labels.mode, progress=progress,
        )
    except duckdb.OutOfMemoryException as exc:
        raise out_of_memory(exc, "the feature computation", config) from exc


def write_features(features: pd.DataFrame, path: str | Path) -> Path:
    """Write a FeatureFrame as Parquet, atomically (all of it or, on failure, the old file as it was).

    Its ``attrs`` (event types, core events, catalog version, mode) go into the file's
    metadata; ``pandas.read_parquet`` gives them back.

    Raises
    ------
    StoreError
        If the file cannot be written (e.g. the disk is full).
    """
    path = Path(path)
    write_file_atomically(path, lambda fh: features.to_parquet(fh, index=False), f"the features to {path}")
    return path
