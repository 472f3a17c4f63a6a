"""Anomalies: robust z-scores of one metric, isolation forest over several."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dtf.analysis.anomalies import (
    AnomalyMethod,
    AnomalyReport,
    isolation_forest_anomalies,
    robust_z_anomalies,
    robust_z_scores,
)
from dtf.errors import InvalidRequest

LATENCIES = np.array([100.0, 101, 99, 100, 102, 98, 100, 930, 101, 100])


def test_one_slow_task_among_steady_ones_is_the_only_anomaly() -> None:
    labels = [f"task-{i}" for i in range(len(LATENCIES))]
    report = robust_z_anomalies(LATENCIES, name="latency_ms", labels=labels)
    assert [(a.index, a.label) for a in report.anomalies] == [(7, "task-7")]
    # MAD is 1 (half the deviations are 0 or 1), so z = 0.6745 * 830
    assert report.anomalies[0].score == pytest.approx(0.6745 * 830)
    assert report.anomalies[0].values == {"latency_ms": 930.0}
    assert report.anomalies[0].summary == "task-7: latency_ms=930 (z=+559.8)"
    assert report.summary == "1 of 10 points anomalous in latency_ms (|robust z| > 3.5, median 100)"


def test_low_and_high_outliers_are_both_found_largest_first() -> None:
    values = np.array([10.0, 10.2, 9.8, 10.1, 9.9, 10.0, 4.0, 10.1, 9.9, 25.0])
    report = robust_z_anomalies(values)
    assert [a.index for a in report.anomalies] == [9, 6]
    assert report.anomalies[1].score < 0


def test_when_most_values_are_equal_the_mean_absolute_deviation_stands_in() -> None:
    values = np.array([5.0, 5, 5, 5, 5, 5, 9])
    # MAD is 0; mean absolute deviation is 4/7
    expected = 4.0 / (1.2533 * 4.0 / 7.0)
    assert robust_z_scores(values)[-1] == pytest.approx(expected)
    assert [a.index for a in robust_z_anomalies(values).anomalies] == [6]


def test_equal_values_have_no_anomalies() -> None:
    report = robust_z_anomalies(np.full(6, 3.0))
    assert report.anomalies == ()
    assert np.all(robust_z_scores(np.full(6, 3.0)) == 0)


def test_too_few_points_are_reported_not_scored() -> None:
    report = robust_z_anomalies(np.array([1.0, 50.0]), name="gpu_temp_c")
    assert report.anomalies == ()
    assert report.summary == "gpu_temp_c: 2 points are too few for robust_z; it needs at least 3"


@given(
    st.lists(st.integers(-1000, 1000), min_size=3, max_size=30),
    st.floats(0.01, 100.0),
    st.floats(-1e3, 1e3),
)
def test_robust_z_scores_do_not_depend_on_units_or_offset(
    values: list[int], scale: float, offset: float
) -> None:
    original = np.array(values, dtype=np.float64)
    rescaled = original * scale + offset
    assert robust_z_scores(rescaled) == pytest.approx(robust_z_scores(original), rel=1e-6, abs=1e-6)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        # a NaN names its metric
        (lambda: robust_z_anomalies(np.array([1.0, np.nan, 2.0]), name="cpu"), r"\['cpu'\]"),
        # a matrix is not one metric
        (lambda: robust_z_anomalies(np.ones((3, 2))), r"expected one value per point"),
        # one label per point
        (lambda: robust_z_anomalies(np.ones(3), labels=["a"]), "1 labels for 3 points"),
        # one column per feature name
        (
            lambda: isolation_forest_anomalies(np.ones((10, 2)), feature_names=["cpu"]),
            r"1 columns, one per name in \['cpu'\]",
        ),
    ],
)
def test_malformed_input_is_refused(call: Callable[[], object], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        call()


def snapshots(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cpu = rng.normal(50.0, 5.0, 200)
    memory = rng.normal(4000.0, 200.0, 200)
    temperature = rng.normal(65.0, 3.0, 200)
    matrix = np.column_stack([cpu, memory, temperature])
    matrix[42] = [95.0, 7000.0, 66.0]
    return matrix


NAMES = ("cpu_pct", "memory_mb", "gpu_temp_c")


def test_a_worker_far_out_on_two_metrics_tops_the_isolation_forest() -> None:
    labels = [f"w{i}" for i in range(200)]
    report = isolation_forest_anomalies(snapshots(), feature_names=NAMES, labels=labels, seed=1)
    assert report.method is AnomalyMethod.ISOLATION_FOREST
    top = report.anomalies[0]
    assert (top.index, top.label) == (42, "w42")
    assert top.score >= 0.65
    assert len(report.anomalies) <= 3
    assert top.deviations["cpu_pct"] > 5 and top.deviations["memory_mb"] > 5
    assert abs(top.deviations["gpu_temp_c"]) < 2
    assert top.summary.startswith("w42: isolation-forest score ")
    assert "cpu_pct=95" in top.summary and "memory_mb=7000" in top.summary


def test_the_same_seed_gives_the_same_isolation_forest_report() -> None:
    first = isolation_forest_anomalies(snapshots(), feature_names=NAMES, seed=3)
    again = isolation_forest_anomalies(
        snapshots(), feature_names=NAMES, seed=np.random.default_rng(3)
    )
    assert first.anomalies[0].index == again.anomalies[0].index == 42
    assert first == isolation_forest_anomalies(snapshots(), feature_names=NAMES, seed=3)


def test_the_isolation_forest_needs_eight_points() -> None:
    report = isolation_forest_anomalies(np.ones((5, 3)), feature_names=NAMES)
    assert report.anomalies == ()
    assert "needs at least 8" in report.summary


def test_a_report_round_trips_through_json() -> None:
    report = isolation_forest_anomalies(snapshots(), feature_names=NAMES, seed=1)
    decoded = msgspec.json.decode(msgspec.json.encode(report), type=AnomalyReport)
    assert decoded == report
