"""Records the state machine keeps: tasks, attempts, workers, API keys.

Every lifecycle is an enum plus a transition table. ``TaskRecord.move_to`` and
``AttemptRecord.finish`` are the only places a status is assigned, and an
illegal move raises ``InvalidTransition`` naming both states.

Records are msgspec structs so a snapshot is one ``msgspec`` encode of them.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec
from msgspec import Struct

from dtf.core.failures import FailureType
from dtf.core.health import WorkerHealth
from dtf.core.model import Capabilities, FailureKind, HardwareClass, Outcome, TaskSpec
from dtf.core.recovery_policy import Strategy
from dtf.errors import InvalidTransition


class TaskStatus(enum.StrEnum):
    BLOCKED = "blocked"
    PENDING = "pending"
    ASSIGNED = "assigned"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_TASK_STATUSES

    @property
    def is_active(self) -> bool:
        return self in (TaskStatus.ASSIGNED, TaskStatus.RUNNING)


TERMINAL_TASK_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})

TASK_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.BLOCKED: frozenset({TaskStatus.PENDING, TaskStatus.FAILED, TaskStatus.CANCELLED}),
    TaskStatus.PENDING: frozenset({TaskStatus.ASSIGNED, TaskStatus.CANCELLED, TaskStatus.FAILED}),
    TaskStatus.ASSIGNED: frozenset(
        {
            TaskStatus.RUNNING,
            TaskStatus.PENDING,
            TaskStatus.COMPLETED,
            TaskStatus.FAILED,
            TaskStatus.CANCELLED,
        }
    ),
    TaskStatus.RUNNING: frozenset(
        {TaskStatus.PENDING, TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED}
    ),
    TaskStatus.COMPLETED: frozenset(),
    TaskStatus.FAILED: frozenset(),
    TaskStatus.CANCELLED: frozenset(),
}


class AttemptStatus(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    LOST = "lost"
    CANCELLED = "cancelled"


class WorkerStatus(enum.StrEnum):
    """``suspect``: its connection dropped, or the cluster node it is connected
    through was lost; it gets no new work until it reconnects, but its leases
    run on. ``offline``: no heartbeat within the worker timeout."""

    ONLINE = "online"
    SUSPECT = "suspect"
    OFFLINE = "offline"


class Role(enum.StrEnum):
    ADMIN = "admin"
    SUBMITTER = "submitter"
    WORKER = "worker"
    VIEWER = "viewer"


class Lease(Struct, array_like=True):
    worker_id: str
    attempt: int
    fence: int
    expires_at: float


class CheckpointKind(enum.StrEnum):
    BYTES = "bytes"
    JSON = "json"


class CheckpointRef(Struct, frozen=True):
    """A checkpoint a task saved: its blob's SHA-256 (the blob is a file in the
    coordinator's data dir, never in the journal) and who saved it when."""

    digest: str
    size: int
    kind: CheckpointKind
    attempt: int
    saved_at: float
    step: int | None = None


class AttemptRecord(Struct):
    number: int
    worker_id: str
    fence: int
    assigned_at: float
    requirement_stage: int = 0
    params_patch: dict[str, Any] = {}
    hardware: list[HardwareClass] | None = None
    status: AttemptStatus = AttemptStatus.RUNNING
    started_at: float | None = None
    finished_at: float | None = None
    failure: FailureKind | None = None
    reason: str | None = None
    outcome: Outcome | None = None
    superseded_outcomes: list[Outcome] = []
    retry_delay_s: float | None = None
    failure_type: FailureType | None = None
    evidence: list[str] = []
    classified_by: str | None = None
    recovery: Strategy | None = None
    recovery_reason: str | None = None
    resumed_from: CheckpointRef | None = None
    checkpoints_saved: int = 0
    last_checkpoint: CheckpointRef | None = None
    lost_with_node: str | None = None
    """The cluster node whose loss ended this attempt, or the node whose connection
    ended before the worker got the assignment ("" when not known), set only by the
    state machine (``lose_with_node``); such an attempt is not charged to the task."""

    def finish(
        self,
        status: AttemptStatus,
        now: float,
        *,
        failure: FailureKind | None = None,
        reason: str | None = None,
        outcome: Outcome | None = None,
    ) -> None:
        if self.status is not AttemptStatus.RUNNING:
            raise InvalidTransition(
                f"attempt {self.number} is already {self.status.value}; cannot become {status.value}"
            )
        self.status = status
        self.finished_at = now
        self.failure = failure
        self.reason = reason
        self.outcome = outcome


class TaskRecord(Struct):
    id: str
    spec: TaskSpec
    seq: int
    submitted_at: float
    status: TaskStatus
    status_reason: str | None = None
    attempts: list[AttemptRecord] = []
    lease: Lease | None = None
    requirement_stage: int = 0
    stage_started_at: float = 0.0
    ready_at: float = 0.0
    not_before: float | None = None
    avoid_workers: list[str] = []
    params_patch: dict[str, Any] = {}
    hardware_override: list[HardwareClass] | None = None
    finished_at: float | None = None
    cancel_requested: bool = False
    crash_mates: list[str] = []
    checkpoint: CheckpointRef | None = None

    def move_to(self, status: TaskStatus, reason: str | None = None) -> None:
        if status not in TASK_TRANSITIONS[self.status]:
            raise InvalidTransition(
                f"task {self.id} is {self.status.value}; it cannot become {status.value}"
            )
        self.status = status
        self.status_reason = reason

    @property
    def current_attempt(self) -> AttemptRecord | None:
        return self.attempts[-1] if self.attempts else None


class WorkerRecord(Struct):
    id: str
    capabilities: Capabilities
    slots: int
    registered_at: float
    last_seen_at: float
    session: str
    status: WorkerStatus = WorkerStatus.ONLINE
    status_reason: str | None = None
    leases: list[str] = []
    tasks_completed: int = 0
    tasks_failed: int = 0
    incarnation: str = ""
    incident_tasks: list[str] = []
    health: WorkerHealth = msgspec.field(default_factory=WorkerHealth)
    node_id: str = ""
    node_incarnation: str = ""
    lost_node: str | None = None
    status_when_stranded: WorkerStatus | None = None
    """What a heartbeat through the healed node restores (online only if it was)."""

    @property
    def is_stranded(self) -> bool:
        """The cluster node it was connected through was lost, and it has not
        registered or heartbeated through a live node since."""
        return self.lost_node is not None

    @property
    def free_slots(self) -> int:
        return self.slots - len(self.leases)


class ApiKeyRecord(Struct):
    key_id: str
    role: Role
    key_hash: str
    created_at: float
    name: str = ""
