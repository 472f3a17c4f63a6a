"""The attempts that pattern detection (``dtf.core.patterns``) reads: each
finished attempt of the state flattened into a ``FailureRecord`` (classified
failures) or a ``SuccessRecord``, with the hardware class it ran on, and
the records that fall in a time window.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from msgspec import Struct

from dtf.core.failures import FailureType
from dtf.core.model import FailureKind, HardwareClass
from dtf.core.records import AttemptRecord, AttemptStatus, TaskRecord, WorkerRecord
from dtf.core.state import State


class FailureRecord(Struct, frozen=True, order=True):
    """One failed attempt as pattern detection sees it; ``evidence`` is the
    first quote its classification kept (else the attempt's reason). Records
    are ordered, so the same records in any order give the same patterns."""

    task_id: str
    attempt: int
    worker_id: str
    hardware_class: str
    failure_type: FailureType
    finished_at: float
    evidence: str = ""


class SuccessRecord(Struct, frozen=True):
    """One attempt that succeeded: what clears a worker or a hardware class."""

    task_id: str
    worker_id: str
    hardware_class: str
    finished_at: float


def failures_of(state: State) -> list[FailureRecord]:
    """Every classified failed attempt, in task order then attempt order; not
    those lost with a coordinator node, which say nothing about worker or task."""
    return [
        FailureRecord(
            task_id=task.id,
            attempt=attempt.number,
            worker_id=attempt.worker_id,
            hardware_class=attempt_hardware(task, attempt, state.workers.get(attempt.worker_id)),
            failure_type=attempt.failure_type,
            finished_at=attempt.finished_at,
            evidence=_first_quote(attempt),
        )
        for task in state.tasks.values()
        for attempt in task.attempts
        if attempt.failure_type is not None
        and attempt.finished_at is not None
        and attempt.failure is not FailureKind.COORDINATOR_LOST
    ]


def successes_of(state: State) -> list[SuccessRecord]:
    return [
        SuccessRecord(
            task_id=task.id,
            worker_id=attempt.worker_id,
            hardware_class=attempt_hardware(task, attempt, state.workers.get(attempt.worker_id)),
            finished_at=attempt.finished_at,
        )
        for task in state.tasks.values()
        for attempt in task.attempts
        if attempt.status is AttemptStatus.SUCCEEDED and attempt.finished_at is not None
    ]


def attempt_hardware(task: TaskRecord, attempt: AttemptRecord, worker: WorkerRecord | None) -> str:
    """The class an attempt ran on: the first class recovery switched it to;
    else the first class its requirement stage asks for that the worker
    offers; else CPU (also when the worker is no longer known)."""
    if attempt.hardware:
        return attempt.hardware[0].value
    offered = worker.capabilities.hardware if worker is not None else []
    wanted = task.spec.requirements.stage(attempt.requirement_stage).hardware
    return next((h.value for h in wanted if h in offered), HardwareClass.CPU.value)


def _first_quote(attempt: AttemptRecord) -> str:
    if attempt.evidence:
        return attempt.evidence[0]
    return attempt.reason or ""


_R = TypeVar("_R", FailureRecord, SuccessRecord)


def within_window(records: Iterable[_R], *, now: float, window_s: float) -> list[_R]:
    """The records that finished in the ``window_s`` up to ``now``."""
    return [r for r in records if now - window_s <= r.finished_at <= now]
