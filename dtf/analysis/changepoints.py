"""Where a series changes: a rank scan over split points and binary segmentation.

How this works. For every candidate split of a stretch of values, the
Mann-Whitney statistic of "after" against "before" is standardised; the split
with the largest statistic (in the direction asked for) is the estimate of
where the change happened. Ranks make it robust: an outlier spike moves one rank,
not the mean. All splits come from one cumulative sum of the ranks, so a scan of
n points costs O(n log n).

The best of many splits is not as surprising as one fixed split, so its p-value
is corrected for the scan: the smaller of Bonferroni over the splits and the
Siegmund approximation for the maximum of a standardised Brownian bridge
(James, James & Siegmund 1987), never below the single-split p-value. Both are
analytic, so p-values stay accurate far into the tail, as a family-wide
Benjamini-Hochberg step over thousands of series needs; a permutation test
cannot reach p = 1e-6 at this speed.

``segment`` applies the scan by binary segmentation: test a stretch, and when
its best split is significant, record it and test both halves.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view
from scipy.special import ndtr

from dtf.analysis.series import FloatArray

BoolArray = npt.NDArray[np.bool_]

SPIKE_SCALES = 5.0  # how far from its neighbours a lone point is a spike, in robust SDs
SPIKE_REACH = 4  # neighbours on each side of a point that tell a spike from a step
CHANCE_MARGIN = 0.01  # ``locate``: chances of dating within tolerance this close count as equal
MAD_TO_SIGMA = 1.4826  # the median absolute deviation of a Gaussian, in standard deviations


class Side(enum.StrEnum):
    GREATER = "greater"  # the values after the split are higher
    LESS = "less"
    TWO_SIDED = "two_sided"


@dataclass(frozen=True)
class Split:
    """The best split of a stretch: ``index`` is the first point after the change."""

    index: int
    z: float  # standardised Mann-Whitney statistic; positive when "after" is higher
    p_value: float  # corrected for the scan over ``candidates`` splits
    raw_p_value: float  # as if this split had been the only one tested
    candidates: int


def split_statistics(values: FloatArray, first: int, last: int) -> FloatArray:
    """Standardised Mann-Whitney z of after-vs-before for splits ``first..last`` (inclusive).

    A split at ``t`` puts ``values[:t]`` before and ``values[t:]`` after. The
    variance carries the tie correction; a continuity correction of one half
    shrinks every statistic towards zero.
    """
    size = len(values)
    ranks, tie_counts = midranks(values)
    tie_term = float(np.sum(tie_counts**3 - tie_counts)) / (size * (size - 1))
    splits = np.arange(first, last + 1)
    after = size - splits
    rank_sum_after = ranks.sum() - np.cumsum(ranks)[splits - 1]
    u_after = rank_sum_after - after * (after + 1) / 2.0
    centred = u_after - splits * after / 2.0
    variance = splits * after / 12.0 * ((size + 1) - tie_term)
    shrunk = np.sign(centred) * np.maximum(np.abs(centred) - 0.5, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(variance > 0, shrunk / np.sqrt(variance), 0.0)
    return np.asarray(z, dtype=np.float64)


def midranks(values: FloatArray) -> tuple[FloatArray, FloatArray]:
    """1-based ranks, tied values sharing their mean rank, and the size of each tie group."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    is_first = np.concatenate(([True], ordered[1:] != ordered[:-1]))
    starts = np.flatnonzero(is_first)
    counts = np.diff(np.append(starts, len(values))).astype(np.float64)
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = (starts + (counts + 1.0) / 2.0)[np.cumsum(is_first) - 1]
    return ranks, counts


def scan(values: FloatArray, *, first: int, last: int, side: Side) -> Split:
    """The best split among ``first..last`` and its scan-corrected p-value."""
    z = split_statistics(values, first, last)
    oriented = {Side.GREATER: z, Side.LESS: -z, Side.TWO_SIDED: np.abs(z)}[side]
    best = int(np.argmax(oriented))
    statistic = float(oriented[best])
    sides = 2 if side is Side.TWO_SIDED else 1
    raw = min(1.0, sides * float(ndtr(-statistic)))
    candidates = last - first + 1
    size = len(values)
    siegmund = scan_tail(statistic, first / size, last / size) * sides / 2
    corrected = max(raw, min(1.0, raw * candidates, siegmund))
    return Split(first + best, float(z[best]), corrected, raw, candidates)


def robust_spread(values: FloatArray) -> tuple[float, float]:
    """The median of ``values`` and their robust standard deviation (the scaled MAD)."""
    centre = float(np.median(values))
    return centre, MAD_TO_SIGMA * float(np.median(np.abs(values - centre)))


