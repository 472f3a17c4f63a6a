"""The check at ingest: has the newest stretch of a series stepped away from its past?

How this works. When a result arrives, spikes are set aside first: a point
more than five robust standard deviations from the baseline and from the median
of the eight points around it (``dtf.analysis.changepoints.spikes``; a step with
three points after it is not a spike). A spike costs a rank test more than one
point: every point after a step ranks below it, as if the step were smaller.
Then the last ``max_recent`` points are compared with up to ``baseline_size``
points before them by the rank scan of ``dtf.analysis.changepoints``,
restricted to splits that leave at least ``min_recent`` points after and only in
the bad direction of the metric (two-sided when the direction is unknown); the
best split's p-value, corrected for the splits scanned, decides whether a step
is there. A detection must also be large (``min_relative_change``, measured
without the spikes) and, in ``online_checks``, survive Benjamini-Hochberg over
every series checked in the same ingest.

Where the step is, is a second question with less evidence at first. The step is
dated by ``locate``: the split most likely to lie within ``dating_tolerance`` of
the step, rather than the single most likely split, which a few points running
high next to a small step pull away. A step first seen is dated among the newest
``dating_span`` splits; each later check that sees it again re-dates it from the
same first split on, with more points after them (``dating_start``). A 3 % step
at 3 % noise is at the limit of dating: with 20 to 30 points after it, about one
in seven is dated more than five points off even knowing the step is there.

What a check may let through. The scan's p-value over the newest splits is
conservative: stationary series reach ``alpha`` = 0.01 at a third of the checks
that level implies (0.0033 of them over the newest splits of 170 points).
Benjamini-Hochberg counts a series whose step is still open as a discovery at
each check, so while many steps are open it lets more through; ``alpha`` is then
the bound that holds stationary series back. Neither has room to spare: on
bench/analysis.py's series (3 % noise, seeds other than the bench's), exact scan
p-values (Siegmund's discrete form) found three to four more 3 % steps in a
hundred within 20 results but let two to five times as many false alerts through
on stationary series; with them, leaving open steps out of Benjamini-Hochberg
removed those false alerts but missed one 3 % step in six more.

A step keeps being detected at every later check until the baseline has moved
past it; ``merge_detections`` folds those repeats into the first detection.
Only points measured in the newest point's environment take part.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import msgspec
import numpy as np
from msgspec import Struct

from dtf.analysis.changepoints import Side, locate, robust_spread, scan, spikes
from dtf.analysis.estimates import hodges_lehmann_shift, relative_change
from dtf.analysis.fdr import benjamini_hochberg
from dtf.analysis.series import FloatArray, Kind, Series, kind_of
from dtf.analysis.units import Direction

SIDE_OF_REGRESSION = {
    Direction.LOWER_IS_BETTER: Side.GREATER,
    Direction.HIGHER_IS_BETTER: Side.LESS,
    Direction.TWO_SIDED: Side.TWO_SIDED,
}


@dataclass(frozen=True)
class OnlineSettings:
    baseline_size: int = 200
    min_baseline: int = 10
    min_recent: int = 3
    max_recent: int = 20
    dating_span: int = 25  # a step first seen is dated among this many newest splits
    alpha: float = 0.01  # per-check bound on the scan-corrected p-value
    min_relative_change: float = 0.02
    dating_tolerance: int = 5  # ``locate`` aims within this many points of the step
    merge_gap: int = 20  # checks without a detection after which a step is seen anew


DEFAULT_SETTINGS = OnlineSettings()


class Detection(Struct, frozen=True):
    """A step seen at ingest. Indices are positions in the series checked."""

    metric: str
    labels: tuple[tuple[str, str], ...]
    direction: Direction
    kind: Kind
    change_index: int  # the first point after the step
    checked_index: int  # the newest point when the step was first seen
    last_good_key: str
    first_bad_key: str
    before_median: float
    after_median: float
    shift: float  # Hodges-Lehmann, in the metric's unit
    relative_change: float
    p_value: float  # corrected for the splits scanned
    q_value: float  # Benjamini-Hochberg over the series checked together
    environment_fingerprint: str
    seen_until_index: int = -1  # the newest point at which the step was still seen
    times_seen: int = 1


SeriesId = tuple[str, tuple[tuple[str, str], ...]]


def series_id(found: Series | Detection) -> SeriesId:
    """What names a series in a family: its metric and labels."""
    return (found.metric, found.labels)


def online_check(
    series: Series, settings: OnlineSettings = DEFAULT_SETTINGS, opened: Detection | None = None
) -> Detection | None:
    """Check one series on its own (a family of one): a detection or ``None``."""
    opened_steps = {series_id(series): opened} if opened is not None else {}
    return next(
        iter(online_checks([series], fdr=1.0, settings=settings, opened=opened_steps)), None
    )


def online_checks(
    family: Sequence[Series],
    *,
    fdr: float = 0.05,
    settings: OnlineSettings = DEFAULT_SETTINGS,
    opened: Mapping[SeriesId, Detection] | None = None,
) -> list[Detection]:
    """Check every series of one ingest; keep detections that survive BH at ``fdr``.

    ``opened`` holds the step each series was last seen with (merged, as
    ``merge_detections`` leaves it); a series with an open step dates a repeat of
    it over the same splits as its first detection, now with more points after.
    """
    open_steps = opened or {}
    candidates = [
        candidate(series, settings, open_steps.get(series_id(series))) for series in family
    ]
    tested = [found for found in candidates if found is not None]
    q_values = benjamini_hochberg([found.p_value for found in tested])
    return [
        msgspec.structs.replace(found, q_value=float(q))
        for found, q in zip(tested, q_values, strict=True)
        if q <= fdr
        and found.p_value <= settings.alpha
        and abs(found.relative_change) >= settings.min_relative_change
        and found.kind is not Kind.IMPROVEMENT
    ]


def candidate(
    series: Series, settings: OnlineSettings, opened: Detection | None = None
) -> Detection | None:
    """The best recent split in the bad direction, whatever its p-value; ``None`` if too short.

    Spikes (``dtf.analysis.changepoints.spikes``) are set aside, from the test and
    from the medians and shift measured. The p-value is that of the best of the
    last ``max_recent`` splits; the dating comes from ``locate`` from
    ``dating_start`` on.
    """
    newest_run_start = series.environment_runs()[-1][0]
    window_start = max(newest_run_start, len(series) - settings.baseline_size - settings.max_recent)
    window = series.values[window_start:]
    first = max(settings.min_baseline, len(window) - settings.max_recent)
    dating_first = max(settings.min_baseline, dating_start(series, settings, opened) - window_start)
    centre, scale = robust_spread(window[:dating_first])
    kept_at = np.flatnonzero(~spikes(window, centre, scale))
    kept = window[kept_at]
    scan_first, locate_first = (int(i) for i in np.searchsorted(kept_at, [first, dating_first]))
    last = len(kept) - settings.min_recent
    if scan_first > last or locate_first < 1:
        return None
    side = SIDE_OF_REGRESSION[series.direction]
    split = scan(kept, first=scan_first, last=last, side=side)
    dated = locate(
        kept,
        first=min(locate_first, last),
        last=last,
        side=side,
        scale=scale,
        tolerance=settings.dating_tolerance,
    )
    return detection_at(series, window_start + int(kept_at[dated]), kept, dated, split.p_value)


def dating_start(series: Series, settings: OnlineSettings, opened: Detection | None) -> int:
    """The first split, as a position in ``series``, that a step seen now is dated from.

    The newest ``dating_span`` splits; but while a step is open (seen at most
    ``merge_gap`` checks ago in this environment), the splits its first detection
    was dated from, so that each repeat re-dates the step over the same splits
    with more points after them. A span that slid forward with each check would
    soon leave the step near its far edge, where ``locate`` dates late.
    """
    newest = len(series) - settings.dating_span
    if opened is None or opened.environment_fingerprint != series.environments[-1].fingerprint:
        return newest
    if not 0 < len(series) - 1 - opened.seen_until_index <= settings.merge_gap:
        return newest
    return min(newest, opened.checked_index + 1 - settings.dating_span)


def detection_at(
    series: Series, change_index: int, kept: FloatArray, dated: int, p_value: float
) -> Detection:
    """The step at ``change_index`` of the series, measured on the points ``kept`` (spikes
    set aside) before and from their position ``dated``."""
    before, after = kept[:dated], kept[dated:]
    shift = hodges_lehmann_shift(before, after)
    before_median = float(np.median(before))
    return Detection(
        metric=series.metric,
        labels=series.labels,
        direction=series.direction,
        kind=kind_of(series.direction, shift),
        change_index=change_index,
        checked_index=len(series) - 1,
        last_good_key=series.order_keys[change_index - 1],
        first_bad_key=series.order_keys[change_index],
        before_median=before_median,
        after_median=float(np.median(after)),
        shift=shift,
        relative_change=relative_change(shift, before_median),
        p_value=p_value,
        q_value=p_value,
        environment_fingerprint=series.environments[-1].fingerprint,
        seen_until_index=len(series) - 1,
    )


def is_repeat(
    earlier: Detection, later: Detection, settings: OnlineSettings = DEFAULT_SETTINGS
) -> bool:
    """Whether ``later`` sees the step ``earlier`` already reported.

    Same series, environment and kind, at most ``merge_gap`` checks after
    ``earlier`` was last seen, and dating a change among the splits ``earlier``
    was first dated from that was already there when ``earlier`` was last seen.
    A second step that comes while the first is still seen is folded into it;
    the retrospective segmenter tells them apart.
    """
    return (
        series_id(earlier) == series_id(later)
        and earlier.environment_fingerprint == later.environment_fingerprint
        and earlier.kind is later.kind
        and 0 < later.checked_index - earlier.seen_until_index <= settings.merge_gap
        and earlier.checked_index + 1 - settings.dating_span
        <= later.change_index
        <= earlier.seen_until_index
    )


def merge_detections(
    detections: Sequence[Detection], settings: OnlineSettings = DEFAULT_SETTINGS
) -> list[Detection]:
    """Fold repeated detections of one step into the first, in order of checking.

    The merged detection keeps when the step was first seen (``checked_index``)
    and takes its dating and values from the newest repeat, which dated the step
    over the same splits with more points after it (``online_checks`` with the
    open step); it counts how often and until when the step was seen.
    """
    merged: list[Detection] = []
    for detection in sorted(detections, key=lambda found: found.checked_index):
        for position in range(len(merged) - 1, -1, -1):
            if is_repeat(merged[position], detection, settings):
                merged[position] = folded(merged[position], detection)
                break
        else:
            merged.append(detection)
    return merged


def folded(merged: Detection, repeat: Detection) -> Detection:
    """Both as one: first seen when ``merged`` was, dated and measured as ``repeat`` was."""
    return msgspec.structs.replace(
        repeat,
        checked_index=merged.checked_index,
        seen_until_index=repeat.checked_index,
        times_seen=merged.times_seen + 1,
        q_value=min(merged.q_value, repeat.q_value),
    )
