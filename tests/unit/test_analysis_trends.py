"""Trends: Theil-Sen slope with an interval, damped exponential-smoothing forecast."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dtf.analysis.trends import Trend, TrendVerdict, forecast, trend
from dtf.analysis.units import Direction
from dtf.errors import InvalidRequest

LOWER = Direction.LOWER_IS_BETTER


def test_a_steady_climb_with_one_spike_has_the_climbs_slope() -> None:
    values = 10.0 + 2.0 * np.arange(12, dtype=np.float64)
    values[5] = 1000.0
    result = trend(values, direction=LOWER, metric="latency_ms", unit="ms")
    assert result.slope == pytest.approx(2.0)
    assert result.slope_interval is not None
    assert result.slope_interval[0] <= 2.0 <= result.slope_interval[1]
    assert result.verdict is TrendVerdict.WORSENING
    assert result.summary.startswith("latency_ms: worsening, +2 ms per result")


@pytest.mark.parametrize(
    ("slope", "direction", "verdict"),
    [
        # latency going down is good
        (-1.0, Direction.LOWER_IS_BETTER, TrendVerdict.IMPROVING),
        # throughput going up is good
        (1.0, Direction.HIGHER_IS_BETTER, TrendVerdict.IMPROVING),
        (-1.0, Direction.HIGHER_IS_BETTER, TrendVerdict.WORSENING),
        # a two-sided metric only rises or falls
        (1.0, Direction.TWO_SIDED, TrendVerdict.RISING),
        (-1.0, Direction.TWO_SIDED, TrendVerdict.FALLING),
    ],
)
def test_the_verdict_follows_the_metrics_direction(
    slope: float, direction: Direction, verdict: TrendVerdict
) -> None:
    noise = np.random.default_rng(0).normal(0.0, 0.5, 9)
    assert trend(100.0 + slope * np.arange(9) + noise, direction=direction).verdict is verdict


def test_noise_around_a_level_is_flat() -> None:
    values = 50.0 + np.random.default_rng(1).normal(0.0, 1.0, 40)
    result = trend(values, direction=LOWER, steps=3)
    assert result.verdict is TrendVerdict.FLAT
    assert result.slope_interval is not None
    assert result.slope_interval[0] < 0 < result.slope_interval[1]


def test_four_rising_points_are_too_few_to_call_a_trend() -> None:
    # Kendall's exact p for four points in order is 2/24
    result = trend(np.array([1.0, 2.0, 3.0, 5.0]), direction=Direction.TWO_SIDED)
    assert result.p_value == pytest.approx(2 / 24)
    assert result.verdict is TrendVerdict.FLAT
    assert result.forecast is None
    assert result.summary.endswith("a forecast needs at least 10 results")


def test_two_points_have_no_slope_and_say_so() -> None:
    result = trend(np.array([1.0, 2.0]), direction=LOWER, metric="latency_ms")
    assert (result.slope, result.verdict, result.forecast) == (None, TrendVerdict.UNKNOWN, None)
    assert result.summary == "latency_ms: 2 results are too few for a trend; it needs at least 3"


def test_the_forecast_continues_the_trend_inside_widening_intervals() -> None:
    rng = np.random.default_rng(0)
    values = 100.0 + 0.5 * np.arange(30) + rng.normal(0.0, 1.0, 30)
    prediction = forecast(values, steps=5)
    assert prediction is not None and prediction.converged
    truth = 100.0 + 0.5 * np.arange(30, 35)
    lower, upper = np.array(prediction.lower), np.array(prediction.upper)
    assert np.all(lower < truth) and np.all(truth < upper)
    assert np.all(np.diff(upper - lower) > 0)
    assert np.all(np.diff(prediction.mean) > 0)


def test_a_constant_series_forecasts_its_value() -> None:
    prediction = forecast(np.full(12, 5.0), steps=3)
    assert prediction is not None
    assert prediction.mean == prediction.lower == prediction.upper == (5.0, 5.0, 5.0)


@pytest.mark.parametrize(
    ("values", "steps", "message"),
    [
        (np.array([1.0, np.inf, 2.0]), 5, "non-finite values"),
        (np.ones((3, 2)), 5, "one value per result"),
        (np.ones(12), 0, "forecast steps is 0"),
    ],
)
def test_unusable_input_is_refused(values: np.ndarray, steps: int, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        trend(values, direction=LOWER, steps=steps)


def test_a_trend_round_trips_through_json() -> None:
    values = 100.0 + 0.5 * np.arange(12) + np.random.default_rng(2).normal(0.0, 1.0, 12)
    result = trend(values, direction=LOWER, metric="latency_ms", unit="ms")
    assert result.forecast is not None
    assert msgspec.json.decode(msgspec.json.encode(result), type=Trend) == result


@given(
    st.lists(st.integers(-1000, 1000), min_size=3, max_size=9),
    st.integers(-1000, 1000),
)
def test_the_slope_ignores_an_offset_and_turns_with_the_sign(
    values: list[int], offset: int
) -> None:
    series = np.array(values, dtype=np.float64)
    base = trend(series, direction=LOWER)
    assert base.slope is not None and base.slope_interval is not None
    assert trend(series + offset, direction=LOWER).slope == pytest.approx(base.slope)
    negated = trend(-series, direction=LOWER)
    assert negated.slope == pytest.approx(-base.slope)
    assert negated.slope_interval == pytest.approx(
        (-base.slope_interval[1], -base.slope_interval[0])
    )
