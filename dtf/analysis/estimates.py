"""What changed, in numbers: medians with distribution-free intervals, shift and effect size."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binom

from dtf.analysis.series import FloatArray

MAX_PAIRS = 250_000  # beyond this, the shift is estimated from evenly thinned samples


def median_interval(values: FloatArray, confidence: float = 0.95) -> tuple[float, float]:
    """An order-statistic confidence interval for the median; needs no distribution.

    Coverage is at least ``confidence`` (exact from the binomial), so small samples
    get wide intervals: under six points it is the whole range.
    """
    ordered = np.sort(values)
    size = len(ordered)
    lower_rank = int(binom.ppf((1.0 - confidence) / 2.0, size, 0.5))
    lower = max(lower_rank - 1, 0)
    upper = min(size - lower_rank, size - 1)
    if lower >= upper:
        return float(ordered[0]), float(ordered[-1])
    return float(ordered[lower]), float(ordered[upper])


def hodges_lehmann_shift(before: FloatArray, after: FloatArray) -> float:
    """Median of all after-minus-before differences: the robust size of a step."""
    before, after = thinned(before), thinned(after)
    return float(np.median(np.subtract.outer(after, before)))


def cliffs_delta(before: FloatArray, after: FloatArray) -> float:
    """P(after > before) - P(after < before), in [-1, 1]; the rank-biserial effect size."""
    before, after = thinned(before), thinned(after)
    differences = np.subtract.outer(after, before)
    return float(
        (np.count_nonzero(differences > 0) - np.count_nonzero(differences < 0)) / differences.size
    )


def thinned(values: FloatArray) -> FloatArray:
    """Every k-th point, so that a pairwise computation stays under ``MAX_PAIRS`` per side."""
    limit = math.isqrt(MAX_PAIRS)
    if len(values) <= limit:
        return values
    return values[:: math.ceil(len(values) / limit)]


def relative_change(shift: float, baseline: float) -> float:
    """``shift`` as a fraction of ``|baseline|``; infinite when a zero baseline moved."""
    if baseline == 0.0:
        return 0.0 if shift == 0.0 else math.copysign(math.inf, shift)
    return shift / abs(baseline)