def spikes(values: FloatArray, centre: float, scale: float) -> BoolArray:
    """Which points are lone outliers: more than ``SPIKE_SCALES`` robust standard deviations
    (``scale``) from ``centre`` and from the median of their neighbourhood.

    The neighbourhood is the ``SPIKE_REACH`` points on either side, mirrored at the ends
    of ``values``. A step is not a spike: once three points follow it, the neighbourhood of
    each of them has more points on their side of the step than on the other.
    """
    found = np.zeros(len(values), dtype=np.bool_)
    suspects = np.flatnonzero(np.abs(values - centre) > SPIKE_SCALES * scale)
    if scale <= 0.0 or suspects.size == 0 or len(values) <= SPIKE_REACH:
        return found
    mirrored = np.pad(values, SPIKE_REACH, mode="reflect")
    neighbourhoods = sliding_window_view(mirrored, 2 * SPIKE_REACH + 1)[suspects]
    local = np.median(neighbourhoods, axis=1)
    found[suspects[np.abs(values[suspects] - local) > SPIKE_SCALES * scale]] = True
    return found


def locate(
    values: FloatArray, *, first: int, last: int, side: Side, scale: float, tolerance: int
) -> int:
    """The split among ``first..last`` most likely to lie within ``tolerance`` of a step.

    Each split is weighed by its probability of being the one step in the mean of
    ``values`` (Gaussian with standard deviation ``scale``, both means free, only
    steps in ``side``, every split in the range equally likely beforehand). The
    chance that the step lies within ``tolerance`` of a split is the weight of the
    splits around it; among the splits whose chance is within ``CHANCE_MARGIN`` of
    the best, the answer is the most probable one. Where the weight is concentrated
    that is the most probable split itself; where it is spread, the middle of where
    most of it lies. The most probable split alone (the largest standardised CUSUM)
    dates a step of one noise SD more than five points off one time in five: each
    point next to the step that runs high by chance moves it. With ``scale`` zero
    (a baseline without spread) the most probable split is the answer.
    """
    size = len(values)
    splits = np.arange(first, last + 1)
    sums_before = np.cumsum(values)[splits - 1]
    cusum = (splits / size * float(values.sum()) - sums_before) / np.sqrt(
        splits * (size - splits) / size
    )
    oriented = {Side.GREATER: cusum, Side.LESS: -cusum, Side.TWO_SIDED: np.abs(cusum)}[side]
    if scale <= 0.0:
        return first + int(np.argmax(oriented))
    log_likelihood = np.maximum(oriented / scale, 0.0) ** 2 / 2.0
    probability = np.exp(log_likelihood - log_likelihood.max())
    probability /= probability.sum()
    cumulative = np.concatenate(([0.0], np.cumsum(probability)))
    centres = np.arange(len(splits))
    chance = (
        cumulative[np.minimum(centres + tolerance + 1, len(splits))]
        - cumulative[np.maximum(centres - tolerance, 0)]
    )
    near_best = chance >= chance.max() - CHANCE_MARGIN
    return first + int(np.argmax(np.where(near_best, probability, -1.0)))


def scan_tail(b: float, u0: float, u1: float) -> float:
    """P(max over u in [u0, u1] of |B(u)| / sqrt(u(1-u)) > b) for a Brownian bridge B.

    Siegmund's approximation, accurate for the large ``b`` that matter here;
    returns 1 where it does not apply (small ``b`` or a degenerate range).
    """
    if b < 1.5 or not 0.0 < u0 < u1 < 1.0:
        return 1.0
    density = math.exp(-b * b / 2.0) / math.sqrt(2.0 * math.pi)
    span = math.log(u1 * (1.0 - u0) / (u0 * (1.0 - u1)))
    return min(1.0, b * density * ((1.0 - 1.0 / b**2) * span + 4.0 / b**2))


@dataclass(frozen=True)
class SegmentTest:
    """One scan of the stretch ``[start, end)`` of a series; ``split.index`` is absolute."""

    start: int
    end: int
    split: Split
    is_split: bool  # significant at the segmentation threshold, so both halves were tested


def segment(
    values: FloatArray,
    *,
    min_size: int = 5,
    threshold: float = 0.05,
    max_change_points: int = 8,
) -> list[SegmentTest]:
    """Binary segmentation: every scan it ran, in order of the stretch's start.

    Stretches shorter than ``2 * min_size`` are not tested. A test that is not
    significant at ``threshold`` stops the descent there; tests are returned
    either way, since each is one hypothesis of the family a later false-discovery
    step must count.
    """
    tests: list[SegmentTest] = []
    pending = [(0, len(values))]
    while pending:
        start, end = pending.pop()
        if end - start < 2 * min_size:
            continue
        split = scan(
            values[start:end], first=min_size, last=end - start - min_size, side=Side.TWO_SIDED
        )
        split = Split(
            start + split.index, split.z, split.p_value, split.raw_p_value, split.candidates
        )
        splits_so_far = sum(test.is_split for test in tests)
        is_split = split.p_value <= threshold and splits_so_far < max_change_points
        tests.append(SegmentTest(start, end, split, is_split))
        if is_split:
            pending.extend([(split.index, end), (start, split.index)])
    return sorted(tests, key=lambda test: test.start)


def change_points(tests: list[SegmentTest]) -> list[int]:
    """The indices (first point after each change) that segmentation split at, in order."""
    return sorted(test.split.index for test in tests if test.is_split)
