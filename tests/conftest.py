"""Fixtures shared by the whole suite.

Tests that need ../shared/data use the ``shared_data`` fixture: it skips with a
reason when the folder is absent (a user's fresh clone) and CI, which has the
folder, runs them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PES_SHARED_DATA", ROOT.parent / "shared" / "data"))

# Set before any test imports lightgbm/mlflow/pyspark.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of public datasets beside the checkout; skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATA} (they sit beside the checkout in CI)")
    return SHARED_DATA


@pytest.fixture
def seed() -> int:
    """The seed for tests with randomness: tests must pass for any seed."""
    return int(os.environ.get("PES_TEST_SEED", "7"))


@pytest.fixture(scope="session")
def postgres_server():  # type: ignore[no-untyped-def]
    """A throwaway PostgreSQL server for the session (see tests/postgres.py); skip without binaries.

    Use ``postgres_server.url(postgres_server.create_database())`` for an isolated database.
    """
    from postgres import find_pg_bin, start_postgres, stop_postgres

    bin_dir = find_pg_bin()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL binaries not found (looked in $PES_PG_BIN, /usr/lib/postgresql/*/bin and PATH); "
            "install the Debian package postgresql (CI does)"
        )
    server = start_postgres(bin_dir)
    yield server
    stop_postgres(server)
