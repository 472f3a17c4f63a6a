"""Regressions over a family: false-discovery control, alerts, groups, refused environments."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dtf.analysis.fdr import benjamini_hochberg
from dtf.analysis.regressions import describe_change, detect_regressions
from dtf.analysis.series import Environment, EnvironmentMismatch, Kind, Series
from dtf.errors import InvalidRequest

A100 = Environment.of({"hardware_class": "cuda", "device_model": "A100", "batch_size": 8})


def noisy(level: float, size: int, seed: int) -> np.ndarray:
    return level * (1.0 + 0.01 * np.random.default_rng(seed).standard_normal(size))


def series(metric: str, values: np.ndarray, model: str = "resnet", **kwargs: object) -> Series:
    keys = [f"commit{index}" for index in range(len(values))]
    return Series.of(metric, values, order_keys=keys, labels={"model": model}, **kwargs)  # type: ignore[arg-type]


def step(before: float, after: float, seed: int = 0, at: int = 40, size: int = 80) -> np.ndarray:
    return np.concatenate([noisy(before, at, seed), noisy(after, size - at, seed + 100)])


def test_benjamini_hochberg_matches_a_hand_computation() -> None:
    # sorted p * m / rank = 0.04, 0.04, 0.0333, 0.75; then the running minimum from the top
    q = benjamini_hochberg([0.01, 0.75, 0.02, 0.025])
    assert q == pytest.approx([0.1 / 3, 0.75, 0.1 / 3, 0.1 / 3])
    assert benjamini_hochberg([]).size == 0


@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=50))
def test_q_values_are_at_least_p_and_keep_their_order(p_values: list[float]) -> None:
    q = benjamini_hochberg(p_values)
    assert np.all(q >= np.asarray(p_values) - 1e-12)
    assert np.all(q <= 1.0)
    order = np.argsort(p_values, kind="stable")
    assert np.all(np.diff(q[order]) >= -1e-12)


def test_a_latency_step_becomes_one_alert_that_carries_everything() -> None:
    report = detect_regressions([series("latency_ms", step(100.0, 110.0), environment=A100)])
    (alert,) = report.alerts
    assert (alert.kind, alert.change_index) == (Kind.REGRESSION, 40)
    assert (alert.last_good_key, alert.first_bad_key) == ("commit39", "commit40")
    assert alert.before_interval[0] <= alert.before_median <= alert.before_interval[1]
    assert alert.after_interval[0] <= alert.after_median <= alert.after_interval[1]
    assert alert.before_interval[1] < alert.after_interval[0]
    assert alert.relative_change == pytest.approx(0.10, abs=0.01)
    assert alert.effect_size == pytest.approx(1.0)
    assert alert.p_value <= alert.q_value <= 0.05
    assert (alert.before_count, alert.after_count) == (40, 40)
    assert alert.environment_fingerprint == A100.fingerprint
    assert dict(alert.environment)["device_model"] == "A100"


def test_improvements_are_left_out_unless_asked_for() -> None:
    faster = [series("latency_ms", step(100.0, 90.0))]
    assert detect_regressions(faster).alerts == ()
    (alert,) = detect_regressions(faster, include_improvements=True).alerts
    assert alert.kind is Kind.IMPROVEMENT


def test_a_two_sided_metric_reports_a_change_either_way() -> None:
    (alert,) = detect_regressions([series("loss_scale", step(100.0, 90.0))]).alerts
    assert alert.kind is Kind.CHANGE


def test_a_step_below_the_minimum_relative_change_is_not_an_alert() -> None:
    tiny = [series("latency_ms", step(100.0, 101.5, size=400, at=200))]
    assert detect_regressions(tiny).alerts == ()
    assert len(detect_regressions(tiny, min_relative_change=0.01).alerts) == 1


def test_stationary_series_give_no_alert_under_family_control() -> None:
    family = [
        series("latency_ms", noisy(100.0, 120, seed), model=f"m{seed}") for seed in range(200)
    ]
    report = detect_regressions(family)
    assert report.alerts == ()
    assert report.tests >= 200


def test_alerts_are_grouped_by_the_commit_range_they_fall_in() -> None:
    family = [
        series("latency_ms", step(100.0, 110.0, seed=1), model="resnet"),
        series("latency_ms", step(50.0, 60.0, seed=2), model="bert"),
        series("latency_ms", step(80.0, 90.0, seed=3, at=60), model="vit"),
    ]
    groups = detect_regressions(family).groups
    assert [(g.last_good_key, g.first_bad_key, len(g.alerts)) for g in groups] == [
        ("commit39", "commit40", 2),
        ("commit59", "commit60", 1),
    ]
    assert dict(groups[0].alerts[0].labels)["model"] == "bert"  # 20 % before 10 %


def test_a_change_of_environment_is_refused_not_reported_as_a_regression() -> None:
    bigger_batch = Environment.of(
        {"hardware_class": "cuda", "device_model": "A100", "batch_size": 16}
    )
    report = detect_regressions(
        [series("latency_ms", step(100.0, 180.0), environment=[A100] * 40 + [bigger_batch] * 40)]
    )
    assert report.alerts == ()
    (refused,) = report.refused
    assert (refused.index, refused.last_key, refused.first_key) == (40, "commit39", "commit40")
    assert refused.differences == ("batch_size: '8' != '16'",)


def test_describe_change_refuses_to_compare_across_environments() -> None:
    other = Environment.of({"hardware_class": "rocm", "device_model": "MI300X", "batch_size": 8})
    mixed = series("latency_ms", step(100.0, 100.0), environment=[A100] * 40 + [other] * 40)
    with pytest.raises(EnvironmentMismatch, match="device_model: 'A100' != 'MI300X'"):
        describe_change(mixed, 40)
    same = describe_change(mixed, 20, end=40)
    assert same.p_value > 0.01


def test_describe_change_names_a_split_outside_the_series() -> None:
    with pytest.raises(InvalidRequest, match="split 0"):
        describe_change(series("latency_ms", noisy(1.0, 10, 0)), 0)


def test_a_series_with_missing_keys_or_values_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="3 values but 2 order keys"):
        Series.of("latency_ms", [1.0, 2.0, 3.0], order_keys=["a", "b"])
    with pytest.raises(InvalidRequest, match="finite"):
        Series.of("latency_ms", [1.0, float("nan")])


@given(st.integers(0, 1000))
def test_direction_is_symmetric_for_throughput_and_latency(seed: int) -> None:
    values = step(100.0, 108.0, seed=seed)
    (slower,) = detect_regressions([series("latency_ms", values)]).alerts
    (less_throughput,) = detect_regressions([series("images_per_s", 200.0 - values)]).alerts
    assert slower.change_index == less_throughput.change_index
    assert slower.p_value == pytest.approx(less_throughput.p_value)
    assert slower.kind is less_throughput.kind is Kind.REGRESSION
