"""Compare two runs: per metric the change with a bootstrap interval and a verdict,
per test the pass rates.

How a metric verdict is reached (Chromium Pinpoint's scheme): the p-value is the
smaller of Mann-Whitney U and Kolmogorov-Smirnov on the raw samples.

- ``p <= low_threshold``: the runs differ; improved or regressed by the metric's
  direction (``changed`` when the direction is two-sided).
- ``p > high_threshold``: no change. Had the medians differed by
  ``min_relative_change``, a p-value this large would come up in fewer than
  ``1 - power`` of such comparisons.
- in between: unknown. ``more_repeats`` says how many more samples per side
  bring the high threshold down to the low one, so the next comparison decides.

The high threshold comes from the normal approximation of the U statistic under a
shift of ``min_relative_change`` times the baseline median, in units of the
pooled robust spread (MAD). With few samples it is 1: nothing short of a clear
difference is decided. With a zero baseline median and some spread the minimum
change is zero and the verdict is never "no change".

Test verdicts use Fisher's exact test on (failed, passed) counts per side.
"""

from __future__ import annotations

import enum
import math
import warnings
from collections.abc import Mapping, Sequence
from statistics import NormalDist

import msgspec
import numpy as np
from msgspec import Struct
from scipy import stats

from dtf.analysis.series import FloatArray
from dtf.analysis.units import SPEED_UNITS, Direction
from dtf.errors import InvalidRequest

STANDARD_NORMAL = NormalDist()
LOW_THRESHOLD = 0.01
POWER = 0.99
Z_POWER = STANDARD_NORMAL.inv_cdf(POWER)
BOOTSTRAP_RESAMPLES = 2000
MAX_REPEATS = 10_000
MAX_TEST_REPEATS = 200
BOOTSTRAP_CELLS_PER_BATCH = 1_000_000
MAD_TO_SIGMA = 1.4826
PASSING_OUTCOMES = frozenset({"passed", "xfailed", "xpassed"})
FAILING_OUTCOMES = frozenset({"failed", "error"})
IGNORED_OUTCOMES = frozenset({"skipped"})


class Verdict(enum.StrEnum):
    IMPROVED = "improved"
    REGRESSED = "regressed"
    CHANGED = "changed"
    NO_CHANGE = "no change"
    UNKNOWN = "unknown"


class Comparison(Struct, frozen=True):
    """One metric, run A against run B. ``change`` is ``median_b - median_a``;
    ``relative_change`` divides it by ``|median_a|`` (None when that is 0).
    Intervals are bootstrap percentile intervals at ``confidence``."""

    metric: str
    unit: str
    direction: Direction
    count_a: int
    count_b: int
    median_a: float
    median_b: float
    change: float
    change_interval: tuple[float, float]
    relative_change: float | None
    relative_interval: tuple[float, float] | None
    confidence: float
    mann_whitney_p: float
    ks_p: float
    p_value: float
    low_threshold: float
    high_threshold: float
    verdict: Verdict
    more_repeats: int | None
    summary: str


class TestVerdict(enum.StrEnum):
    __test__ = False

    NEWLY_FAILING = "newly failing"
    FIXED = "fixed"
    NO_CHANGE = "no change"
    UNKNOWN = "unknown"


class TestComparison(Struct, frozen=True):
    """One test node id, run A against run B; skipped attempts are not counted."""

    __test__ = False

    node_id: str
    passed_a: int
    failed_a: int
    passed_b: int
    failed_b: int
    p_value: float | None
    verdict: TestVerdict
    more_repeats: int | None
    summary: str


