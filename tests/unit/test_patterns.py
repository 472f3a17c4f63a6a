"""Failure pattern detection: synthetic histories, the state's records, and invariants."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dtf.core import commands as c
from dtf.core import pattern_model
from dtf.core.failures import FailureType
from dtf.core.model import FailureKind, HardwareClass, Outcome
from dtf.core.pattern_model import LinearModel, feature_names
from dtf.core.pattern_records import (
    FailureRecord,
    SuccessRecord,
    attempt_hardware,
    failures_of,
    successes_of,
)
from dtf.core.patterns import (
    FailurePattern,
    PatternKind,
    PatternThresholds,
    detect_patterns,
    noisy_or,
)
from dtf.core.records import AttemptRecord, TaskRecord, TaskStatus, WorkerRecord
from dtf.testing.factories import StateDriver, capabilities, task_spec

F = FailureType
K = PatternKind
NOW = 10_000.0


def fail(
    task: str,
    worker: str,
    at: float,
    failure_type: FailureType = F.SOFTWARE_ERROR,
    hardware: str = "cpu",
    *,
    attempt: int = 1,
    evidence: str = "",
) -> FailureRecord:
    return FailureRecord(task, attempt, worker, hardware, failure_type, NOW - 1000 + at, evidence)


def ok(task: str, worker: str, at: float, hardware: str = "cpu") -> SuccessRecord:
    return SuccessRecord(task, worker, hardware, NOW - 1000 + at)


def spaced(*failures: FailureRecord) -> list[FailureRecord]:
    """The failures 100 s apart, so no burst forms unless a row wants one."""
    return [
        FailureRecord(
            f.task_id,
            f.attempt,
            f.worker_id,
            f.hardware_class,
            f.failure_type,
            NOW - 900 + 100 * i,
            f.evidence,
        )
        for i, f in enumerate(failures)
    ]


def found(patterns: list[FailurePattern]) -> dict[tuple[PatternKind, str], FailurePattern]:
    return {(p.kind, p.key): p for p in patterns}


CUDA = F.CUDA_ERROR
COMM = F.COMMUNICATION_ERROR

# (failures, successes, pattern, expected (count, tasks, workers, corroborating) or None if absent)
CASES = [
    # one worker fails three tasks that then succeed elsewhere: quarantine it
    (
        spaced(fail("a", "w1", 0), fail("b", "w1", 0), fail("c", "w1", 0)),
        [ok("a", "w2", 990), ok("b", "w2", 990), ok("c", "w3", 990)],
        (K.WORKER, "w1"),
        (3, 3, 1, 3),
    ),
    # two failed tasks are not enough to blame a worker
    (spaced(fail("a", "w1", 0), fail("b", "w1", 0)), [], (K.WORKER, "w1"), None),
    # one task failing three times on a worker is not "many different tasks"
    (
        spaced(*(fail("a", "w1", 0, attempt=n) for n in (1, 2, 3))),
        [],
        (K.WORKER, "w1"),
        None,
    ),
    # tasks that failed on every worker they met blame no worker
    (
        spaced(*(fail(t, w, 0) for t in "abc" for w in ("w1", "w2"))),
        [],
        (K.WORKER, "w1"),
        None,
    ),
    # the same tasks are poison: each failed on two workers that ran other work fine
    (
        spaced(*(fail(t, w, 0) for t in "abc" for w in ("w1", "w2"))),
        [ok("d", "w1", 990), ok("e", "w2", 990)],
        (K.TASK, "a"),
        (2, 1, 2, 2),
    ),
    # a task that failed on two workers but then succeeded is flaky, not poison
    (
        spaced(fail("a", "w1", 0), fail("a", "w2", 0, attempt=2)),
        [ok("a", "w3", 990)],
        (K.TASK, "a"),
        None,
    ),
    # a task failing repeatedly on one worker is not a poison task
    (
        spaced(*(fail("a", "w1", 0, attempt=n) for n in (1, 2, 3))),
        [],
        (K.TASK, "a"),
        None,
    ),
    # CUDA errors on three CUDA workers: the fleet, with one task that ran on CPU instead
    (
        spaced(
            fail("a", "g1", 0, CUDA, "cuda"),
            fail("b", "g2", 0, CUDA, "cuda"),
            fail("c", "g3", 0, CUDA, "cuda"),
        ),
        [ok("a", "c1", 990, "cpu")],
        (K.HARDWARE, "cuda"),
        (3, 3, 3, 1),
    ),
    # hardware faults all on one worker are that worker's, not the fleet's
    (
        spaced(*(fail(t, "g1", 0, CUDA, "cuda") for t in "abc")),
        [],
        (K.HARDWARE, "cuda"),
        None,
    ),
    # software errors on GPU workers say nothing about the GPUs
    (
        spaced(
            *(
                fail(t, w, 0, F.SOFTWARE_ERROR, "cuda")
                for t, w in zip("abc", ("g1", "g2", "g3"), strict=True)
            )
        ),
        [],
        (K.HARDWARE, "cuda"),
        None,
    ),
    # connection errors across four tasks on two workers: an infrastructure problem
    (
        spaced(
            fail("a", "w1", 0, COMM),
            fail("b", "w2", 0, COMM),
            fail("c", "w1", 0, COMM),
            fail("d", "w2", 0, COMM),
        ),
        [],
        (K.FAILURE_TYPE, "communication_error"),
        (4, 4, 2, 0),
    ),
    # two tasks timing out are not yet a pattern
    (
        spaced(fail("a", "w1", 0, F.TIMEOUT), fail("b", "w2", 0, F.TIMEOUT)),
        [],
        (K.FAILURE_TYPE, "timeout"),
        None,
    ),
    # six failures within 25 s on three workers: a burst
    (
        [fail(f"t{i}", f"w{i % 3}", 5.0 * i) for i in range(6)],
        [],
        (K.BURST, "fleet"),
        (6, 6, 3, 0),
    ),
    # the same six failures 100 s apart are no burst
    (spaced(*(fail(f"t{i}", f"w{i % 3}", 0) for i in range(6))), [], (K.BURST, "fleet"), None),
    # the densest minute counts, not the whole history
    (
        [fail(f"t{i}", "w1", 10.0 * i) for i in range(5)] + [fail("late", "w1", 900)],
        [],
        (K.BURST, "fleet"),
        (5, 5, 1, 0),
    ),
    # failures before the window are forgotten
    (
        [fail("a", "w1", -5000), fail("b", "w1", -5000), fail("c", "w1", 0)],
        [],
        (K.WORKER, "w1"),
        None,
    ),
]


@pytest.mark.parametrize(("failures", "successes", "pattern", "expected"), CASES)
def test_detected_patterns(
    failures: list[FailureRecord],
    successes: list[SuccessRecord],
    pattern: tuple[PatternKind, str],
    expected: tuple[int, int, int, int] | None,
) -> None:
    detected = found(detect_patterns(failures, successes=successes, now=NOW))
    if expected is None:
        assert pattern not in detected
        return
    got = detected[pattern]
    assert (got.count, got.tasks, got.workers, got.corroborating) == expected
    assert 0 < got.confidence <= 1


# (pattern kind, failures, successes, expected confidence)
CONFIDENCES = [
    # three tasks failed only on w1, none seen elsewhere: 1 - 0.8^3
    (K.WORKER, spaced(fail("a", "w1", 0), fail("b", "w1", 0), fail("c", "w1", 0)), [], 0.488),
    # one of them then succeeded on w2: 1 - 0.8^2 * 0.6
    (
        K.WORKER,
        spaced(fail("a", "w1", 0), fail("b", "w1", 0), fail("c", "w1", 0)),
        [ok("a", "w2", 990)],
        0.616,
    ),
    # a poison task on two workers of unknown health: 1 - 0.8^2
    (K.TASK, spaced(fail("a", "w1", 0), fail("a", "w2", 0, attempt=2)), [], 0.36),
    # ... on two workers that ran other work fine: 1 - 0.6^2
    (
        K.TASK,
        spaced(fail("a", "w1", 0), fail("a", "w2", 0, attempt=2)),
        [ok("x", "w1", 990), ok("y", "w2", 990)],
        0.64,
    ),
    # software errors in three tasks on one worker are weak evidence: 1 - 0.9^3
    (
        K.FAILURE_TYPE,
        spaced(fail("a", "w1", 0), fail("b", "w1", 0), fail("c", "w1", 0)),
        [],
        0.271,
    ),
]


@pytest.mark.parametrize(("kind", "failures", "successes", "expected"), CONFIDENCES)
def test_confidence_follows_the_documented_weights(
    kind: PatternKind,
    failures: list[FailureRecord],
    successes: list[SuccessRecord],
    expected: float,
) -> None:
    patterns = [
        p for p in detect_patterns(failures, successes=successes, now=NOW) if p.kind is kind
    ]
    assert [p.confidence for p in patterns] == [expected]


def test_actions_name_what_to_do() -> None:
    failures = spaced(
        fail("a", "w1", 0, COMM),
        fail("b", "w1", 0, COMM),
        fail("c", "w2", 0, COMM),
        fail("p", "w1", 0),
        fail("p", "w2", 0, attempt=2),
    )
    actions = {
        p.key: p.action for p in detect_patterns(failures, successes=[ok("a", "w3", 990)], now=NOW)
    }
    assert actions["w1"] == (
        "Quarantine worker w1: it failed 3 different tasks, 1 of which succeeded on other workers: `dtf workers disable w1`."
    )
    assert actions["communication_error"].startswith(
        "Infrastructure problem: 3 tasks lost their connections on 2 workers"
    )
    assert actions["p"].endswith("fix the task, the workers are not at fault.")


def test_examples_are_recent_distinct_quotes() -> None:
    failures = spaced(
        *(
            fail(t, "w1", 0, CUDA, "cuda", evidence=e)
            for t, e in zip("abcde", ["x", "y", "y", "z", "w"], strict=True)
        )
    )
    worker = found(detect_patterns(failures, now=NOW))[(K.WORKER, "w1")]
    assert worker.examples == [
        "e attempt 1 on w1: w",
        "d attempt 1 on w1: z",
        "c attempt 1 on w1: y",
    ]


def test_order_thresholds_and_min_confidence() -> None:
    """Ranked by learned probability where the kind has a model (the worker,
    0.945 from the committed weights), else by confidence (the failure type, 0.631)."""
    failures = spaced(
        *(fail(t, w, 0, COMM) for t, w in zip("abcd", ("w1", "w1", "w1", "w2"), strict=True))
    )
    patterns = detect_patterns(failures, now=NOW)
    assert [(p.kind, p.key, p.confidence, p.learned_probability) for p in patterns] == [
        (K.WORKER, "w1", 0.488, 0.945),
        (K.FAILURE_TYPE, "communication_error", 0.631, None),
    ]
    strict = PatternThresholds(type_min_tasks=5)
    assert [p.kind for p in detect_patterns(failures, now=NOW, thresholds=strict)] == [K.WORKER]
    assert detect_patterns(failures, now=NOW, min_confidence=0.99) == []


def test_min_probability_leaves_out_only_scored_patterns_below_it() -> None:
    failures = spaced(
        *(fail(t, w, 0, COMM) for t, w in zip("abcd", ("w1", "w1", "w1", "w2"), strict=True))
    )
    every = detect_patterns(failures, now=NOW)
    assert detect_patterns(failures, now=NOW, min_probability=0.945) == every
    assert detect_patterns(failures, now=NOW, min_probability=0.95) == every[1:]
    assert detect_patterns(failures, now=NOW, min_probability=1.0) == every[1:]


def test_window_is_measured_back_from_now() -> None:
    failures = spaced(fail("a", "w1", 0), fail("b", "w1", 0), fail("c", "w1", 0))
    assert detect_patterns(failures, now=NOW, window_s=600) == []
    assert detect_patterns(failures, now=NOW - 2000) == []
    assert detect_patterns(failures, now=NOW, window_s=1000) != []


def test_noisy_or() -> None:
    assert noisy_or() == 0.0
    assert noisy_or((0.5, 1), (0.5, 1)) == 0.75
    assert noisy_or((0.5, -3)) == 0.0


# -- records from the real state ---------------------------------------------------


def test_failures_and_successes_of_a_state() -> None:
    driver = StateDriver()
    driver.register("g1", capabilities(hardware=["cpu", "cuda"]))
    driver.submit(
        ("gpu", task_spec(requirements={"hardware": ["cuda"]}, retry_policy={"max_retries": 0})),
        at=1.0,
    )
    driver.report(
        "gpu",
        Outcome(failure=FailureKind.EXIT_NONZERO, exit_code=1, error="CUDA error: launch failure"),
        at=2.0,
    )
    driver.submit(("plain", task_spec()), at=3.0)
    driver.succeed("plain", at=4.0)
    assert failures_of(driver.state) == [
        FailureRecord(
            "gpu", 1, "g1", "cuda", F.CUDA_ERROR, 2.0, "error: CUDA error: launch failure"
        )
    ]
    assert successes_of(driver.state) == [SuccessRecord("plain", "g1", "cpu", 4.0)]


def test_attempts_lost_with_a_coordinator_node_are_no_failures() -> None:
    """A node's loss says nothing about its workers or tasks: no quarantine, no poison."""
    driver = StateDriver()
    for worker_id, node_id in (("w1", "n1"), ("w2", "n2")):
        driver.apply(
            c.RegisterWorker(driver.now, worker_id, "s1", capabilities(), 1, node_id=node_id)
        )
    driver.submit(("t", task_spec(retry_policy={"retry_delay_seconds": 0.0})), at=1.0)
    driver.apply(c.CoordinatorNodeLost(2.0, driver.state.workers[driver.worker_of("t")].node_id))
    driver.tick(12.0)  # the lease expires: lost with the node, retried on the other worker
    assert driver.state.tasks["t"].attempts[0].failure is FailureKind.COORDINATOR_LOST
    assert failures_of(driver.state) == []


