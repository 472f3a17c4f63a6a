"""Trends: how a series moves from one result to the next, and where it is heading.

- Slope: Theil-Sen, the median of the slopes between every pair of points,
  against the result index, with its confidence interval
  (``scipy.stats.theilslopes``). A few outlier spikes barely move it. The p-value
  is Kendall's tau against the index (the Mann-Kendall trend test). The verdict
  says worsening or improving by the metric's direction when the interval
  excludes 0 and the p-value is below ``1 - confidence`` (rising or falling for
  two-sided metrics), else flat.
- Forecast: exponential smoothing with a damped additive trend, ETS(A,Ad,N) from
  statsmodels, ``steps`` results ahead with prediction intervals. The damping
  keeps a recent slope from being extrapolated for ever.
- Short series: the slope needs 3 points, the forecast 10; with fewer the field
  is None and the summary says how many are needed. A constant series forecasts
  its value with an interval of zero width (there is nothing to fit).
"""

from __future__ import annotations

import enum
import warnings

import msgspec
import numpy as np
import pandas as pd
from msgspec import Struct
from scipy import stats
from statsmodels.tools.sm_exceptions import ConvergenceWarning
from statsmodels.tsa.exponential_smoothing.ets import ETSModel

from dtf.analysis.series import FloatArray
from dtf.analysis.units import Direction
from dtf.errors import InvalidRequest

MIN_POINTS_SLOPE = 3
MIN_POINTS_FORECAST = 10
FORECAST_METHOD = "ETS(A,Ad,N)"


class TrendVerdict(enum.StrEnum):
    IMPROVING = "improving"
    WORSENING = "worsening"
    RISING = "rising"
    FALLING = "falling"
    FLAT = "flat"
    UNKNOWN = "unknown"


class Forecast(Struct, frozen=True):
    """The next ``steps`` results: point forecasts and prediction intervals.
    ``converged`` is False when the likelihood optimiser stopped early."""

    steps: int
    mean: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    confidence: float
    converged: bool
    method: str = FORECAST_METHOD


class Trend(Struct, frozen=True):
    """Slopes are per result; ``relative_slope`` divides by ``|median|``."""

    metric: str
    unit: str
    direction: Direction
    points: int
    median: float | None
    slope: float | None
    slope_interval: tuple[float, float] | None
    relative_slope: float | None
    p_value: float | None
    confidence: float
    verdict: TrendVerdict
    forecast: Forecast | None
    summary: str


def trend(
    values: FloatArray,
    *,
    direction: Direction,
    metric: str = "value",
    unit: str = "",
    steps: int = 5,
    confidence: float = 0.95,
) -> Trend:
    """The slope of a series in recorded order, and a forecast ``steps`` ahead."""
    series = _checked_series(values, metric)
    direction = Direction(direction)
    result = Trend(
        metric=metric,
        unit=unit,
        direction=direction,
        points=len(series),
        median=float(np.median(series)) if len(series) else None,
        slope=None,
        slope_interval=None,
        relative_slope=None,
        p_value=None,
        confidence=confidence,
        verdict=TrendVerdict.UNKNOWN,
        forecast=forecast(series, steps=steps, confidence=confidence),
        summary="",
    )
    if len(series) >= MIN_POINTS_SLOPE:
        result = _with_slope(result, series)
    return msgspec.structs.replace(result, summary=_summary(result))


def forecast(values: FloatArray, *, steps: int = 5, confidence: float = 0.95) -> Forecast | None:
    """ETS(A,Ad,N) forecast ``steps`` ahead; None below ``MIN_POINTS_FORECAST`` points."""
    if steps < 1:
        raise InvalidRequest(f"forecast steps is {steps}; ask for at least 1")
    if len(values) < MIN_POINTS_FORECAST:
        return None
    if np.ptp(values) == 0:
        flat = (float(values[0]),) * steps
        return Forecast(steps, flat, flat, flat, confidence, converged=True)
    with warnings.catch_warnings():
        # Whether the optimiser converged is reported in Forecast.converged instead.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = ETSModel(pd.Series(values), error="add", trend="add", damped_trend=True)
        fitted = model.fit(disp=False)
    frame = fitted.get_prediction(start=len(values), end=len(values) + steps - 1).summary_frame(
        alpha=1.0 - confidence
    )
    return Forecast(
        steps=steps,
        mean=tuple(float(v) for v in frame["mean"]),
        lower=tuple(float(v) for v in frame["pi_lower"]),
        upper=tuple(float(v) for v in frame["pi_upper"]),
        confidence=confidence,
        converged=bool(fitted.mle_retvals["converged"]),
    )


def _with_slope(result: Trend, series: FloatArray) -> Trend:
    index = np.arange(len(series), dtype=np.float64)
    theil_sen = stats.theilslopes(series, index, alpha=result.confidence)
    slope, low, high = (
        float(theil_sen.slope),
        float(theil_sen.low_slope),
        float(theil_sen.high_slope),
    )
    tau = stats.kendalltau(index, series)
    p_value = 1.0 if np.isnan(tau.pvalue) else float(tau.pvalue)
    median = result.median or 0.0
    return msgspec.structs.replace(
        result,
        slope=slope,
        slope_interval=(low, high),
        relative_slope=slope / abs(median) if median else None,
        p_value=p_value,
        verdict=_verdict(low, high, p_value, slope, result),
    )


def _verdict(low: float, high: float, p_value: float, slope: float, result: Trend) -> TrendVerdict:
    # Both must agree: with few points the interval alone is too narrow.
    if low <= 0.0 <= high or p_value > 1.0 - result.confidence:
        return TrendVerdict.FLAT
    if result.direction is Direction.TWO_SIDED:
        return TrendVerdict.RISING if slope > 0 else TrendVerdict.FALLING
    is_better = (slope > 0) == (result.direction is Direction.HIGHER_IS_BETTER)
    return TrendVerdict.IMPROVING if is_better else TrendVerdict.WORSENING


def _summary(result: Trend) -> str:
    unit = f" {result.unit}" if result.unit else ""
    if result.slope is None or result.slope_interval is None:
        return (
            f"{result.metric}: {result.points} results are too few for a trend; "
            f"it needs at least {MIN_POINTS_SLOPE}"
        )
    low, high = result.slope_interval
    relative = "" if result.relative_slope is None else f" ({100 * result.relative_slope:+.2g} %)"
    text = (
        f"{result.metric}: {result.verdict}, {result.slope:+.4g}{unit} per result{relative}, "
        f"{100 * result.confidence:g} % CI {low:+.4g}..{high:+.4g}, over {result.points} "
        f"results (p={result.p_value:.2g})"
    )
    return f"{text}; {_forecast_words(result.forecast, unit)}"


def _forecast_words(prediction: Forecast | None, unit: str) -> str:
    if prediction is None:
        return f"a forecast needs at least {MIN_POINTS_FORECAST} results"
    words = (
        f"next {prediction.steps}: {prediction.mean[0]:.4g}..{prediction.mean[-1]:.4g}{unit} "
        f"({100 * prediction.confidence:g} % PI {min(prediction.lower):.4g}.."
        f"{max(prediction.upper):.4g})"
    )
    return words if prediction.converged else f"{words}, fit did not converge"


def _checked_series(values: FloatArray, metric: str) -> FloatArray:
    series = np.asarray(values, dtype=np.float64)
    if series.ndim != 1:
        raise InvalidRequest(f"{metric} has shape {series.shape}; a series is one value per result")
    if not np.all(np.isfinite(series)):
        raise InvalidRequest(f"{metric} has non-finite values; drop them before asking for a trend")
    return series
