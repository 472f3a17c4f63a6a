"""Recurring failure patterns in the recorded attempts, each with a count, a
confidence and a recommended action.

How this works: ``dtf.core.pattern_records`` flattens the state's attempts
into records (``failures_of``, ``successes_of``). ``detect_patterns`` keeps
the records that finished in the ``window_s`` before ``now`` and looks at
the failures five ways:

- ``worker``: one worker failed several different tasks -> quarantine it;
- ``hardware``: faults that count against a hardware class's breaker
  (``HARDWARE_FAULTS``) on several workers of one class -> check that fleet;
- ``failure_type``: one failure type across several tasks -> a shared cause,
  named per type (communication errors: the network);
- ``task``: one task failed on several different workers and has not
  succeeded -> a poison task; the workers are not at fault;
- ``burst``: many failures within a short span -> something shared broke at once.

``PatternThresholds`` decide whether a group is reported at all; confidence
ranks what is. Confidence is a noisy-OR over independent pieces of evidence:
each piece has a weight w (how likely that piece alone means the pattern is
real) and confidence = 1 - prod(1 - w). Another piece of evidence can only
raise it, and it stays in [0, 1). What one piece is, per kind, is stated on
each detector; the weights are the ``*_WEIGHT`` constants.

The rules find nearly every real problem but report many that are not:
``dtf.core.pattern_model`` gives worker, hardware and task patterns a
``learned_probability`` that the subject really is at fault, which ranks
the patterns and can filter them (``min_probability``); it never adds or
silently drops one. bench/patterns.py measures both.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from msgspec import Struct

from dtf.core.breakers import HARDWARE_FAULTS
from dtf.core.failures import FailureType
from dtf.core.pattern_model import scored_and_ranked
from dtf.core.pattern_records import FailureRecord, SuccessRecord, within_window


class PatternKind(enum.StrEnum):
    WORKER = "worker"
    HARDWARE = "hardware"
    FAILURE_TYPE = "failure_type"
    TASK = "task"
    BURST = "burst"


class PatternThresholds(Struct, frozen=True, forbid_unknown_fields=True):
    worker_min_tasks: int = 3
    hardware_min_workers: int = 2
    hardware_min_failures: int = 3
    type_min_tasks: int = 3
    task_min_workers: int = 2
    burst_min_failures: int = 5
    burst_span_s: float = 60.0


class FailurePattern(Struct, frozen=True):
    """``corroborating`` counts the observations beyond the failures that
    support the pattern: for a worker, its failed tasks that succeeded on
    other workers; for a hardware class, its failed tasks that succeeded on
    another class; for a task, its workers that succeeded at other work."""

    kind: PatternKind
    key: str
    count: int
    tasks: int
    workers: int
    corroborating: int
    first_at: float
    last_at: float
    confidence: float
    learned_probability: float | None
    action: str
    examples: list[str]


WORKER_TASK_WEIGHT = 0.2
WORKER_CLEARED_TASK_WEIGHT = 0.4
HARDWARE_WORKER_WEIGHT = 0.25
HARDWARE_MOVED_TASK_WEIGHT = 0.25
TYPE_TASK_WEIGHT = 0.2
TYPE_OWN_TASK_WEIGHT = 0.1
TYPE_SPREAD_WEIGHT = 0.1
TASK_WORKER_WEIGHT = 0.2
TASK_HEALTHY_WORKER_WEIGHT = 0.4
BURST_FAILURE_WEIGHT = 0.1
MAX_EXAMPLES = 3
BURST_KEY = "fleet"

# Failure types that are usually the task's own doing: many tasks failing
# this way is weaker evidence of a shared cause than, say, lost connections.
WEAK_SHARED_CAUSE_TYPES = frozenset({FailureType.SOFTWARE_ERROR, FailureType.RESOURCE_EXHAUSTION})

TYPE_ACTIONS = {
    FailureType.COMMUNICATION_ERROR: "Infrastructure problem: {tasks} lost their connections "
    "on {workers}; check the network and the services the tasks reach.",
    FailureType.WORKER_CRASH: "Workers died under {tasks} on {workers}; check the worker "
    "hosts (memory, restarts) and their link to the coordinator.",
    FailureType.TIMEOUT: "{tasks} timed out on {workers}; look for overloaded workers or a "
    "slow shared service before raising timeouts.",
    FailureType.RESOURCE_EXHAUSTION: "{tasks} ran out of memory on {workers}; lower batch "
    "sizes or require workers with more memory.",
    FailureType.CUDA_ERROR: "CUDA errors in {tasks} on {workers}; check GPU drivers and "
    "CUDA versions across the fleet.",
    FailureType.HARDWARE_ERROR: "Hardware errors in {tasks} on {workers}; check the "
    "machines (ECC, Xid and kernel logs).",
    FailureType.BROWSER_CRASH: "Browsers crashed in {tasks} on {workers}; check browser "
    "versions and their memory limits.",
    FailureType.WEBGPU_CONTEXT_LOST: "WebGPU contexts were lost in {tasks} on {workers}; "
    "check GPU drivers and the browsers' GPU flags.",
    FailureType.SOFTWARE_ERROR: "{tasks} failed with software errors on {workers}; look for "
    "a shared cause such as a recent change or a missing dependency.",
    FailureType.UNKNOWN: "{tasks} failed in ways no rule classifies, on {workers}; add a "
    "classification rule (dtf coordinator --recovery-config) so they are handled.",
}


# -- detection -----------------------------------------------------------------


def detect_patterns(
    failures: Sequence[FailureRecord],
    *,
    now: float,
    window_s: float = 3600.0,
    successes: Sequence[SuccessRecord] = (),
    thresholds: PatternThresholds | None = None,
    min_confidence: float = 0.0,
    min_probability: float = 0.0,
) -> list[FailurePattern]:
    """The patterns in the window with some confidence, at least ``min_confidence``,
    each with its learned probability where its kind has a model; those
    below ``min_probability`` are left out (kinds without a model never
    are). Ranked by learned probability, else by confidence; then by
    confidence, kind and key."""
    limits = thresholds or PatternThresholds()
    recent_successes = within_window(successes, now=now, window_s=window_s)
    history = _History.of(within_window(failures, now=now, window_s=window_s), recent_successes)
    found = [
        *_worker_patterns(history, limits),
        *_hardware_patterns(history, limits),
        *_type_patterns(history, limits),
        *_task_patterns(history, limits),
        *_burst_patterns(history, limits),
    ]
    kept = [p for p in found if p.confidence > 0 and p.confidence >= min_confidence]
    return scored_and_ranked(
        kept, history.failures, recent_successes, min_probability=min_probability
    )


@dataclass
class _History:
    """The window's failures in time order, and who succeeded at what."""

    failures: list[FailureRecord]
    failed_on: dict[str, set[str]] = field(default_factory=dict)
    succeeded_on: dict[str, set[str]] = field(default_factory=dict)
    succeeded_classes: dict[str, set[str]] = field(default_factory=dict)
    tasks_succeeded_by: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, failures: list[FailureRecord], successes: list[SuccessRecord]) -> _History:
        ordered = sorted(failures, key=lambda f: (f.finished_at, f))
        history = cls(ordered)
        for failure in ordered:
            history.failed_on.setdefault(failure.task_id, set()).add(failure.worker_id)
        for success in successes:
            history.succeeded_on.setdefault(success.task_id, set()).add(success.worker_id)
            classes = history.succeeded_classes.setdefault(success.task_id, set())
            classes.add(success.hardware_class)
            history.tasks_succeeded_by.setdefault(success.worker_id, set()).add(success.task_id)
        return history

    def grouped(
        self,
        key: Callable[[FailureRecord], str],
        *,
        where: Callable[[FailureRecord], bool] | None = None,
    ) -> dict[str, list[FailureRecord]]:
        groups: dict[str, list[FailureRecord]] = {}
        for failure in self.failures:
            if where is None or where(failure):
                groups.setdefault(key(failure), []).append(failure)
        return groups