H = HardwareClass

# (hardware recovery switched the attempt to, task requirements, attempt's stage, worker's hardware, expected)
HARDWARE_OF_ATTEMPTS = [
    # recovery switched the attempt: its first class, whatever the worker offers
    ([H.WEBGPU, H.CPU], {}, 0, [H.CPU], "webgpu"),
    # the first required class the worker offers
    (None, {"hardware": ["tpu", "cuda"]}, 0, [H.CPU, H.CUDA], "cuda"),
    # the requirement stage the attempt ran under, here the fallback
    (None, {"hardware": ["cuda"], "fallbacks": [{"hardware": ["rocm"]}]}, 1, [H.ROCM], "rocm"),
    # nothing required: CPU
    (None, {}, 0, [H.CPU, H.CUDA], "cpu"),
    # the worker is no longer known: CPU
    (None, {"hardware": ["cuda"]}, 0, None, "cpu"),
]


@pytest.mark.parametrize(
    ("switched", "requirements", "stage", "offered", "expected"), HARDWARE_OF_ATTEMPTS
)
def test_hardware_an_attempt_ran_on(
    switched: list[HardwareClass] | None,
    requirements: dict[str, Any],
    stage: int,
    offered: list[HardwareClass] | None,
    expected: str,
) -> None:
    task = TaskRecord("t", task_spec(requirements=requirements), 1, 0.0, TaskStatus.FAILED)
    attempt = AttemptRecord(1, "w1", 1, 0.0, requirement_stage=stage, hardware=switched)
    worker = None
    if offered is not None:
        worker = WorkerRecord(
            "w1", capabilities(hardware=[h.value for h in offered]), 1, 0.0, 0.0, "s1"
        )
    assert attempt_hardware(task, attempt, worker) == expected


