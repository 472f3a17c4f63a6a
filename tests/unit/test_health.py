"""The health score: what counts against a worker, how it fades, how it is explained."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dtf.core.health import (
    PRIOR_GOOD,
    HealthSample,
    WorkerHealth,
    connection_dropped,
    describe,
    explain,
    fault,
    score,
    success,
    went_silent,
)

HALF_LIFE = 600.0


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        ([], 100.0),
        ([success(0.0)] * 10, 100.0),
        ([fault(0.0, "cuda_error")], 100 * 5 / 6),
        ([fault(0.0, "cuda_error")] * 2, 100 * 5 / 7),
        ([fault(0.0, "cuda_error")] * 3, 100 * 5 / 8),
        ([success(0.0)] * 5 + [fault(0.0, "hardware_error")] * 5, 100 * 10 / 15),
        ([connection_dropped(0.0)] * 2, 100 * 5 / 6),
        ([went_silent(0.0)], 100 * 5 / 6),
    ],
)
def test_score_of_fresh_samples(samples: list[HealthSample], expected: float) -> None:
    assert score(samples, 0.0, HALF_LIFE) == pytest.approx(expected)


def test_three_faults_in_a_row_fall_below_the_default_threshold_two_do_not() -> None:
    assert score([fault(0.0, "x")] * 2, 0.0, HALF_LIFE) >= 70
    assert score([fault(0.0, "x")] * 3, 0.0, HALF_LIFE) < 70


def test_a_fault_one_half_life_old_weighs_half() -> None:
    assert score([fault(0.0, "x")], HALF_LIFE, HALF_LIFE) == pytest.approx(
        100 * PRIOR_GOOD / (PRIOR_GOOD + 0.5)
    )


def test_old_faults_fade_until_only_the_prior_is_left() -> None:
    samples = [fault(0.0, "x")] * 10
    later = [score(samples, t * HALF_LIFE, HALF_LIFE) for t in range(12)]
    assert later == sorted(later)
    assert later[-1] > 99


samples_strategy = st.lists(
    st.builds(
        HealthSample,
        at=st.floats(0, 10_000),
        good=st.sampled_from([0.0, 1.0]),
        bad=st.sampled_from([0.0, 0.5, 1.0]),
        what=st.sampled_from(["success", "cuda_error", "connection dropped"]),
    ),
    max_size=40,
)


@given(samples_strategy, st.floats(10_000, 20_000))
def test_score_is_between_0_and_100(samples: list[HealthSample], now: float) -> None:
    assert 0.0 <= score(samples, now, HALF_LIFE) <= 100.0


@given(samples_strategy, st.floats(10_000, 20_000))
def test_a_fault_never_raises_the_score_and_a_success_never_lowers_it(
    samples: list[HealthSample], now: float
) -> None:
    before = score(samples, now, HALF_LIFE)
    assert score([*samples, fault(now, "x")], now, HALF_LIFE) <= before + 1e-9
    assert score([*samples, success(now)], now, HALF_LIFE) >= before - 1e-9


def test_explain_counts_faults_by_kind_and_successes() -> None:
    samples = [
        fault(0.0, "cuda_error"),
        fault(1.0, "cuda_error"),
        fault(2.0, "worker_crash"),
        success(3.0),
    ]
    assert explain(samples, 3.0, HALF_LIFE) == "3 faults (cuda_error x2, worker_crash), 1 success"
    assert describe(samples, 3.0, HALF_LIFE).startswith("health 67 (3 faults")


def test_explain_forgets_what_has_faded() -> None:
    samples = [fault(0.0, "cuda_error"), success(4 * HALF_LIFE)]
    assert explain(samples, 4 * HALF_LIFE, HALF_LIFE) == "1 success"
    assert explain([], 0.0, HALF_LIFE) == "no recent results"


def test_the_record_keeps_only_the_latest_samples() -> None:
    health = WorkerHealth()
    for n in range(100):
        health.add(success(float(n)))
    assert len(health.samples) == 32
    assert health.samples[-1].at == 99.0


def test_a_worker_with_only_successes_scores_exactly_100() -> None:
    samples = [success(9413.0), success(1553.953125)]
    assert score(samples, 10_000.0, HALF_LIFE) == 100.0
