"""The rank scan and binary segmentation on series whose change points are known."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import rankdata

from dtf.analysis.changepoints import (
    Side,
    change_points,
    locate,
    midranks,
    robust_spread,
    scan,
    scan_tail,
    segment,
    spikes,
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


def noisy(size: int, seed: int, noise: float = 1.0) -> np.ndarray:
    return 100.0 + noise * np.random.default_rng(seed).standard_normal(size)


def test_lone_outliers_are_spikes_and_nothing_else_is() -> None:
    values = noisy(60, 1)
    values[[7, 30, 58, 59]] = [160.0, 45.0, 180.0, 170.0]  # two together at the newest end
    centre, scale = robust_spread(values)
    assert np.flatnonzero(spikes(values, centre, scale)).tolist() == [7, 30, 58, 59]


@pytest.mark.parametrize("after", [3, 4, 30])
def test_a_step_is_not_a_spike_once_three_points_follow_it(after: int) -> None:
    values = np.concatenate([noisy(40, 2), noisy(after, 3) + 50.0])
    centre, scale = robust_spread(values[:40])
    assert not spikes(values, centre, scale).any()


def test_without_spread_nothing_is_a_spike() -> None:
    values = np.append(np.full(20, 5.0), 500.0)
    assert not spikes(values, 5.0, 0.0).any()


def test_a_clear_step_is_located_at_its_first_point() -> None:
    values = np.concatenate([noisy(50, 4), noisy(10, 5) + 10.0])
    for side in (Side.GREATER, Side.TWO_SIDED):
        assert locate(values, first=30, last=57, side=side, scale=1.0, tolerance=5) == 50
    assert locate(-values, first=30, last=57, side=Side.LESS, scale=1.0, tolerance=5) == 50
    assert locate(values, first=30, last=57, side=Side.GREATER, scale=0.0, tolerance=5) == 50


def test_weighing_nearby_splits_dates_small_steps_better_than_the_most_likely_split() -> None:
    # 3 % steps at 3 % noise, 20 points after: dated within 5 points more often
    rng = np.random.default_rng(9)
    hits = {"most likely": 0, "weighed": 0}
    for _ in range(300):
        values = 100.0 + 3.0 * rng.standard_normal(170)
        values[150:] += 3.0
        for name, scale in (("most likely", 0.0), ("weighed", 3.0)):
            dated = locate(values, first=130, last=167, side=Side.GREATER, scale=scale, tolerance=5)
            hits[name] += abs(dated - 150) <= 5
    assert hits["weighed"] >= hits["most likely"] + 9, hits
