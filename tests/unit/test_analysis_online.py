"""The check at ingest: steps in the bad direction are seen, repeats are merged."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from dtf.analysis.online import (
    DEFAULT_SETTINGS,
    Detection,
    OnlineSettings,
    candidate,
    is_repeat,
    merge_detections,
    online_check,
    online_checks,
    series_id,
)
from dtf.analysis.series import Environment, Kind, Series
from dtf.analysis.units import Direction, metric_direction


@pytest.mark.parametrize(
    ("metric", "direction"),
    [
        ("latency_ms", Direction.LOWER_IS_BETTER),
        ("step_time_s", Direction.LOWER_IS_BETTER),
        ("peak_memory_mb", Direction.LOWER_IS_BETTER),
        ("tokens_per_s", Direction.HIGHER_IS_BETTER),  # "_per_s" wins over the "_s" suffix
        ("samples_per_sec", Direction.HIGHER_IS_BETTER),
        ("matmul_gflops", Direction.HIGHER_IS_BETTER),
        ("top1_accuracy", Direction.HIGHER_IS_BETTER),
        ("loss_scale", Direction.TWO_SIDED),  # nothing in the name says which way is worse
    ],
)
def test_direction_comes_from_the_metric_name(metric: str, direction: Direction) -> None:
    assert metric_direction(metric) is direction


def noisy(level: float, size: int, seed: int) -> np.ndarray:
    return level * (1.0 + 0.01 * np.random.default_rng(seed).standard_normal(size))


def stepped(metric: str, factor: float, seed: int = 1, after: int = 8) -> Series:
    values = np.concatenate([noisy(100.0, 60, seed), noisy(100.0 * factor, after, seed + 1)])
    keys = [f"c{index}" for index in range(len(values))]
    return Series.of(metric, values, order_keys=keys, labels={"model": "resnet"})


def test_a_latency_step_up_is_a_regression_dated_at_its_first_point() -> None:
    found = online_check(stepped("latency_ms", 1.10))
    assert found is not None
    assert (found.kind, found.change_index, found.checked_index) == (Kind.REGRESSION, 60, 67)
    assert (found.last_good_key, found.first_bad_key) == ("c59", "c60")
    assert found.relative_change == pytest.approx(0.10, abs=0.02)
    assert found.labels == (("model", "resnet"),)


def test_a_throughput_drop_is_a_regression_and_a_rise_is_not_reported() -> None:
    drop = online_check(stepped("images_per_s", 0.90))
    assert drop is not None and drop.kind is Kind.REGRESSION
    assert online_check(stepped("images_per_s", 1.10)) is None
    assert online_check(stepped("latency_ms", 0.90)) is None


def test_a_small_step_is_below_the_minimum_relative_change() -> None:
    series = stepped("latency_ms", 1.015, after=15)
    assert online_check(series) is None
    assert online_check(series, OnlineSettings(min_relative_change=0.01)) is not None


def test_a_single_spike_is_not_a_step() -> None:
    values = np.append(noisy(100.0, 60, 4), 400.0)
    assert online_check(Series.of("latency_ms", values)) is None


def test_too_short_a_series_is_not_checked() -> None:
    assert online_check(Series.of("latency_ms", [1.0, 2.0, 3.0, 4.0])) is None


def test_only_the_newest_environment_is_compared() -> None:
    old, new = Environment.of({"batch_size": 8}), Environment.of({"batch_size": 16})
    values = np.concatenate([noisy(100.0, 60, 5), noisy(150.0, 8, 6)])
    series = Series.of("latency_ms", values, environment=[old] * 60 + [new] * 8)
    assert online_check(series) is None  # 8 points in the new environment: nothing to compare


def test_family_control_keeps_the_step_and_drops_the_stationary_series() -> None:
    family = [stepped("latency_ms", 1.10)] + [
        Series.of("latency_ms", noisy(100.0, 68, seed), labels={"n": seed}) for seed in range(50)
    ]
    found = online_checks(family)
    assert [f.labels for f in found] == [(("model", "resnet"),)]
    assert found[0].q_value >= found[0].p_value


def detections_while_ingesting(series: Series, start: int) -> list[Detection]:
    """Every detection of a check after each new point, each check given the open step."""
    found: list[Detection] = []
    for length in range(start, len(series) + 1):
        prefix = Series.of(series.metric, series.values[:length], labels=dict(series.labels))
        merged = merge_detections(found)
        found.extend(
            online_checks([prefix], opened={series_id(prefix): merged[-1]} if merged else {})
        )
    return found


def test_repeated_detections_of_one_step_merge_into_the_first() -> None:
    series = stepped("latency_ms", 1.10, after=30)
    found = detections_while_ingesting(series, 61)
    assert len(found) > 10
    merged = merge_detections(found)
    assert len(merged) == 1
    assert merged[0].checked_index == found[0].checked_index
    assert merged[0].change_index == 60
    assert merged[0].times_seen == len(found)
    assert merged[0].seen_until_index == found[-1].checked_index


def test_a_detection_after_a_long_quiet_gap_is_a_new_step() -> None:
    first = online_check(stepped("latency_ms", 1.10))
    assert first is not None
    later = msgspec.structs.replace(first, checked_index=first.checked_index + 40, change_index=100)
    assert not is_repeat(first, later)
    assert len(merge_detections([first, later])) == 2
    other_series = msgspec.structs.replace(
        first, checked_index=first.checked_index + 1, labels=(("model", "bert"),)
    )
    assert not is_repeat(first, other_series)


def spiky(level: float, size: int, seed: int, spikes: dict[int, float]) -> np.ndarray:
    values = level * (1.0 + 0.03 * np.random.default_rng(seed).standard_normal(size))
    for index, factor in spikes.items():
        values[index] *= factor
    return values


def test_a_spiky_step_whose_points_before_run_high_is_dated_at_its_first_point() -> None:
    spikes = {12: 2.0, 31: 2.5, 47: 1.8, 70: 2.0, 77: 1.6}
    values = spiky(100.0, 90, 221, spikes)
    values[60:] += 5.0  # 5 % at 3 % noise; the points just before it happen to run high
    found = detections_while_ingesting(Series.of("latency_ms", values), 61)
    assert (found[0].checked_index, found[0].change_index) == (63, 60)  # the rank scan said 45
    [merged] = merge_detections(found)
    assert merged.checked_index == 63
    assert 58 <= merged.change_index <= 60  # re-dated with more points after: 57 and 58 run high


def test_a_repeat_re_dates_the_step_over_the_splits_it_was_first_dated_from() -> None:
    values = spiky(100.0, 100, 7, {})
    values[60:] += 5.0  # 5 % at 3 % noise, 40 points after it
    series = Series.of("latency_ms", values)
    first = online_check(Series.of("latency_ms", values[:64]))
    assert first is not None and first.change_index == 44  # four points after it: a rough guess
    still_open = msgspec.structs.replace(first, seen_until_index=98)
    repeat = online_check(series, opened=still_open)
    assert repeat is not None and repeat.change_index == 60
    newest_only = candidate(series, DEFAULT_SETTINGS)  # 25 newest splits: the step is older
    assert (
        newest_only is not None and newest_only.change_index >= 100 - DEFAULT_SETTINGS.dating_span
    )
    [merged] = merge_detections([still_open, repeat])
    assert (merged.checked_index, merged.change_index, merged.times_seen) == (63, 60, 2)
    [ingested] = merge_detections(detections_while_ingesting(series, 61))
    assert (ingested.checked_index, ingested.change_index) == (63, 60)


def test_an_open_step_seen_too_long_ago_does_not_anchor_the_dating() -> None:
    values = spiky(100.0, 100, 7, {})
    values[60:] += 5.0
    first = online_check(Series.of("latency_ms", values[:64]))
    assert first is not None
    long_ago = msgspec.structs.replace(first, seen_until_index=99 - DEFAULT_SETTINGS.merge_gap - 1)
    series = Series.of("latency_ms", values)
    assert candidate(series, DEFAULT_SETTINGS, long_ago) == candidate(series, DEFAULT_SETTINGS)


def test_a_spiky_stationary_series_is_not_alerted() -> None:
    spikes = {index: 1.5 + (index % 7) / 4 for index in range(5, 90, 13)}
    series = Series.of("latency_ms", spiky(100.0, 90, 8, spikes))
    assert detections_while_ingesting(series, 61) == []


@pytest.mark.parametrize("spike_rate", [0.0, 0.03])
def test_p_values_on_stationary_series_hold_their_level(spike_rate: float) -> None:
    rng = np.random.default_rng(17)
    values = 100.0 + 3.0 * rng.standard_normal((4000, 170))
    is_spike = rng.random(values.shape) < spike_rate
    values[is_spike] *= rng.uniform(1.5, 3.0, int(is_spike.sum()))
    checked = [candidate(Series.of("latency_ms", row), DEFAULT_SETTINGS) for row in values]
    p_values = np.array([found.p_value for found in checked if found is not None])
    assert len(p_values) == len(checked)
    for level in (0.05, 0.01):
        assert np.mean(p_values <= level) <= level


def test_a_step_among_spikes_is_seen_and_dated_at_its_first_point() -> None:
    spikes = {8: 2.5, 21: 1.7, 33: 3.0, 44: 2.0, 52: 1.6, 58: 2.2, 61: 2.0, 71: 2.8}
    values = spiky(100.0, 72, 31, spikes)
    values[60:] += 5.0  # 5 % at 3 % noise; spikes just before and after it, and the newest point
    found = online_check(Series.of("latency_ms", values))
    assert found is not None
    assert (found.change_index, found.checked_index) == (60, 71)
    assert found.shift == pytest.approx(5.0, abs=2.0)