# -- properties -----------------------------------------------------------------------

TASKS = st.sampled_from(["a", "b", "c", "d", "e"])
WORKERS = st.sampled_from(["w1", "w2", "w3", "w4"])
HARDWARE = st.sampled_from(["cpu", "cuda", "webgpu"])
TIMES = st.floats(-200.0, 1000.0, allow_nan=False)
failure_records = st.builds(
    fail,
    TASKS,
    WORKERS,
    TIMES,
    st.sampled_from(list(F)),
    HARDWARE,
    attempt=st.integers(1, 4),
    evidence=st.sampled_from(["", "x", "y"]),
)
success_records = st.builds(ok, TASKS, WORKERS, TIMES, HARDWARE)
histories = st.tuples(
    st.lists(failure_records, max_size=30), st.lists(success_records, max_size=10)
)


@given(histories)
def test_confidence_and_counts_are_in_range(
    history: tuple[list[FailureRecord], list[SuccessRecord]],
) -> None:
    failures, successes = history
    for pattern in detect_patterns(failures, successes=successes, now=NOW):
        assert 0 < pattern.confidence <= 1
        assert 1 <= pattern.tasks <= pattern.count and 1 <= pattern.workers <= pattern.count
        assert pattern.first_at <= pattern.last_at
        assert len(pattern.examples) <= 3


