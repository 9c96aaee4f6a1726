"""Instants a user gives (as_of dates, the end of the data), read one strict way.

A string must be ISO 8601: a date (``2024-06-01``, read as UTC midnight) or an
instant (``2024-06-01T12:30:00Z``, ``2024-06-01 12:30:00+02:00``; without an
offset, UTC). ``01/06/2024`` is refused rather than guessed (the 1st of June or
the 6th of January?), and so are words such as ``now`` and epoch numbers.
Dates, datetimes, pandas Timestamps and numpy datetime64 values are taken as they
are. Every instant must lie in the range pandas holds in nanoseconds.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import TypeAlias

import numpy as np
import pandas as pd

from pes_ml.errors import DataContractError

AsOfLike: TypeAlias = str | date | datetime | pd.Timestamp | np.datetime64
"""One as_of: an ISO 8601 string, a date (UTC midnight), or an instant (naive = UTC)."""

EXPECTED = "a date like 2024-06-01 or an ISO 8601 instant like 2024-06-01T12:30:00Z"


def to_utc(value: object, name: str = "as_of") -> pd.Timestamp:
    """One instant as a tz-aware UTC Timestamp; naive values and dates are read as UTC.

    Parameters
    ----------
    value
        See the module docstring.
    name
        What the value is, for the error message (``as_of``, ``labels.data_end``...).

    Raises
    ------
    DataContractError
        If ``value`` is missing, not ISO 8601, or outside 1677-09-22 .. 2262-04-11.
    """
    given = value
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise DataContractError(f"{name} must be {EXPECTED}. Got {value!r} instead.") from None
    elif not isinstance(value, date | np.datetime64):  # datetimes and Timestamps are dates too
        raise DataContractError(f"{name} must be {EXPECTED}. Got {value!r} ({type(value).__name__}) instead.")
    stamp = pd.Timestamp(value)
    if stamp is pd.NaT:
        raise DataContractError(f"{name} is missing (NaT). Give {EXPECTED}.")
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    if not pd.Timestamp.min.tz_localize("UTC") <= stamp <= pd.Timestamp.max.tz_localize("UTC"):
        raise DataContractError(
            f"{name} {given} is outside the instants pes_ml can hold (1677-09-22 .. 2262-04-11). "
            f"Give {EXPECTED} in that range."
        )
    return stamp