def _worker_patterns(history: _History, limits: PatternThresholds) -> Iterator[FailurePattern]:
    """Evidence: each distinct task that failed on this worker and on no other
    (one that failed elsewhere too points at the task, and counts nothing),
    weighing more when another worker then ran it successfully."""
    for worker_id, failed in history.grouped(lambda f: f.worker_id).items():
        tasks = _distinct(f.task_id for f in failed)
        if len(tasks) < limits.worker_min_tasks:
            continue
        alone = [t for t in tasks if history.failed_on[t] == {worker_id}]
        cleared = [t for t in alone if history.succeeded_on.get(t, set()) - {worker_id}]
        confidence = noisy_or(
            (WORKER_TASK_WEIGHT, len(alone) - len(cleared)),
            (WORKER_CLEARED_TASK_WEIGHT, len(cleared)),
        )
        action = f"Quarantine worker {worker_id}: it failed {_n(len(tasks), 'different task')}"
        if cleared:
            action += f", {len(cleared)} of which succeeded on other workers"
        action += f": `dtf workers disable {worker_id}`."
        yield _pattern(PatternKind.WORKER, worker_id, failed, confidence, action, cleared)


def _hardware_patterns(history: _History, limits: PatternThresholds) -> Iterator[FailurePattern]:
    """Evidence: each distinct worker with a hardware fault on this class, and
    each failed task that then succeeded on another class."""
    groups = history.grouped(
        lambda f: f.hardware_class, where=lambda f: f.failure_type in HARDWARE_FAULTS
    )
    for hardware, failed in groups.items():
        workers = _distinct(f.worker_id for f in failed)
        if len(workers) < limits.hardware_min_workers or len(failed) < limits.hardware_min_failures:
            continue
        tasks = _distinct(f.task_id for f in failed)
        moved = [t for t in tasks if history.succeeded_classes.get(t, set()) - {hardware}]
        confidence = noisy_or(
            (HARDWARE_WORKER_WEIGHT, len(workers)), (HARDWARE_MOVED_TASK_WEIGHT, len(moved))
        )
        action = (
            f"Check the {hardware} fleet (drivers, firmware, the machines): "
            f"{_n(len(failed), 'hardware fault')} on {_n(len(workers), 'worker')}; keep the "
            f"{hardware} hardware breaker open, or move work to other hardware, until it is fixed."
        )
        yield _pattern(PatternKind.HARDWARE, hardware, failed, confidence, action, moved)