def compare_samples(
    a: FloatArray,
    b: FloatArray,
    *,
    direction: Direction,
    metric: str = "value",
    unit: str = "",
    confidence: float = 0.95,
    min_relative_change: float = 0.03,
    seed: int | np.random.Generator = 0,
) -> Comparison:
    """Compare the raw samples of one metric in run A (baseline) and run B."""
    a, b = _checked_samples(a, "A"), _checked_samples(b, "B")
    direction = Direction(direction)
    mann_whitney_p = float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    ks_p = _ks_p(a, b)
    p_value = min(mann_whitney_p, ks_p)
    effect = _standardised_min_effect(a, b, min_relative_change)
    high = high_threshold(effect, len(a), len(b))
    median_a, median_b = float(np.median(a)), float(np.median(b))
    verdict = _metric_verdict(p_value, high, median_b - median_a, direction)
    more = repeats_to_decide(effect, len(a), len(b)) if verdict is Verdict.UNKNOWN else None
    change_interval, relative_interval = _bootstrap_intervals(a, b, confidence, seed)
    relative = _relative(np.array([median_b - median_a]), np.array([median_a]))
    comparison = Comparison(
        metric=metric,
        unit=unit,
        direction=direction,
        count_a=len(a),
        count_b=len(b),
        median_a=median_a,
        median_b=median_b,
        change=median_b - median_a,
        change_interval=change_interval,
        relative_change=None if relative is None else float(relative[0]),
        relative_interval=None if relative is None else relative_interval,
        confidence=confidence,
        mann_whitney_p=mann_whitney_p,
        ks_p=ks_p,
        p_value=p_value,
        low_threshold=LOW_THRESHOLD,
        high_threshold=high,
        verdict=verdict,
        more_repeats=more,
        summary="",
    )
    return _with_summary(comparison)


def _ks_p(a: FloatArray, b: FloatArray) -> float:
    if a.size == b.size == 1:
        return 1.0  # one sample against one: the test has no power
    # The exact Kolmogorov-Smirnov distribution assumes no ties (and can fail on them).
    has_ties = np.unique(np.concatenate([a, b])).size < a.size + b.size
    with warnings.catch_warnings():
        # scipy falls back to the asymptotic p-value where its exact recursion does
        # not converge (e.g. [1, 4, 5, 8, 2.5] against [2, 3, 6, 7, 1.5]); so would we.
        warnings.filterwarnings("ignore", "ks_2samp: Exact calculation unsuccessful")
        return float(stats.ks_2samp(a, b, method="asymp" if has_ties else "auto").pvalue)


def _bootstrap_intervals(
    a: FloatArray, b: FloatArray, confidence: float, seed: int | np.random.Generator
) -> tuple[tuple[float, float], tuple[float, float] | None]:
    """Percentile intervals of the change of medians, absolute and relative."""
    rng = np.random.default_rng(seed)
    boot_a, boot_b = _bootstrap_medians(a, rng), _bootstrap_medians(b, rng)
    relative = _relative(boot_b - boot_a, boot_a)
    relative_interval = None if relative is None else _interval(relative, confidence)
    return _interval(boot_b - boot_a, confidence), relative_interval


def _relative(change: FloatArray, baseline: FloatArray) -> FloatArray | None:
    """``change / |baseline|``, None where a baseline is 0 or the ratio overflows."""
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        ratio = change / np.abs(baseline)
    return ratio if bool(np.all(np.isfinite(ratio))) else None


def high_threshold(effect: float, count_a: int, count_b: int) -> float:
    """The p-value above which a shift of ``effect`` (in spreads) is ruled out."""
    z_alternative = _expected_u_z(effect, count_a, count_b) - Z_POWER
    high = 2.0 * (1.0 - STANDARD_NORMAL.cdf(z_alternative))
    return min(1.0, max(LOW_THRESHOLD, high))


def _expected_u_z(effect: float, count_a: int, count_b: int) -> float:
    """Mean z of Mann-Whitney U when B is shifted by ``effect`` spreads (normal data)."""
    superiority = STANDARD_NORMAL.cdf(effect / math.sqrt(2.0))
    null_sd = math.sqrt(count_a * count_b * (count_a + count_b + 1) / 12.0)
    return (superiority - 0.5) * count_a * count_b / null_sd


def _standardised_min_effect(a: FloatArray, b: FloatArray, min_relative_change: float) -> float:
    spread = _pooled_robust_spread(a, b)
    min_change = min_relative_change * abs(float(np.median(a)))
    return float("inf") if spread == 0.0 else min_change / spread


