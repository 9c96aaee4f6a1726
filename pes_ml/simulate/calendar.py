"""Calendar helpers of the simulator: month arithmetic for renewals, day-level activity effects."""

from __future__ import annotations

import numpy as np


def add_months(base: np.datetime64, day: np.ndarray, months: np.ndarray) -> np.ndarray:
    """Day index of ``base + day`` plus ``months`` calendar months (day of month clipped).

    Jan 31 + 1 month is Feb 28 (or 29); anniversaries are always counted from the
    anchor, so Jan 31 + 2 months is Mar 31.
    """
    dates = base + np.asarray(day, dtype=np.int64).astype("timedelta64[D]")
    month = dates.astype("datetime64[M]")
    dom = (dates - month.astype("datetime64[D]")).astype(np.int64)
    target = month + np.asarray(months, dtype=np.int64).astype("timedelta64[M]")
    first = target.astype("datetime64[D]")
    length = ((target + 1).astype("datetime64[D]") - first).astype(np.int64)
    out = first + np.minimum(dom, length - 1).astype("timedelta64[D]")
    return np.asarray((out - base).astype(np.int64))


def day_effects(base: np.datetime64, days: int) -> np.ndarray:
    """Log-odds added to every user's daily activity: quiet weekends and year-end holidays."""
    dates = base + np.arange(days).astype("timedelta64[D]")
    weekday = (dates.astype("datetime64[D]").view(np.int64) - 4) % 7  # 1970-01-01 was a Thursday
    effect = np.where(weekday >= 5, -2.0, 0.0)
    doy = (dates - dates.astype("datetime64[Y]").astype("datetime64[D]")).astype(np.int64)
    effect += np.where((doy >= 357) | (doy <= 0), -1.2, 0.0)  # Dec 24 .. Jan 1
    return effect
