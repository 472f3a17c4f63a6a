"""Fault injection: deterministic plans, the kinds a task can take, the record of
each fault, how it labels an outcome, and that each kind's evidence classifies
as intended by the default rules."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from dtf.cli.fault_options import fault_options
from dtf.core.failures import FailureEvidence, FailureType, classify
from dtf.core.model import FailureKind, LeaseRef, Outcome, TaskType
from dtf.errors import InvalidRequest
from dtf.worker.fault_actions import EMULATED_STDERR, INJECTED_MARK, AttemptFaults, FaultInjector
from dtf.worker.faults import (
    HANG_MAX_TIMEOUT_S,
    STRIKE_AFTER_S,
    FaultKind,
    FaultSettings,
    InjectedFault,
    PlannedFault,
    append_to_log,
    eligible_kinds,
    parse_kinds,
    plan_fault,
    read_log,
)

SHORT_TIMEOUT_S = 5.0
ATTEMPTS = [(f"task-{n}", attempt) for n in range(400) for attempt in (1, 2)]


def plan(
    settings: FaultSettings,
    task_id: str = "t",
    attempt: int = 1,
    task_type: TaskType = TaskType.BENCHMARK,
    timeout_s: float = SHORT_TIMEOUT_S,
) -> PlannedFault | None:
    return plan_fault(
        settings, task_id=task_id, attempt=attempt, task_type=task_type, timeout_s=timeout_s
    )


def test_the_same_seed_task_and_attempt_always_get_the_same_fault() -> None:
    settings = FaultSettings(rate=0.5, seed=7)
    first = [plan(settings, task_id, attempt) for task_id, attempt in ATTEMPTS]
    again = [plan(FaultSettings(rate=0.5, seed=7), t, a) for t, a in reversed(ATTEMPTS)]
    assert first == list(reversed(again))


def test_another_seed_gives_other_faults() -> None:
    one = [plan(FaultSettings(rate=0.5, seed=1), t, a) for t, a in ATTEMPTS]
    two = [plan(FaultSettings(rate=0.5, seed=2), t, a) for t, a in ATTEMPTS]
    assert one != two


def test_each_attempt_of_a_task_is_drawn_on_its_own() -> None:
    settings = FaultSettings(rate=0.5, seed=3)
    firsts = [plan(settings, f"task-{n}", 1) for n in range(200)]
    seconds = [plan(settings, f"task-{n}", 2) for n in range(200)]
    assert firsts != seconds


@pytest.mark.parametrize(
    ("rate", "low", "high"),
    [
        (0.0, 0, 0),  # off: no attempt gets a fault
        (1.0, len(ATTEMPTS), len(ATTEMPTS)),  # every attempt does
        (0.1, 0.07 * len(ATTEMPTS), 0.13 * len(ATTEMPTS)),  # about one in ten
    ],
)
def test_rate_is_the_share_of_attempts_with_a_fault(rate: float, low: float, high: float) -> None:
    settings = FaultSettings(rate=rate, seed=11)
    faulted = sum(1 for t, a in ATTEMPTS if plan(settings, t, a) is not None)
    assert low <= faulted <= high


def test_every_kind_is_drawn_and_strikes_within_the_window() -> None:
    settings = FaultSettings(rate=1.0, seed=5)
    planned = [plan(settings, t, a) for t, a in ATTEMPTS]
    assert all(isinstance(p, PlannedFault) for p in planned)
    kinds = Counter(p.kind for p in planned if p is not None)
    assert set(kinds) == set(FaultKind)
    low, high = STRIKE_AFTER_S
    assert all(low <= p.strike_after_s <= high for p in planned if p is not None)


@pytest.mark.parametrize(
    ("task_type", "timeout_s", "excluded"),
    [
        # a long timeout would make a hang hold the slot for that long
        (TaskType.BENCHMARK, HANG_MAX_TIMEOUT_S + 1, {FaultKind.HANG}),
        # OOM only surfaces as such in a benchmark's own Python
        (TaskType.COMMAND, SHORT_TIMEOUT_S, {FaultKind.OOM}),
        (TaskType.TEST, SHORT_TIMEOUT_S, {FaultKind.OOM}),
        # a benchmark with a short timeout can take every kind
        (TaskType.BENCHMARK, SHORT_TIMEOUT_S, set()),
    ],
)
def test_kinds_a_task_cannot_take_are_never_chosen(
    task_type: TaskType, timeout_s: float, excluded: set[FaultKind]
) -> None:
    assert set(eligible_kinds(tuple(FaultKind), task_type, timeout_s)) == set(FaultKind) - excluded
    settings = FaultSettings(rate=1.0, seed=2)
    planned = [plan(settings, t, a, task_type, timeout_s) for t, a in ATTEMPTS]
    chosen = {p.kind for p in planned if p is not None}
    assert chosen == set(FaultKind) - excluded


def test_only_enabled_kinds_are_chosen_and_none_left_means_no_fault() -> None:
    settings = FaultSettings(rate=1.0, kinds=(FaultKind.CRASH, FaultKind.HANG))
    chosen = {p.kind for p in (plan(settings, t, a) for t, a in ATTEMPTS) if p is not None}
    assert chosen == {FaultKind.CRASH, FaultKind.HANG}
    only_hang = FaultSettings(rate=1.0, kinds=(FaultKind.HANG,))
    assert plan(only_hang, timeout_s=HANG_MAX_TIMEOUT_S * 10) is None


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        ("all", tuple(FaultKind)),  # the default
        ("", tuple(FaultKind)),  # nothing named: all
        ("crash, hang,crash", (FaultKind.CRASH, FaultKind.HANG)),  # spaces and repeats
        ("agent_crash", (FaultKind.AGENT_CRASH,)),
    ],
)
def test_parse_kinds(text: str, kinds: tuple[FaultKind, ...]) -> None:
    assert parse_kinds(text) == kinds


def test_unknown_kinds_and_rates_out_of_range_are_refused_by_name() -> None:
    with pytest.raises(InvalidRequest, match="unknown fault kind segfault"):
        parse_kinds("crash,segfault")
    with pytest.raises(InvalidRequest, match=r"between 0 and 1, got 1.5"):
        FaultSettings(rate=1.5)
    with pytest.raises(InvalidRequest, match="no fault kinds enabled"):
        FaultSettings(kinds=())


def test_worker_args_give_a_worker_the_same_settings() -> None:
    settings = FaultSettings(
        rate=0.25, seed=9, kinds=(FaultKind.OOM, FaultKind.DISCONNECT), log_path=Path("/x/f.jsonl")
    )
    seen: list[FaultSettings | None] = []

    @click.command()
    @fault_options(with_log=True)
    def command(faults: FaultSettings | None) -> None:
        seen.append(faults)

    result = CliRunner().invoke(command, settings.worker_args())
    assert result.exit_code == 0, result.output
    assert seen == [settings]
    assert CliRunner().invoke(command, []).exit_code == 0
    assert seen[-1] is None
    refused = CliRunner().invoke(command, ["--fault-injection", "--fault-kinds", "nope"])
    assert refused.exit_code == 2
    assert "unknown fault kind nope" in refused.output


def test_the_fault_log_keeps_every_fault_and_skips_a_torn_line(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "faults.jsonl"
    assert read_log(log) == []
    faults = [
        InjectedFault("local-1", "t1", 1, FaultKind.CRASH, "SIGSEGV", 1.5),
        InjectedFault("local-2", "t2", 3, FaultKind.AGENT_CRASH, "SIGKILL", 2.5),
    ]
    for fault in faults:
        append_to_log(log, fault)
    with log.open("a", encoding="utf-8") as torn:
        torn.write('{"worker_id": "local-1", "ta')
    assert read_log(log) == faults


class NoAgent:
    def drop_connection(self, reason: str) -> bool:
        return False


def struck(kind: FaultKind, detail: str | None) -> AttemptFaults:
    injector = FaultInjector(FaultSettings(rate=1.0), "local-1", NoAgent())
    faults = AttemptFaults(injector, LeaseRef("t", 1, 1), PlannedFault(kind, 0.1), NoObserver())
    faults.detail = detail
    return faults


class NoObserver:
    def process_started(self, pgid: int) -> None:
        pass

    def process_ended(self, pgid: int) -> None:
        pass


def test_a_struck_fault_labels_the_outcome_and_a_failure_says_so() -> None:
    failed = Outcome(failure=FailureKind.CRASHED, error="killed by signal SIGSEGV", signal=11)
    labelled = struck(FaultKind.CRASH, "SIGSEGV sent").label(failed)
    assert labelled.injected_fault == "crash"
    assert labelled.error == "killed by signal SIGSEGV; injected fault crash: SIGSEGV sent"
    survived = struck(FaultKind.DISCONNECT, "cut").label(Outcome(exit_code=0))
    assert (survived.injected_fault, survived.error) == ("disconnect", None)


def test_a_fault_that_never_struck_leaves_the_outcome_alone() -> None:
    outcome = Outcome(exit_code=0)
    assert struck(FaultKind.HANG, None).label(outcome) is outcome


def outcome_of(kind: FaultKind) -> Outcome:
    """The outcome an attempt with this fault reports, as the executor builds it."""
    if kind in EMULATED_STDERR:
        stderr = EMULATED_STDERR[kind].format(pid=4242, mark=INJECTED_MARK)
        return Outcome(
            FailureKind.CRASHED, "killed by signal SIGTERM", None, 15, stderr_tail=stderr
        )
    return {
        FaultKind.CRASH: Outcome(FailureKind.CRASHED, "killed by signal SIGSEGV", signal=11),
        FaultKind.HANG: Outcome(FailureKind.TIMEOUT, "did not finish within its timeout of 5s"),
        FaultKind.OOM: Outcome(
            FailureKind.OOM,
            "ran out of memory (exit code 1)",
            exit_code=1,
            stderr_tail='Traceback (most recent call last):\n  File "x.py"\nMemoryError\n',
        ),
        FaultKind.AGENT_CRASH: Outcome(FailureKind.WORKER_LOST, "worker local-1 no longer holds"),
    }[kind]


@pytest.mark.parametrize(
    ("kind", "failure_type"),
    [
        (FaultKind.CRASH, FailureType.SOFTWARE_ERROR),  # a native crash signal
        (FaultKind.HANG, FailureType.TIMEOUT),
        (FaultKind.OOM, FailureType.RESOURCE_EXHAUSTION),
        (FaultKind.CUDA_ERROR, FailureType.CUDA_ERROR),
        (FaultKind.HARDWARE_ERROR, FailureType.HARDWARE_ERROR),
        (FaultKind.BROWSER_CRASH, FailureType.BROWSER_CRASH),
        (FaultKind.WEBGPU_LOST, FailureType.WEBGPU_CONTEXT_LOST),
        (FaultKind.AGENT_CRASH, FailureType.WORKER_CRASH),
    ],
)
def test_each_kind_classifies_as_intended(kind: FaultKind, failure_type: FailureType) -> None:
    classification = classify(FailureEvidence.from_outcome(outcome_of(kind)))
    assert classification.failure_type is failure_type
    if kind in EMULATED_STDERR:
        assert any(INJECTED_MARK in quote for quote in classification.evidence_text)


def test_an_attempt_arms_one_fault_even_when_a_second_process_starts() -> None:
    async def start_twice() -> tuple[int, bool]:
        faults = struck(FaultKind.HANG, None)
        faults.process_started(101)
        first = faults.timer
        faults.process_started(102)
        assert first is not None and faults.timer is not None
        armed = sum(1 for timer in (first, faults.timer) if not timer.cancelled())
        faults.close()
        done = struck(FaultKind.HANG, "SIGSTOP sent")
        done.process_started(103)
        return armed, done.timer is None

    assert asyncio.run(start_twice()) == (1, True)