@given(histories, st.randoms(use_true_random=False))
def test_detection_is_deterministic(
    history: tuple[list[FailureRecord], list[SuccessRecord]], rng: random.Random
) -> None:
    failures, successes = history
    shuffled = list(failures)
    rng.shuffle(shuffled)
    first = detect_patterns(failures, successes=successes, now=NOW)
    assert detect_patterns(shuffled, successes=successes[::-1], now=NOW) == first


def assert_nothing_lost(before: list[FailurePattern], after: list[FailurePattern]) -> None:
    now_found = found(after)
    for pattern in before:
        later = now_found[(pattern.kind, pattern.key)]
        assert later.count >= pattern.count
        assert later.confidence >= pattern.confidence


@given(
    histories,
    st.one_of(WORKERS, st.just("other-worker")),
    HARDWARE,
    st.sampled_from(list(F)),
    TIMES,
)
def test_a_failure_of_another_task_loses_no_pattern(
    history: tuple[list[FailureRecord], list[SuccessRecord]],
    worker: str,
    hardware: str,
    failure_type: FailureType,
    at: float,
) -> None:
    failures, successes = history
    before = detect_patterns(failures, successes=successes, now=NOW)
    elsewhere = fail("other-task", worker, at, failure_type, hardware)
    after = detect_patterns([*failures, elsewhere], successes=successes, now=NOW)
    assert_nothing_lost(before, after)