def _pooled_robust_spread(a: FloatArray, b: FloatArray) -> float:
    degrees = len(a) + len(b) - 2
    if degrees <= 0:
        return 0.0
    mad_a = MAD_TO_SIGMA * float(np.median(np.abs(a - np.median(a))))
    mad_b = MAD_TO_SIGMA * float(np.median(np.abs(b - np.median(b))))
    return float(np.sqrt((mad_a**2 * (len(a) - 1) + mad_b**2 * (len(b) - 1)) / degrees))


def _metric_verdict(p_value: float, high: float, change: float, direction: Direction) -> Verdict:
    if p_value <= LOW_THRESHOLD:
        if direction is Direction.TWO_SIDED:
            return Verdict.CHANGED
        is_better = (change > 0) == (direction is Direction.HIGHER_IS_BETTER)
        return Verdict.IMPROVED if is_better else Verdict.REGRESSED
    if p_value > high:
        return Verdict.NO_CHANGE
    return Verdict.UNKNOWN


def repeats_to_decide(effect: float, count_a: int, count_b: int) -> int | None:
    """More samples per side after which the high threshold equals the low one,
    None when not even ``MAX_REPEATS`` per side would do."""
    if high_threshold(effect, MAX_REPEATS, MAX_REPEATS) > LOW_THRESHOLD:
        return None
    low, high = max(count_a, count_b), MAX_REPEATS
    while low < high:
        middle = (low + high) // 2
        if high_threshold(effect, middle, middle) > LOW_THRESHOLD:
            low = middle + 1
        else:
            high = middle
    return low - min(count_a, count_b)


