"""Events: what ``State.apply`` returns so the shell can act.

Some are instructions (``AssignTask`` and ``CancelAttempt`` are pushed to a
worker), the rest are facts for subscribers (dashboard, results store,
metrics). They are values; nothing here does I/O.
"""

from __future__ import annotations

from msgspec import Struct

from dtf.core.model import FailureKind, TaskSpec
from dtf.core.records import AttemptStatus, TaskStatus, WorkerStatus


class TaskAccepted(Struct, frozen=True, tag="task_accepted"):
    task_id: str
    status: TaskStatus
    duplicate: bool = False


class TaskStatusChanged(Struct, frozen=True, tag="task_status_changed"):
    task_id: str
    old: TaskStatus
    new: TaskStatus
    reason: str | None = None


class AssignTask(Struct, frozen=True, tag="assign_task"):
    worker_id: str
    task_id: str
    attempt: int
    fence: int
    spec: TaskSpec
    lease_timeout_s: float


class CancelAttempt(Struct, frozen=True, tag="cancel_attempt"):
    worker_id: str
    task_id: str
    attempt: int
    fence: int


class AttemptFinished(Struct, frozen=True, tag="attempt_finished"):
    task_id: str
    attempt: int
    worker_id: str
    status: AttemptStatus
    failure: FailureKind | None = None
    reason: str | None = None


class RetryScheduled(Struct, frozen=True, tag="retry_scheduled"):
    task_id: str
    next_attempt: int
    not_before: float
    delay_s: float
    avoid_worker: str | None = None


class OutcomeAccepted(Struct, frozen=True, tag="outcome_accepted"):
    """The outcome for (task, attempt) is recorded; the worker may forget it.
    ``counted`` is False when the lease was no longer current (superseded)
    or the outcome was a resend."""

    worker_id: str
    task_id: str
    attempt: int
    fence: int
    counted: bool


class WorkerStatusChanged(Struct, frozen=True, tag="worker_status_changed"):
    worker_id: str
    old: WorkerStatus | None
    new: WorkerStatus
    reason: str | None = None


class BreakerChanged(Struct, frozen=True, tag="breaker_changed"):
    breaker: str
    old: str
    new: str
    reason: str


class WorkerHealthChanged(Struct, frozen=True, tag="worker_health_changed"):
    """A worker was quarantined (no new work) or returned to service."""

    worker_id: str
    quarantined: bool
    reason: str


class RunHealthCheck(Struct, frozen=True, tag="run_health_check"):
    """The worker must run its health check before it gets (more) work."""

    worker_id: str
    reason: str


class RequirementStageAdvanced(Struct, frozen=True, tag="requirement_stage_advanced"):
    task_id: str
    stage: int


Event = (
    TaskAccepted
    | TaskStatusChanged
    | AssignTask
    | CancelAttempt
    | AttemptFinished
    | RetryScheduled
    | OutcomeAccepted
    | WorkerStatusChanged
    | RequirementStageAdvanced
    | BreakerChanged
    | WorkerHealthChanged
    | RunHealthCheck
)