def _type_patterns(history: _History, limits: PatternThresholds) -> Iterator[FailurePattern]:
    """Evidence: each distinct task that failed this way (less for types that
    are usually the task's own), and each worker beyond the first it struck."""
    for type_name, failed in history.grouped(lambda f: f.failure_type.value).items():
        failure_type = FailureType(type_name)
        tasks = _distinct(f.task_id for f in failed)
        if len(tasks) < limits.type_min_tasks:
            continue
        workers = _distinct(f.worker_id for f in failed)
        task_weight = (
            TYPE_OWN_TASK_WEIGHT if failure_type in WEAK_SHARED_CAUSE_TYPES else TYPE_TASK_WEIGHT
        )
        confidence = noisy_or((task_weight, len(tasks)), (TYPE_SPREAD_WEIGHT, len(workers) - 1))
        action = TYPE_ACTIONS[failure_type].format(
            tasks=_n(len(tasks), "task"), workers=_n(len(workers), "worker")
        )
        yield _pattern(PatternKind.FAILURE_TYPE, type_name, failed, confidence, action, [])


def _task_patterns(history: _History, limits: PatternThresholds) -> Iterator[FailurePattern]:
    """Evidence: each distinct worker the task failed on, weighing more when
    that worker succeeded at other work. A task that has succeeded in the
    window is flaky rather than poison and is not reported."""
    for task_id, failed in history.grouped(lambda f: f.task_id).items():
        workers = _distinct(f.worker_id for f in failed)
        if len(workers) < limits.task_min_workers or task_id in history.succeeded_on:
            continue
        healthy = [w for w in workers if history.tasks_succeeded_by.get(w, set()) - {task_id}]
        confidence = noisy_or(
            (TASK_WORKER_WEIGHT, len(workers) - len(healthy)),
            (TASK_HEALTHY_WORKER_WEIGHT, len(healthy)),
        )
        action = f"Poison task {task_id}: it failed on {_n(len(workers), 'different worker')}"
        if healthy:
            action += f", {len(healthy)} of which ran other work fine"
        action += "; fix the task, the workers are not at fault."
        yield _pattern(PatternKind.TASK, task_id, failed, confidence, action, healthy)


