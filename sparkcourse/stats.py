"""Summary statistics for the course's repeated measurements (seeds, timing repeats)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable


def mean_sd(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1) of ``values``; the sd of a single value is 0.

    NaN rule: a NaN among the values makes both results NaN (a failed run is shown, not averaged away), and
    no values at all give ``(nan, nan)``.
    """
    vals = [float(v) for v in values]
    if not vals or any(math.isnan(v) for v in vals):
        return math.nan, math.nan
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)