def _bootstrap_medians(values: FloatArray, rng: np.random.Generator) -> FloatArray:
    batch = max(1, BOOTSTRAP_CELLS_PER_BATCH // len(values))
    medians: list[FloatArray] = []
    for start in range(0, BOOTSTRAP_RESAMPLES, batch):
        rows = min(batch, BOOTSTRAP_RESAMPLES - start)
        picks = rng.integers(0, len(values), size=(rows, len(values)))
        medians.append(np.median(values[picks], axis=1))
    return np.concatenate(medians)


def _interval(replicates: FloatArray, confidence: float) -> tuple[float, float]:
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(replicates, [tail, 100.0 - tail])
    return float(low), float(high)


def _checked_samples(values: FloatArray, side: str) -> FloatArray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        raise InvalidRequest(
            f"run {side} has no samples of this metric; compare needs at least one"
        )
    if not np.all(np.isfinite(array)):
        raise InvalidRequest(
            f"run {side} has non-finite samples ({array[~np.isfinite(array)][:3].tolist()}); "
            "drop them before comparing"
        )
    return array


def _with_summary(comparison: Comparison) -> Comparison:
    c = comparison
    unit = f" {c.unit}" if c.unit else ""
    if c.relative_change is not None and c.relative_interval is not None:
        low, high = c.relative_interval
        change = f"{100 * c.relative_change:+.1f} %, {_percent(c.confidence)} CI "
        change += f"{100 * low:+.1f} %..{100 * high:+.1f} %"
    else:
        low, high = c.change_interval
        change = f"{c.change:+.4g}{unit}, {_percent(c.confidence)} CI {low:+.4g}..{high:+.4g}"
    verdict = _verdict_words(c)
    text = f"{c.metric}: {c.median_a:.4g} -> {c.median_b:.4g}{unit} ({change}): {verdict}"
    return msgspec.structs.replace(c, summary=f"{text} (p={c.p_value:.2g})")


def _verdict_words(c: Comparison) -> str:
    if c.verdict is Verdict.UNKNOWN:
        if c.more_repeats is None:
            return "unknown, no number of repeats decides at this spread and baseline"
        return f"unknown, run {c.more_repeats} more repeats per side"
    if c.unit in SPEED_UNITS and c.verdict in (Verdict.IMPROVED, Verdict.REGRESSED):
        return "faster" if c.verdict is Verdict.IMPROVED else "slower"
    return str(c.verdict)


def _percent(confidence: float) -> str:
    return f"{100 * confidence:g} %"


def compare_tests(
    a: Mapping[str, Sequence[str]],
    b: Mapping[str, Sequence[str]],
    *,
    alpha: float = 0.05,
    min_rate_change: float = 0.25,
) -> list[TestComparison]:
    """Per test node id, the outcomes of every attempt in run A against run B.

    Ordered newly failing, unknown, fixed, no change, then by node id.
    """
    comparisons = [
        _compare_test(node_id, a.get(node_id, ()), b.get(node_id, ()), alpha, min_rate_change)
        for node_id in sorted(set(a) | set(b))
    ]
    return sorted(comparisons, key=lambda c: (TEST_VERDICT_ORDER.index(c.verdict), c.node_id))


TEST_VERDICT_ORDER = (
    TestVerdict.NEWLY_FAILING,
    TestVerdict.UNKNOWN,
    TestVerdict.FIXED,
    TestVerdict.NO_CHANGE,
)


def _compare_test(
    node_id: str,
    outcomes_a: Sequence[str],
    outcomes_b: Sequence[str],
    alpha: float,
    min_rate_change: float,
) -> TestComparison:
    passed_a, failed_a = _pass_fail_counts(node_id, outcomes_a)
    passed_b, failed_b = _pass_fail_counts(node_id, outcomes_b)
    runs_a, runs_b = passed_a + failed_a, passed_b + failed_b
    counts = f"failed {failed_a}/{runs_a} in A, {failed_b}/{runs_b} in B"
    p_value: float | None = None
    verdict, more = TestVerdict.UNKNOWN, None
    if runs_a == 0 or runs_b == 0:
        words = f"unknown, no pass or fail in run {'A' if runs_a == 0 else 'B'}"
    else:
        p_value = _fisher_p(failed_a, passed_a, failed_b, passed_b)
        rates = (failed_a / runs_a, failed_b / runs_b)
        verdict, total = _test_verdict(p_value, *rates, alpha, min_rate_change)
        more = None if total is None else max(1, total - min(runs_a, runs_b))
        words = str(verdict) if more is None else f"{verdict}, run {more} more attempts per side"
        counts += f", p={p_value:.2g}"
    return TestComparison(
        node_id=node_id,
        passed_a=passed_a,
        failed_a=failed_a,
        passed_b=passed_b,
        failed_b=failed_b,
        p_value=p_value,
        verdict=verdict,
        more_repeats=more,
        summary=f"{node_id}: {words} ({counts})",
    )


def _test_verdict(
    p_value: float, rate_a: float, rate_b: float, alpha: float, min_rate_change: float
) -> tuple[TestVerdict, int | None]:
    if p_value <= alpha:
        return (TestVerdict.NEWLY_FAILING if rate_b > rate_a else TestVerdict.FIXED), None
    if abs(rate_b - rate_a) < min_rate_change:
        return TestVerdict.NO_CHANGE, None
    return TestVerdict.UNKNOWN, _attempts_to_decide(rate_a, rate_b, alpha)


def _attempts_to_decide(rate_a: float, rate_b: float, alpha: float) -> int | None:
    """Attempts per side at which the observed failure rates would be significant."""
    for attempts in range(2, MAX_TEST_REPEATS + 1):
        failed_a, failed_b = round(rate_a * attempts), round(rate_b * attempts)
        if _fisher_p(failed_a, attempts - failed_a, failed_b, attempts - failed_b) <= alpha:
            return attempts
    return None


def _fisher_p(failed_a: int, passed_a: int, failed_b: int, passed_b: int) -> float:
    table = [[failed_a, passed_a], [failed_b, passed_b]]
    return float(stats.fisher_exact(table, alternative="two-sided").pvalue)


def _pass_fail_counts(node_id: str, outcomes: Sequence[str]) -> tuple[int, int]:
    unknown = set(outcomes) - PASSING_OUTCOMES - FAILING_OUTCOMES - IGNORED_OUTCOMES
    if unknown:
        raise InvalidRequest(
            f"test {node_id!r} has outcomes {sorted(unknown)}; expected one of "
            f"{sorted(PASSING_OUTCOMES | FAILING_OUTCOMES | IGNORED_OUTCOMES)}"
        )
    passed = sum(outcome in PASSING_OUTCOMES for outcome in outcomes)
    failed = sum(outcome in FAILING_OUTCOMES for outcome in outcomes)
    return passed, failed
