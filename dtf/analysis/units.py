"""What a metric's name says: its unit, and which way is worse.

``latency_ms_p90`` is in ms and lower is better; ``matrices_per_s`` is 1/s and
higher is better; a name that says neither (``loss_scale``) is two-sided: a
change either way is news. A trailing statistic (median, p90, ...) is looked
past, since the unit sits before it. One set of rules for the whole project:
the store labels samples with it and the detectors read it.
"""

from __future__ import annotations

import enum

STATISTIC_SUFFIXES = ("median", "mean", "avg", "min", "max", "std", "stddev")
UNIT_SUFFIXES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("per_s", "per_sec", "per_second"), "1/s"),
    (("ms",), "ms"),
    (("us",), "us"),
    (("ns",), "ns"),
    (("s", "sec", "seconds"), "s"),
    (("gflops",), "GFLOP/s"),
    (("mb",), "MB"),
    (("gb",), "GB"),
    (("bytes",), "B"),
    (("pct", "percent"), "%"),
)
LOWER_IS_BETTER_WORDS = ("latency", "time", "duration", "memory")
LOWER_IS_BETTER_UNITS = frozenset({"ms", "us", "ns", "s", "MB", "GB", "B"})
HIGHER_IS_BETTER_WORDS = ("throughput", "fps", "accuracy", "qps", "speedup", "bandwidth")
HIGHER_IS_BETTER_UNITS = frozenset({"1/s", "GFLOP/s"})
# Units in which "improved" reads as "faster" and "regressed" as "slower".
SPEED_UNITS = frozenset({"ms", "us", "ns", "s", "1/s", "GFLOP/s"})


class Direction(enum.StrEnum):
    LOWER_IS_BETTER = "lower_is_better"
    HIGHER_IS_BETTER = "higher_is_better"
    TWO_SIDED = "two_sided"


def metric_unit(name: str) -> str:
    """The unit a metric's name states, e.g. ``latency_ms_p90`` -> ``ms``, ``matrices_per_s`` -> ``1/s``."""
    stem = _without_statistic(name.lower())
    for suffixes, unit in UNIT_SUFFIXES:
        if any(stem == s or stem.endswith("_" + s) for s in suffixes):
            return unit
    return ""


def metric_direction(name: str) -> Direction:
    """Which way is worse for a metric, from its name; unknown names are two-sided."""
    stem, unit = _without_statistic(name.lower()), metric_unit(name)
    if unit in HIGHER_IS_BETTER_UNITS or any(word in stem for word in HIGHER_IS_BETTER_WORDS):
        return Direction.HIGHER_IS_BETTER
    if unit in LOWER_IS_BETTER_UNITS or any(word in stem for word in LOWER_IS_BETTER_WORDS):
        return Direction.LOWER_IS_BETTER
    return Direction.TWO_SIDED


def _without_statistic(name: str) -> str:
    """``latency_ms_p90`` -> ``latency_ms``: the unit sits before a statistic's name."""
    head, _, last = name.rpartition("_")
    is_percentile = last[:1] == "p" and last[1:].isdigit()
    if head and (last in STATISTIC_SUFFIXES or is_percentile):
        return head
    return name
