"""Flaky tests: pass and fail on the same code, flake rate with a credible interval."""

from __future__ import annotations

import itertools
from random import Random

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from dtf.analysis.flaky import FlakyTest, TestAttempt, flaky_tests
from dtf.errors import InvalidRequest

clock = itertools.count(1)


def attempt(
    outcome: str,
    revision: str = "c1",
    hardware: str = "cpu",
    node_id: str = "t::x",
    message: str = "",
    at: float | None = None,
) -> TestAttempt:
    return TestAttempt(
        node_id=node_id,
        outcome=outcome,
        revision=revision,
        hardware_class=hardware,
        recorded_at=float(next(clock)) if at is None else at,
        message=message,
    )


def flaky_on_cuda_only() -> list[TestAttempt]:
    """Ten commits; three runs each on cpu (all pass) and cuda (the second fails)."""
    attempts = []
    for commit, run in itertools.product(range(10), range(3)):
        attempts.append(attempt("passed", f"c{commit}", "cpu"))
        cuda_outcome = "failed" if run == 1 else "passed"
        attempts.append(attempt(cuda_outcome, f"c{commit}", "cuda", message=f"nan at c{commit}"))
    return attempts


def test_a_test_that_fails_a_third_of_the_time_on_cuda_only_is_flaky_only_on_cuda() -> None:
    [flaky] = flaky_tests(flaky_on_cuda_only())
    assert flaky.only_on == ("cuda",)
    cuda, cpu = flaky.hardware["cuda"], flaky.hardware["cpu"]
    assert (cuda.trials, cuda.flakes, cuda.flaky_revisions) == (30, 10, 10)
    assert (cpu.trials, cpu.flakes, cpu.flaky_revisions) == (30, 0, 0)
    # Jeffreys prior: Beta(1/2 + 10, 1/2 + 20)
    assert cuda.flake_rate == pytest.approx(10.5 / 31)
    assert cuda.interval == pytest.approx(stats.beta(10.5, 20.5).ppf([0.025, 0.975]).tolist())
    assert flaky.overall.flake_rate == pytest.approx(10.5 / 61)
    # within each cuda commit: pass, fail, pass; cpu never flips
    assert flaky.flip_rate == pytest.approx(20 / 40)
    assert (flaky.last_failure_hardware, flaky.last_failure_revision) == ("cuda", "c9")
    assert flaky.last_failure_message == "nan at c9"
    assert "only on cuda" in flaky.summary
    assert flaky.summary.startswith("t::x: flaky on 10 of 10 revisions; flake rate 17 % (95 % CI")


def test_tests_that_never_mix_outcomes_on_one_revision_are_not_flaky() -> None:
    attempts = [
        # passes everywhere
        attempt("passed", "c1", node_id="t::steady"),
        attempt("passed", "c2", node_id="t::steady"),
        # broke at c2 and stayed broken: a real failure, not a flake
        attempt("passed", "c1", node_id="t::broke"),
        attempt("failed", "c2", node_id="t::broke"),
        attempt("failed", "c2", node_id="t::broke"),
        # passes on cpu, fails on cuda at the same commit: hardware-specific, not flaky
        attempt("passed", "c1", "cpu", node_id="t::cuda_broken"),
        attempt("failed", "c1", "cuda", node_id="t::cuda_broken"),
    ]
    assert flaky_tests(attempts) == []


def test_only_revisions_that_passed_count_towards_the_flake_rate() -> None:
    attempts = [
        attempt("failed", "c1"),
        attempt("failed", "c1"),
        attempt("failed", "c1"),
        attempt("passed", "c2"),
        attempt("failed", "c2", message="timeout"),
    ]
    [flaky] = flaky_tests(attempts)
    overall = flaky.overall
    assert (overall.attempts, overall.failures, overall.trials, overall.flakes) == (5, 4, 2, 1)
    assert (overall.revisions, overall.flaky_revisions) == (2, 1)
    assert overall.flake_rate == pytest.approx(0.5)


def test_the_flip_rate_counts_changes_between_consecutive_attempts_in_time_order() -> None:
    attempts = [
        attempt("passed", at=4.0),
        attempt("failed", at=2.0, message="second"),
        attempt("passed", at=1.0),
        attempt("passed", at=3.0),
    ]
    [flaky] = flaky_tests(attempts)
    # in time order: pass, fail, pass, pass
    assert flaky.flip_rate == pytest.approx(2 / 3)
    assert (flaky.last_failure_at, flaky.last_failure_message) == (2.0, "second")


def test_equally_flaky_classes_and_a_single_class_have_no_only_on_note() -> None:
    both = [
        attempt(outcome, f"c{commit}", hardware)
        for commit in range(5)
        for hardware in ("cpu", "cuda")
        for outcome in ("passed", "failed")
    ]
    [flaky] = flaky_tests(both)
    assert flaky.only_on == ()
    [single] = flaky_tests([attempt("passed"), attempt("failed")])
    assert single.only_on == ()
    assert "only on" not in single.summary


def test_the_flakiest_test_comes_first() -> None:
    attempts = [attempt("passed", node_id="t::rare") for _ in range(9)]
    attempts += [attempt("failed", node_id="t::rare")]
    attempts += [attempt("passed", node_id="t::often"), attempt("failed", node_id="t::often")]
    assert [test.node_id for test in flaky_tests(attempts)] == ["t::often", "t::rare"]


def test_skips_are_not_counted_and_unknown_outcomes_are_refused() -> None:
    attempts = [attempt("passed"), attempt("skipped"), attempt("error"), attempt("xfailed")]
    [flaky] = flaky_tests(attempts)
    assert (flaky.overall.attempts, flaky.overall.failures) == (3, 1)
    with pytest.raises(InvalidRequest, match="'t::x' has outcome 'crashed'"):
        flaky_tests([attempt("crashed")])


def test_a_flaky_test_round_trips_through_json() -> None:
    [flaky] = flaky_tests(flaky_on_cuda_only())
    assert msgspec.json.decode(msgspec.json.encode(flaky), type=FlakyTest) == flaky


histories = st.lists(
    st.tuples(
        st.sampled_from(["passed", "failed", "skipped"]),
        st.sampled_from(["c1", "c2"]),
        st.sampled_from(["cpu", "cuda"]),
    ),
    max_size=30,
)


@given(histories, st.randoms(use_true_random=False))
def test_the_answer_does_not_depend_on_the_order_attempts_arrive_in(
    history: list[tuple[str, str, str]], random: Random
) -> None:
    attempts = [
        attempt(outcome, revision, hardware, at=float(i))
        for i, (outcome, revision, hardware) in enumerate(history)
    ]
    shuffled = list(attempts)
    random.shuffle(shuffled)
    assert flaky_tests(shuffled) == flaky_tests(attempts)
    for flaky in flaky_tests(attempts):
        low, high = flaky.overall.interval
        assert 0.0 <= low <= flaky.overall.flake_rate <= high <= 1.0