def _burst_patterns(history: _History, limits: PatternThresholds) -> Iterator[FailurePattern]:
    """The densest ``burst_span_s`` of failures, if it holds enough of them.
    Evidence: each failure in it. (Its spread over workers is shown but not
    weighed: the densest span is chosen by count, so that confidence cannot
    fall when a failure is added.)"""
    burst = densest_span(history.failures, limits.burst_span_s)
    if len(burst) < limits.burst_min_failures:
        return
    workers = _distinct(f.worker_id for f in burst)
    confidence = noisy_or((BURST_FAILURE_WEIGHT, len(burst)))
    action = (
        f"{_n(len(burst), 'failure')} within {limits.burst_span_s:g}s on "
        f"{_n(len(workers), 'worker')}: something shared broke at once; check the network, "
        "the coordinator and recent changes before retries use up their budget."
    )
    yield _pattern(PatternKind.BURST, BURST_KEY, burst, confidence, action, [])


def densest_span(failures: Sequence[FailureRecord], span_s: float) -> list[FailureRecord]:
    """The earliest run of time-ordered failures holding the most of them
    within ``span_s`` of its first."""
    best_start, best_end, start = 0, 0, 0
    for end, failure in enumerate(failures, start=1):
        while failure.finished_at - failures[start].finished_at > span_s:
            start += 1
        if end - start > best_end - best_start:
            best_start, best_end = start, end
    return list(failures[best_start:best_end])


# -- shared pieces -------------------------------------------------------------


def noisy_or(*evidence: tuple[float, int]) -> float:
    """1 - prod((1 - weight) ** count), rounded to 3 places: each piece of
    evidence independently makes the pattern likelier."""
    unexplained = 1.0
    for weight, count in evidence:
        unexplained *= (1.0 - weight) ** max(count, 0)
    return round(1.0 - unexplained, 3)


def _pattern(
    kind: PatternKind,
    key: str,
    failed: list[FailureRecord],
    confidence: float,
    action: str,
    corroborating: list[str],
) -> FailurePattern:
    return FailurePattern(
        kind=kind,
        key=key,
        count=len(failed),
        tasks=len(_distinct(f.task_id for f in failed)),
        workers=len(_distinct(f.worker_id for f in failed)),
        corroborating=len(corroborating),
        first_at=failed[0].finished_at,
        last_at=failed[-1].finished_at,
        confidence=confidence,
        learned_probability=None,
        action=action,
        examples=_examples(failed),
    )


def _examples(failed: list[FailureRecord]) -> list[str]:
    """Up to ``MAX_EXAMPLES`` quotes, the most recent first, each one different."""
    examples: dict[str, str] = {}
    for failure in reversed(failed):
        quote = failure.evidence or failure.failure_type.label
        examples.setdefault(
            quote, f"{failure.task_id} attempt {failure.attempt} on {failure.worker_id}: {quote}"
        )
        if len(examples) == MAX_EXAMPLES:
            break
    return list(examples.values())


def _distinct(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
