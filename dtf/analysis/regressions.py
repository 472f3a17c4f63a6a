"""Regressions over a family of series: segment each, control the false discoveries, describe.

How this works. Each series is cut where its environment changes (those
boundaries are reported as refused comparisons, never tested) and every
stretch is segmented by ``dtf.analysis.changepoints.segment``. Every scan that
segmentation ran is one hypothesis; Benjamini-Hochberg over all of them, across
the whole family, decides which change points stand. A standing change point
becomes an alert when it moves the metric the bad way (either way for a
two-sided metric) by at least ``min_relative_change``, measured against the
neighbouring segments. Alerts are grouped by the commit range they fall in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from msgspec import Struct
from scipy.special import ndtr

from dtf.analysis.changepoints import SegmentTest, change_points, segment, split_statistics
from dtf.analysis.estimates import (
    cliffs_delta,
    hodges_lehmann_shift,
    median_interval,
    relative_change,
)
from dtf.analysis.fdr import benjamini_hochberg
from dtf.analysis.series import Kind, Series, kind_of, require_same_environment
from dtf.analysis.units import Direction
from dtf.errors import InvalidRequest


class Alert(Struct, frozen=True):
    """One change point of one series; indices are positions in that series."""

    metric: str
    labels: tuple[tuple[str, str], ...]
    direction: Direction
    kind: Kind
    unit: str
    change_index: int  # the first point after the change
    last_good_key: str  # commit/run label of the last point before it
    first_bad_key: str  # ... and of the first point after it
    before_median: float
    before_interval: tuple[float, float]  # 95 % distribution-free interval of the median
    before_count: int
    after_median: float
    after_interval: tuple[float, float]
    after_count: int
    shift: float  # Hodges-Lehmann estimate, in the metric's unit
    relative_change: float  # shift / |before median|
    effect_size: float  # Cliff's delta of after against before, in [-1, 1]
    p_value: float
    q_value: float  # Benjamini-Hochberg over every test of the family
    environment_fingerprint: str
    environment: tuple[tuple[str, str], ...]


class AlertGroup(Struct, frozen=True):
    """Alerts whose change falls between the same two commits or runs."""

    last_good_key: str
    first_bad_key: str
    alerts: tuple[Alert, ...]


class EnvironmentChange(Struct, frozen=True):
    """A point where a series' environment changed, so before and after were not compared."""

    metric: str
    labels: tuple[tuple[str, str], ...]
    index: int
    last_key: str
    first_key: str
    differences: tuple[str, ...]


class RegressionReport(Struct, frozen=True):
    alerts: tuple[Alert, ...]
    groups: tuple[AlertGroup, ...]
    refused: tuple[EnvironmentChange, ...]
    tests: int  # hypotheses in the family Benjamini-Hochberg controlled


@dataclass(frozen=True)
class StretchTests:
    series: Series
    start: int
    end: int
    tests: list[SegmentTest]


def detect_regressions(
    family: Sequence[Series],
    *,
    min_relative_change: float = 0.02,
    fdr: float = 0.05,
    min_segment: int = 5,
    max_change_points: int = 8,
    include_improvements: bool = False,
) -> RegressionReport:
    """Change points of every series that survive BH at ``fdr`` and are large enough."""
    stretches = [
        StretchTests(
            series,
            start,
            end,
            segment_stretch(series, start, end, min_segment, fdr, max_change_points),
        )
        for series in family
        for start, end in series.environment_runs()
    ]
    p_values = [test.split.p_value for stretch in stretches for test in stretch.tests]
    q_values = iter(benjamini_hochberg(p_values))
    alerts = []
    for stretch in stretches:
        bounds = [
            stretch.start,
            *(stretch.start + i for i in change_points(stretch.tests)),
            stretch.end,
        ]
        for test in stretch.tests:
            q = float(next(q_values))
            if not test.is_split or q > fdr:
                continue
            index = stretch.start + test.split.index
            before_start, after_end = (
                bounds[bounds.index(index) - 1],
                bounds[bounds.index(index) + 1],
            )
            alert = describe(stretch.series, before_start, index, after_end, test.split.p_value, q)
            wanted = include_improvements or alert.kind is not Kind.IMPROVEMENT
            if wanted and abs(alert.relative_change) >= min_relative_change:
                alerts.append(alert)
    return RegressionReport(
        alerts=tuple(alerts),
        groups=tuple(group_by_commit_range(alerts)),
        refused=tuple(change for series in family for change in environment_changes(series)),
        tests=len(p_values),
    )


