"""Helpers for ingest tests: small literal inputs and a config around them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pes_ml.config import PesConfig, parse_config
from pes_ml.ingest import clean_paths, quarantine_paths

MakeConfig = Callable[..., PesConfig]


@pytest.fixture
def make_config(tmp_path: Path) -> MakeConfig:
    """Build a PesConfig whose work_dir is inside tmp_path: ``make_config(events={...}, ...)``."""

    def build(**sources: Any) -> PesConfig:
        validation = sources.pop("validation", {})
        raw: dict[str, Any] = {"work_dir": str(tmp_path / "work"), "sources": sources}
        if validation:
            raw["validation"] = validation
        return parse_config(raw)

    return build


def read_clean(config: PesConfig, table: str = "events") -> pd.DataFrame:
    return pd.read_parquet(clean_paths(config)[table])


def read_quarantine(config: PesConfig, table: str = "events") -> pd.DataFrame:
    return pd.read_parquet(quarantine_paths(config)[table])


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
