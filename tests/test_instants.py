"""One strict reading of the instants users give: ISO 8601 strings, dates and datetimes, as UTC."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from pes_ml.errors import DataContractError
from pes_ml.features.inputs import as_of_grids
from pes_ml.instants import to_utc
from pes_ml.run_contract import as_of_key

JUNE_1 = pd.Timestamp("2024-06-01", tz="UTC")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-06-01", JUNE_1),
        (" 2024-06-01 ", JUNE_1),
        ("2024-06-01T12:30:00Z", JUNE_1 + pd.Timedelta(minutes=750)),
        ("2024-06-01 14:30:00+02:00", JUNE_1 + pd.Timedelta(minutes=750)),
        ("2024-06-01T12:30:00", JUNE_1 + pd.Timedelta(minutes=750)),  # no offset: UTC
        (date(2024, 6, 1), JUNE_1),
        (datetime(2024, 6, 1, 2, tzinfo=timezone(timedelta(hours=2))), JUNE_1),
        (np.datetime64("2024-06-01"), JUNE_1),
        (pd.Timestamp("2024-06-01"), JUNE_1),
    ],
)
def test_iso_strings_dates_and_datetimes_read_as_utc(value: object, expected: pd.Timestamp) -> None:
    assert to_utc(value) == expected
    assert str(to_utc(value).tz) == "UTC"


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("01/06/2024", "must be a date like 2024-06-01"),  # day or month first? not guessed
        ("now", "must be a date like"),
        ("1700000000", "must be a date like"),
        ("", "must be a date like"),
        ("2024-13-01", "must be a date like"),
        (1_700_000_000, "(int)"),
        (None, "(NoneType)"),
        (pd.NaT, "is missing"),
        ("2500-01-01", "outside the instants pes_ml can hold (1677-09-22 .. 2262-04-11)"),
        (datetime(9999, 12, 31), "outside the instants"),
    ],
)
def test_anything_else_is_a_data_contract_error_that_says_what_to_give(value: object, says: str) -> None:
    with pytest.raises(DataContractError) as caught:
        to_utc(value, "--as-of")
    assert says in str(caught.value)
    assert str(caught.value).startswith("--as-of")


def test_one_as_of_given_alone_is_one_date_not_its_characters() -> None:
    (grid,) = as_of_grids("2024-06-01")
    assert grid.as_of == (JUNE_1,)


def test_the_run_store_key_reads_as_of_the_same_way() -> None:
    assert as_of_key("2024-06-01") == as_of_key(date(2024, 6, 1)) == "2024-06-01"
    with pytest.raises(DataContractError, match="must be a date like 2024-06-01"):
        as_of_key("01/06/2024")
    with pytest.raises(DataContractError, match="midnight UTC"):
        as_of_key("2024-06-01T12:00:00Z")


@pytest.mark.parametrize("command", ["features", "score"])
def test_both_dated_commands_refuse_a_date_they_cannot_read_before_any_work(
    tmp_path, command: str
) -> None:
    from typer.testing import CliRunner

    from pes_ml.cli import app

    # The config does not exist: the date is checked first, and named as the option the user typed.
    args = [command, "--config", str(tmp_path / "nope.yaml"), "--as-of", "01/06/2024"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 3, result.output
    assert "--as-of must be a date like 2024-06-01" in " ".join(result.output.split())