def segment_stretch(
    series: Series, start: int, end: int, min_segment: int, threshold: float, max_change_points: int
) -> list[SegmentTest]:
    return segment(
        series.values[start:end],
        min_size=min_segment,
        threshold=threshold,
        max_change_points=max_change_points,
    )


def describe(
    series: Series, start: int, index: int, end: int, p_value: float, q_value: float
) -> Alert:
    """Before ``[start, index)`` against after ``[index, end)``; refuses mixed environments."""
    for position in (start, index, end - 1):
        require_same_environment(series.environments[start], series.environments[position])
    before, after = series.values[start:index], series.values[index:end]
    shift = hodges_lehmann_shift(before, after)
    before_median = float(np.median(before))
    environment = series.environments[index]
    return Alert(
        metric=series.metric,
        labels=series.labels,
        direction=series.direction,
        kind=kind_of(series.direction, shift),
        unit=series.unit,
        change_index=index,
        last_good_key=series.order_keys[index - 1],
        first_bad_key=series.order_keys[index],
        before_median=before_median,
        before_interval=median_interval(before),
        before_count=len(before),
        after_median=float(np.median(after)),
        after_interval=median_interval(after),
        after_count=len(after),
        shift=shift,
        relative_change=relative_change(shift, before_median),
        effect_size=cliffs_delta(before, after),
        p_value=p_value,
        q_value=q_value,
        environment_fingerprint=environment.fingerprint,
        environment=environment.fields,
    )


def describe_change(series: Series, index: int, *, start: int = 0, end: int | None = None) -> Alert:
    """Compare the points before ``index`` with those from it on, at a split chosen by the caller.

    The p-value is the two-sided Mann-Whitney test of that one split (no scan,
    no family). Raises ``EnvironmentMismatch`` when the points come from more
    than one environment, naming what differs.
    """
    stop = len(series) if end is None else end
    if not 0 <= start < index < stop <= len(series):
        raise InvalidRequest(
            f"split {index} of {series.metric!r} needs points on both sides within "
            f"[{start}, {stop}) of a series of {len(series)}; pick an index inside the series",
            field="index",
        )
    for position in range(start, stop):
        require_same_environment(series.environments[start], series.environments[position])
    z = split_statistics(series.values[start:stop], index - start, index - start)[0]
    p_value = min(1.0, 2.0 * float(ndtr(-abs(z))))
    return describe(series, start, index, stop, p_value, p_value)


def environment_changes(series: Series) -> list[EnvironmentChange]:
    return [
        EnvironmentChange(
            metric=series.metric,
            labels=series.labels,
            index=start,
            last_key=series.order_keys[start - 1],
            first_key=series.order_keys[start],
            differences=tuple(
                series.environments[start - 1].differences(series.environments[start])
            ),
        )
        for start, _ in series.environment_runs()[1:]
    ]


def group_by_commit_range(alerts: Sequence[Alert]) -> list[AlertGroup]:
    """One group per (last good, first bad) pair, worst relative change first within each."""
    groups: dict[tuple[str, str], list[Alert]] = {}
    for alert in alerts:
        groups.setdefault((alert.last_good_key, alert.first_bad_key), []).append(alert)
    return [
        AlertGroup(last, first, tuple(sorted(members, key=lambda a: -abs(a.relative_change))))
        for (last, first), members in groups.items()
    ]
