"""Run comparison: metric verdicts with bootstrap intervals, test verdicts from pass rates."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dtf.analysis.compare import (
    LOW_THRESHOLD,
    Comparison,
    TestVerdict,
    Verdict,
    compare_samples,
    compare_tests,
    high_threshold,
    repeats_to_decide,
)
from dtf.analysis.units import Direction
from dtf.errors import InvalidRequest

LOWER = Direction.LOWER_IS_BETTER
HIGHER = Direction.HIGHER_IS_BETTER


def noisy(center: float, count: int, seed: int, noise: float = 0.01) -> np.ndarray:
    return center * (1.0 + np.random.default_rng(seed).normal(0.0, noise, count))


def test_a_ten_percent_slowdown_is_slower_with_an_interval_around_it() -> None:
    comparison = compare_samples(
        noisy(12.0, 20, 1), noisy(13.2, 20, 2), direction=LOWER, metric="latency_ms", unit="ms"
    )
    assert comparison.verdict is Verdict.REGRESSED
    assert comparison.relative_change == pytest.approx(0.10, abs=0.02)
    assert comparison.relative_interval is not None
    low, high = comparison.relative_interval
    assert low < 0.10 < high
    assert comparison.p_value < LOW_THRESHOLD
    assert comparison.summary.startswith("latency_ms: ")
    assert ": slower (p=" in comparison.summary


def test_more_throughput_is_faster() -> None:
    comparison = compare_samples(
        noisy(100.0, 15, 1), noisy(120.0, 15, 2), direction=HIGHER, metric="qps", unit="1/s"
    )
    assert comparison.verdict is Verdict.IMPROVED
    assert "faster" in comparison.summary


def test_a_change_of_a_non_speed_metric_reads_improved_or_regressed() -> None:
    comparison = compare_samples(
        noisy(500.0, 15, 1), noisy(600.0, 15, 2), direction=LOWER, metric="memory", unit="MB"
    )
    assert comparison.verdict is Verdict.REGRESSED
    assert ": regressed (p=" in comparison.summary


def test_a_two_sided_metric_only_says_changed() -> None:
    comparison = compare_samples(
        noisy(1.0, 15, 1), noisy(2.0, 15, 2), direction=Direction.TWO_SIDED
    )
    assert comparison.verdict is Verdict.CHANGED


def test_equal_runs_with_enough_repeats_show_no_change() -> None:
    comparison = compare_samples(noisy(50.0, 30, 1), noisy(50.0, 30, 2), direction=LOWER)
    assert comparison.verdict is Verdict.NO_CHANGE
    assert comparison.high_threshold < comparison.p_value
    assert comparison.more_repeats is None


def test_three_repeats_each_are_not_enough_and_say_how_many_more_are() -> None:
    comparison = compare_samples(noisy(50.0, 3, 1), noisy(51.5, 3, 2), direction=LOWER)
    assert comparison.verdict is Verdict.UNKNOWN
    assert comparison.high_threshold > LOW_THRESHOLD
    assert comparison.more_repeats is not None and comparison.more_repeats > 0
    assert f"run {comparison.more_repeats} more repeats per side" in comparison.summary


@given(st.floats(0.05, 10.0), st.integers(1, 50))
def test_the_suggested_repeats_are_the_first_count_that_decides(effect: float, count: int) -> None:
    more = repeats_to_decide(effect, count, count)
    assume(more is not None and more > 0)
    assert more is not None
    assert high_threshold(effect, count + more, count + more) == LOW_THRESHOLD
    assert high_threshold(effect, count + more - 1, count + more - 1) > LOW_THRESHOLD


def test_no_number_of_repeats_decides_a_zero_minimum_change() -> None:
    assert repeats_to_decide(0.0, 3, 3) is None


def test_identical_constant_samples_are_no_change() -> None:
    comparison = compare_samples(np.full(5, 7.0), np.full(5, 7.0), direction=LOWER)
    assert comparison.verdict is Verdict.NO_CHANGE
    assert comparison.change_interval == (0.0, 0.0)


def test_a_zero_baseline_has_no_relative_change() -> None:
    comparison = compare_samples(np.zeros(5), np.array([0.0, 1, 2, 0, 1]), direction=LOWER)
    assert comparison.relative_change is None
    assert comparison.relative_interval is None
    assert "CI" in comparison.summary


def test_the_same_seed_gives_the_same_interval() -> None:
    a, b = noisy(10.0, 12, 1, noise=0.05), noisy(10.5, 12, 2, noise=0.05)
    first = compare_samples(a, b, direction=LOWER, seed=7)
    again = compare_samples(a, b, direction=LOWER, seed=np.random.default_rng(7))
    assert first == again


def test_a_comparison_round_trips_through_json() -> None:
    comparison = compare_samples(noisy(12.0, 8, 1), noisy(13.0, 8, 2), direction=LOWER)
    decoded = msgspec.json.decode(msgspec.json.encode(comparison), type=Comparison)
    assert decoded == comparison


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        (np.array([]), np.array([1.0]), "run A has no samples"),
        (np.array([1.0]), np.array([1.0, np.nan]), "run B has non-finite samples"),
    ],
)
def test_unusable_samples_are_refused(a: np.ndarray, b: np.ndarray, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        compare_samples(a, b, direction=LOWER)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(1.0, 100.0), min_size=2, max_size=12),
    st.lists(st.floats(1.0, 100.0), min_size=2, max_size=12),
)
def test_swapping_the_runs_keeps_the_p_value_and_flips_a_decided_verdict(
    a: list[float], b: list[float]
) -> None:
    forward = compare_samples(np.array(a), np.array(b), direction=LOWER)
    backward = compare_samples(np.array(b), np.array(a), direction=LOWER)
    assert forward.p_value == pytest.approx(backward.p_value)
    flipped = {Verdict.IMPROVED: Verdict.REGRESSED, Verdict.REGRESSED: Verdict.IMPROVED}
    if forward.verdict in flipped:
        assert backward.verdict is flipped[forward.verdict]


@given(st.floats(0.0, 10.0), st.integers(1, 200))
def test_the_high_threshold_lies_between_the_low_one_and_one_and_falls_with_repeats(
    effect: float, count: int
) -> None:
    high = high_threshold(effect, count, count)
    assert LOW_THRESHOLD <= high <= 1.0
    assert high_threshold(effect, count + 1, count + 1) <= high


def test_test_verdicts_from_pass_rates() -> None:
    a = {
        "t::breaks": ["passed"] * 5,
        "t::once": ["passed"],
        "t::still_broken": ["failed"] * 3,
        "t::fixed": ["failed"] * 5,
        "t::rare_flake": ["passed"] * 20,
        "t::maybe": ["passed"] * 3,
        "t::skipped": ["passed", "skipped"],
    }
    b = {
        "t::breaks": ["failed"] * 4 + ["error"],
        "t::once": ["failed"],
        "t::still_broken": ["failed"] * 3,
        "t::fixed": ["passed"] * 5,
        "t::rare_flake": ["passed"] * 19 + ["failed"],
        "t::maybe": ["failed", "passed", "failed"],
        "t::skipped": ["skipped"],
        "t::new": ["passed", "xfailed"],
    }
    verdicts = {c.node_id: (c.verdict, c.more_repeats) for c in compare_tests(a, b)}
    assert verdicts == {
        # every attempt passed before and failed after
        "t::breaks": (TestVerdict.NEWLY_FAILING, None),
        # one pass then one fail: 0/4 against 4/4 would be significant, 3 more each
        "t::once": (TestVerdict.UNKNOWN, 3),
        # failing on both sides is no change
        "t::still_broken": (TestVerdict.NO_CHANGE, None),
        "t::fixed": (TestVerdict.FIXED, None),
        # one failure in twenty is below the minimum rate change
        "t::rare_flake": (TestVerdict.NO_CHANGE, None),
        # 0/3 against 2/3: at those rates 7 attempts each decide
        "t::maybe": (TestVerdict.UNKNOWN, 4),
        # only skips in B: nothing to compare
        "t::skipped": (TestVerdict.UNKNOWN, None),
        "t::new": (TestVerdict.UNKNOWN, None),
    }


def test_test_comparisons_list_newly_failing_first_with_a_sentence() -> None:
    comparisons = compare_tests(
        {"t::a": ["passed"] * 5, "t::b": ["passed"] * 5},
        {"t::a": ["passed"] * 5, "t::b": ["failed"] * 5},
    )
    assert [c.node_id for c in comparisons] == ["t::b", "t::a"]
    assert comparisons[0].summary == "t::b: newly failing (failed 0/5 in A, 5/5 in B, p=0.0079)"


def test_an_unknown_outcome_is_refused_by_name() -> None:
    with pytest.raises(InvalidRequest, match=r"'t::a' has outcomes \['crashed'\]"):
        compare_tests({"t::a": ["crashed"]}, {})


def test_samples_where_the_exact_ks_recursion_fails_get_the_asymptotic_p_value() -> None:
    a = np.array([1.0, 4.0, 5.0, 8.0, 2.5])
    b = np.array([2.0, 3.0, 6.0, 7.0, 1.5])
    comparison = compare_samples(a, b, direction=LOWER, metric="latency_ms", unit="ms")
    assert 0.0 < comparison.ks_p <= 1.0
