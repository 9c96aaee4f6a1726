"""Leakage on fuzzed inputs, end to end: CSV text -> ``ingest`` -> clean Parquet -> ``compute_features``.

tests/features/test_leakage.py proves the property on typed frames; this adds what
ingest brings: unicode ids and event names (RTL, emoji), timestamps with offsets,
naive timestamps and an event exactly at as_of. Two loads that share every event
before as_of and differ in every event at or after it give identical features.
"""

from __future__ import annotations

import csv
import tempfile
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pes_ml.config import PesConfig, parse_config
from pes_ml.engine import ibis_backend
from pes_ml.features import compute_features
from pes_ml.features.inputs import FeatureTables
from pes_ml.ingest import clean_paths, ingest

AS_OF = pd.Timestamp("2024-06-01", tz="UTC")

ids = st.sampled_from(["a1", "a2", "مرحبا", "🚀", "42", "a\u200fb"])
events = st.text(
    alphabet=st.characters(exclude_characters="\x00", exclude_categories=("Cs", "Cc")), min_size=1, max_size=8
).filter(lambda s: s.strip() and s.strip().lower() not in ("null", "none", "nan", "n/a"))
values = st.one_of(st.just(""), st.floats(min_value=0, max_value=1e6).map(repr))
# Seconds before (negative) or at/after (>= 0) as_of, written with a random offset or naive.
offsets = st.sampled_from(["Z", "+05:30", "-08:00", ""])


def _stamp(seconds: int, offset: str) -> str:
    """The instant ``as_of + seconds`` as text: naive (read as UTC), with Z, or in another offset."""
    instant = AS_OF + pd.Timedelta(seconds=seconds)
    if offset in ("", "Z"):
        return instant.tz_localize(None).isoformat() + offset
    sign = 1 if offset[0] == "+" else -1
    hours, minutes = (int(p) for p in offset[1:].split(":"))
    zone = timezone(sign * timedelta(hours=hours, minutes=minutes))
    return instant.to_pydatetime().astimezone(zone).isoformat()


def _rows(seconds: st.SearchStrategy[int]) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    return st.lists(st.tuples(ids, events, seconds, offsets, values), max_size=12)


PAST = _rows(st.integers(min_value=-120 * 86_400, max_value=-1)).filter(bool)
FUTURE = _rows(st.integers(min_value=0, max_value=60 * 86_400))


def _load(folder: Path, rows: list[tuple[Any, ...]]) -> PesConfig:
    folder.mkdir(parents=True)
    path = folder / "events.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_ALL)
        writer.writerow(["account_id", "event", "timestamp", "value"])
        writer.writerows((a, e, _stamp(s, o), v) for a, e, s, o, v in rows)
    config = parse_config(
        {"work_dir": str(folder / "work"), "sources": {"events": {"path": str(path), "delimiter": ","}}}
    )
    ingest(config)
    return config


@pytest.fixture(scope="module")
def backend() -> Any:
    return ibis_backend(parse_config({"sources": {"events": {"path": "unused"}}}))


# slow: one run failed and hypothesis spent >5 min shrinking it (seed in the handover report);
# a rerun with that seed passed. Kept in CI (which runs slow tests) until the cause is known.
@pytest.mark.slow
@settings(max_examples=15, deadline=None)
@given(past=PAST, future_a=FUTURE, future_b=FUTURE)
def test_ingested_events_at_or_after_as_of_never_change_a_feature(
    backend: Any,
    past: list[tuple[Any, ...]],
    future_a: list[tuple[Any, ...]],
    future_b: list[tuple[Any, ...]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        results = []
        for name, future in (("a", future_a), ("b", future_b)):
            config = _load(Path(tmp) / name, past + future)
            tables = FeatureTables.from_paths(backend, {"events": clean_paths(config)["events"]})
            results.append(compute_features(tables, [AS_OF], mode="activity"))
        with_a, with_b = results
        pd.testing.assert_frame_equal(with_a, with_b, rtol=1e-12)
        assert with_a.attrs["event_types"] == with_b.attrs["event_types"]
        assert with_a.attrs["core_events"] == with_b.attrs["core_events"]
