"""The rank scan and binary segmentation on series whose change points are known."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import rankdata

from dtf.analysis.changepoints import (
    Side,
    change_points,
    midranks,
    scan,
    scan_tail,
    segment,
    split_statistics,
)

small_floats = st.floats(-1e6, 1e6, allow_nan=False).map(lambda v: round(v, 1))
samples = arrays(np.float64, st.integers(12, 60), elements=small_floats)


@given(samples)
def test_midranks_match_scipy_including_ties(values: np.ndarray) -> None:
    ranks, tie_counts = midranks(values)
    assert np.allclose(ranks, rankdata(values))
    assert sorted(tie_counts) == sorted(np.unique(values, return_counts=True)[1])


@given(samples, st.floats(0.1, 100.0), st.floats(-1e3, 1e3))
def test_scan_depends_on_ranks_only(values: np.ndarray, scale: float, offset: float) -> None:
    original = scan(values, first=3, last=len(values) - 3, side=Side.TWO_SIDED)
    moved = scan(values * scale + offset, first=3, last=len(values) - 3, side=Side.TWO_SIDED)
    assert (moved.index, moved.p_value) == (original.index, original.p_value)


@given(samples)
def test_mirroring_the_values_mirrors_the_side(values: np.ndarray) -> None:
    up = scan(values, first=3, last=len(values) - 3, side=Side.GREATER)
    down = scan(-values, first=3, last=len(values) - 3, side=Side.LESS)
    assert (down.index, down.p_value, down.z) == (up.index, up.p_value, -up.z)
    assert 0.0 <= up.p_value <= 1.0
    assert up.p_value >= up.raw_p_value


def test_a_clean_step_is_found_at_its_first_point() -> None:
    values = np.array([10.0, 11, 10, 12, 11, 10, 11, 12, 10, 11, 20, 21, 20, 22, 21, 20])
    split = scan(values, first=3, last=len(values) - 3, side=Side.TWO_SIDED)
    assert split.index == 10
    assert split.z > 0
    assert split.p_value < 0.05  # 16 points, corrected for 11 splits


def test_a_step_down_is_invisible_to_a_scan_for_a_step_up() -> None:
    values = np.array([20.0] * 8 + [10.0] * 8) + np.arange(16) * 0.01
    assert scan(values, first=3, last=13, side=Side.GREATER).p_value > 0.5
    assert scan(values, first=3, last=13, side=Side.LESS).p_value < 0.01


def test_a_constant_series_has_no_evidence_of_change() -> None:
    values = np.full(30, 7.0)
    assert np.all(split_statistics(values, 3, 27) == 0.0)
    assert scan(values, first=3, last=27, side=Side.TWO_SIDED).p_value == 1.0


def test_the_scan_tail_shrinks_as_the_statistic_grows() -> None:
    tails = [scan_tail(b, 0.05, 0.95) for b in (2.0, 3.0, 4.0, 5.0)]
    assert tails == sorted(tails, reverse=True)
    assert scan_tail(1.0, 0.05, 0.95) == 1.0  # outside where the approximation applies


def test_scan_p_values_of_stationary_series_are_not_too_small() -> None:
    rng = np.random.default_rng(11)
    p_values = np.array(
        [
            scan(rng.standard_normal(100), first=5, last=95, side=Side.TWO_SIDED).p_value
            for _ in range(400)
        ]
    )
    assert np.mean(p_values <= 0.05) <= 0.06
    assert np.mean(p_values <= 0.2) <= 0.22


def test_segmentation_finds_two_steps_and_reports_every_test() -> None:
    rng = np.random.default_rng(3)
    values = np.concatenate([np.full(30, 100.0), np.full(25, 120.0), np.full(30, 90.0)])
    values = values + rng.normal(0.0, 1.0, len(values))
    tests = segment(values)
    assert change_points(tests) == [30, 55]
    assert len(tests) >= 3  # the whole series, then each side of each split
    assert all(test.split.p_value > 0.05 for test in tests if not test.is_split)


def test_segmentation_of_a_short_stretch_tests_nothing() -> None:
    assert segment(np.arange(9, dtype=np.float64), min_size=5) == []


@settings(max_examples=30)
@given(st.integers(0, 2**32 - 1))
def test_a_shuffled_stationary_series_rarely_splits(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.permutation(np.repeat(np.arange(10.0), 8))
    assert len(change_points(segment(values, threshold=1e-4))) == 0