@given(histories, WORKERS, HARDWARE, TIMES)
def test_a_success_elsewhere_loses_no_pattern(
    history: tuple[list[FailureRecord], list[SuccessRecord]], worker: str, hardware: str, at: float
) -> None:
    failures, successes = history
    before = detect_patterns(failures, successes=successes, now=NOW)
    after = detect_patterns(
        failures, successes=[*successes, ok("other-task", worker, at, hardware)], now=NOW
    )
    assert_nothing_lost(before, after)


@given(histories, TASKS, WORKERS, HARDWARE, TIMES)
def test_a_success_only_ever_clears_a_task(
    history: tuple[list[FailureRecord], list[SuccessRecord]],
    task: str,
    worker: str,
    hardware: str,
    at: float,
) -> None:
    """A success strengthens the case against workers and hardware; it may
    only take away the case against the task that succeeded."""
    failures, successes = history
    before = [
        p for p in detect_patterns(failures, successes=successes, now=NOW) if p.kind is not K.TASK
    ]
    after = detect_patterns(
        failures, successes=[*successes, ok(task, worker, at, hardware)], now=NOW
    )
    assert_nothing_lost(before, after)


MODELED_KINDS = {K.WORKER, K.HARDWARE, K.TASK}


def rule_view(patterns: list[FailurePattern]) -> set[tuple[PatternKind, str, int, float]]:
    return {(p.kind, p.key, p.count, p.confidence) for p in patterns}


def doubting_models() -> dict[str, LinearModel]:
    """Models that give every subject a probability of about 0."""
    models = {}
    for kind in pattern_model.RAW_FEATURES:
        width = len(feature_names(kind))
        models[kind] = LinearModel(
            features=feature_names(kind),
            means=(0.0,) * width,
            scales=(1.0,) * width,
            coefficients=(0.0,) * width,
            intercept=-50.0,
        )
    return models


@given(histories)
def test_the_learned_layer_scores_every_rule_pattern_and_drops_none(
    history: tuple[list[FailureRecord], list[SuccessRecord]],
) -> None:
    failures, successes = history
    patterns = detect_patterns(failures, successes=successes, now=NOW)
    scores = [
        p.confidence if p.learned_probability is None else p.learned_probability for p in patterns
    ]
    assert scores == sorted(scores, reverse=True)
    for pattern in patterns:
        has_model = pattern.kind in MODELED_KINDS
        assert (pattern.learned_probability is not None) == has_model
        if pattern.learned_probability is not None:
            assert 0 <= pattern.learned_probability <= 1
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pattern_model, "MODELS", doubting_models())
        doubted = detect_patterns(failures, successes=successes, now=NOW)
    assert rule_view(doubted) == rule_view(patterns)
