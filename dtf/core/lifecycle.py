"""Task and attempt lifecycle shared by the state machine's parts.

``Lifecycle`` owns the task table and its derived indexes (ready queues,
timers, dependency counts, status counts) and the moves every handler uses:
set a status, make a task ready, end an attempt, retry or give up, finish a
task and settle its dependants.
"""

from __future__ import annotations

from collections import Counter

import msgspec

from dtf.core.breakers import (
    DEFAULT_RESET_TIME_S,
    DEFAULT_THRESHOLD,
    HARDWARE_FAULTS,
    WORKER_FAULTS,
    BreakerChange,
    Breakers,
)
from dtf.core.budget import RetryBudgets
from dtf.core.effective import effective_requirements
from dtf.core.events import (
    AttemptFinished,
    BreakerChanged,
    Event,
    RetryScheduled,
    TaskStatusChanged,
    WorkerHealthChanged,
)
from dtf.core.failures import DEFAULT_RULES, ClassificationRule, FailureType
from dtf.core.health import (
    DEFAULT_HALF_LIFE_S,
    HealthSample,
    describe,
    fault,
    score,
    success,
)
from dtf.core.health import DEFAULT_THRESHOLD as DEFAULT_HEALTH_THRESHOLD
from dtf.core.model import FailureKind, HardwareClass, Outcome, TestOutcome
from dtf.core.queues import ReadyQueues
from dtf.core.records import (
    AttemptRecord,
    AttemptStatus,
    TaskRecord,
    TaskStatus,
    WorkerRecord,
    WorkerStatus,
)
from dtf.core.recovery import Escalate, RecoveryDecision
from dtf.core.recovery_plan import hardware_class_of, plan_recovery
from dtf.core.recovery_policy import RecoveryPolicy
from dtf.core.timers import TimerHeap, TimerKind


class StateConfig(msgspec.Struct, frozen=True):
    """Settings that change what commands do. They are state too: journaled
    by ``Configure`` and kept in snapshots, so a replay decides as the live
    coordinator did whatever flags a later start is given."""

    lease_timeout_s: float = 10.0
    worker_timeout_s: float = 30.0
    recovery: RecoveryPolicy = msgspec.field(default_factory=RecoveryPolicy)
    classification_rules: tuple[ClassificationRule, ...] = DEFAULT_RULES
    circuit_breaker_threshold: int = DEFAULT_THRESHOLD
    circuit_breaker_reset_s: float = DEFAULT_RESET_TIME_S
    poison_after_worker_crashes: int = 2
    retry_budget_share: float = 0.5
    retry_budget_min_tasks: int = 10
    health_threshold: float = DEFAULT_HEALTH_THRESHOLD
    health_half_life_s: float = DEFAULT_HALF_LIFE_S
    max_coordinator_losses: int = 3
    """How many of a task's attempts may end lost with a cluster node uncharged;
    beyond that (a task that takes its host down, coordinator and all, every
    time) they count against its retries, breakers and poison verdict as any lost
    lease does."""

    @property
    def health_recheck_s(self) -> float:
        """How often a quarantined worker is looked at again (or asked for a health check)."""
        return self.health_half_life_s / 4


class Lifecycle:
    def __init__(self, config: StateConfig | None = None) -> None:
        self.config = config or StateConfig()
        self.tasks: dict[str, TaskRecord] = {}
        self.workers: dict[str, WorkerRecord] = {}
        self.idempotency: dict[str, str] = {}
        self.next_seq = 1
        self.next_fence = 1
        self.events: list[Event] = []
        self.ready = ReadyQueues()
        self.timers = TimerHeap()
        self.task_counts: Counter[TaskStatus] = Counter()
        self.dependants: dict[str, list[str]] = {}
        self.unmet: dict[str, int] = {}
        self.budgets = RetryBudgets()
        self.breakers = Breakers(
            self.config.circuit_breaker_threshold, self.config.circuit_breaker_reset_s
        )

    # -- statuses ----------------------------------------------------------

    def set_status(self, task: TaskRecord, status: TaskStatus, reason: str | None) -> None:
        old = task.status
        task.move_to(status, reason)
        self.task_counts[old] -= 1
        self.task_counts[status] += 1
        self.events.append(TaskStatusChanged(task.id, old, status, reason))

    def make_ready(self, task: TaskRecord, now: float) -> None:
        task.not_before = None
        task.ready_at = now
        task.stage_started_at = now
        self.enqueue(task)

    def enqueue(self, task: TaskRecord) -> None:
        requirements = task.spec.requirements
        self.ready.add(task.id, task.spec.priority, task.seq, effective_requirements(task))
        if task.requirement_stage + 1 < requirements.stage_count:
            due = task.stage_started_at + requirements.fallback_after_seconds
            self.timers.push(due, TimerKind.FALLBACK, task.seq, task.id, task.requirement_stage)

    def finish_task(self, task: TaskRecord, status: TaskStatus, reason: str, now: float) -> None:
        """Move a task to a terminal status and settle its dependants."""
        settled = [(task, status, reason)]
        while settled:
            current, new_status, why = settled.pop()
            if current.status.is_terminal:
                continue
            self.budgets.end(current)
            self.ready.remove(current.id)
            self.unmet.pop(current.id, None)
            self.set_status(current, new_status, why)
            current.finished_at = now
            for dependant_id in self.dependants.pop(current.id, []):
                dependant = self.tasks[dependant_id]
                if dependant.status is not TaskStatus.BLOCKED:
                    continue
                if new_status is TaskStatus.COMPLETED:
                    self.dependency_met(dependant, now)
                else:
                    verb = "failed" if new_status is TaskStatus.FAILED else "was cancelled"
                    settled.append(
                        (dependant, TaskStatus.FAILED, f"dependency {current.id} {verb}: {why}")
                    )

    def dependency_met(self, task: TaskRecord, now: float) -> None:
        self.unmet[task.id] -= 1
        if self.unmet[task.id] == 0:
            del self.unmet[task.id]
            self.set_status(task, TaskStatus.PENDING, "dependencies completed")
            self.make_ready(task, now)

    # -- leases ------------------------------------------------------------

    def is_current_lease(self, task: TaskRecord, worker_id: str, fence: int) -> bool:
        lease = task.lease
        return lease is not None and lease.fence == fence and lease.worker_id == worker_id

    def renew_lease(self, task: TaskRecord, now: float) -> None:
        assert task.lease is not None
        task.lease.expires_at = max(task.lease.expires_at, now + self.config.lease_timeout_s)

    def release_lease(self, task: TaskRecord) -> None:
        if task.lease is None:
            return
        worker = self.workers.get(task.lease.worker_id)
        if worker is not None and task.id in worker.leases:
            worker.leases.remove(task.id)
        task.lease = None

    def live_workers(self) -> list[WorkerRecord]:
        return [w for w in self.workers.values() if w.status is not WorkerStatus.OFFLINE]

    def active_tasks(self) -> list[TaskRecord]:
        """Tasks holding a lease, in lease order of their workers."""
        return [
            self.tasks[task_id] for worker in self.workers.values() for task_id in worker.leases
        ]

    # -- attempts ----------------------------------------------------------

    def end_attempt(
        self,
        task: TaskRecord,
        status: AttemptStatus,
        now: float,
        *,
        failure: FailureKind | None = None,
        reason: str | None = None,
        outcome: Outcome | None = None,
    ) -> AttemptRecord:
        attempt = task.attempts[-1]
        attempt.finish(status, now, failure=failure, reason=reason, outcome=outcome)
        self.release_lease(task)
        self.events.append(
            AttemptFinished(task.id, attempt.number, attempt.worker_id, status, failure, reason)
        )
        return attempt

    def count_outcome(self, task: TaskRecord, outcome: Outcome, now: float) -> None:
        if outcome.failure is None:
            attempt = self.end_attempt(task, AttemptStatus.SUCCEEDED, now, outcome=outcome)
            self.note_worker_result(attempt.worker_id, succeeded=True)
            self.note_health(attempt.worker_id, success(now), now)
            changes = self.breakers.on_success(
                now, worker_id=attempt.worker_id, hardware_class=self.hardware_of(task, attempt)
            )
            self.note_breaker_changes(changes)
            self.finish_task(task, TaskStatus.COMPLETED, completion_reason(outcome), now)
            return
        self.fail_attempt(
            task, now, failure=outcome.failure, reason=failure_reason(outcome), outcome=outcome
        )

    def fail_attempt(
        self,
        task: TaskRecord,
        now: float,
        *,
        failure: FailureKind,
        reason: str,
        status: AttemptStatus = AttemptStatus.FAILED,
        outcome: Outcome | None = None,
    ) -> None:
        """End the current attempt as failed or lost, classify the failure,
        then recover as the ladder says or escalate."""
        attempt = self.end_attempt(
            task, status, now, failure=failure, reason=reason, outcome=outcome
        )
        self.note_worker_result(attempt.worker_id, succeeded=False)
        worker = self.workers.get(attempt.worker_id)
        plan = plan_recovery(
            task,
            attempt,
            failure=failure,
            reason=reason,
            outcome=outcome,
            worker=worker.capabilities if worker else None,
            policy=self.config.recovery,
            rules=self.config.classification_rules,
            poison_after=self.config.poison_after_worker_crashes,
        )
        attempt.failure_type = plan.classification.failure_type
        attempt.evidence = plan.classification.evidence_text
        attempt.classified_by = plan.classification.rule_name
        if not plan.is_poison:
            self.blame(task, attempt, plan.classification.failure_type, now)
        if not plan.is_poison and status is not AttemptStatus.LOST:
            failure_type = plan.classification.failure_type
            if failure_type in WORKER_FAULTS:
                self.note_health(attempt.worker_id, fault(now, failure_type.value), now)
        over_budget = self.budgets.refusal(
            task,
            share=self.config.retry_budget_share,
            min_tasks=self.config.retry_budget_min_tasks,
        )
        if isinstance(plan.next_step, Escalate) or over_budget is not None:
            why = plan.next_step.reason if isinstance(plan.next_step, Escalate) else over_budget
            self.finish_task(task, TaskStatus.FAILED, f"{reason}; {why}", now)
            return
        self.budgets.start_retry(task)
        self.recover(task, attempt, plan.next_step, reason, now)

    def recover(
        self,
        task: TaskRecord,
        attempt: AttemptRecord,
        decision: RecoveryDecision,
        reason: str,
        now: float,
    ) -> None:
        """Schedule the next attempt, changed as the recovery decision says."""
        attempt.recovery, attempt.recovery_reason = decision.strategy, decision.reason
        attempt.retry_delay_s = decision.delay_s
        if decision.config_patch:
            task.params_patch = {**task.params_patch, **decision.config_patch}
        if decision.hardware_override is not None:
            task.hardware_override = list(decision.hardware_override)
        if attempt.worker_id not in task.avoid_workers:
            task.avoid_workers.append(attempt.worker_id)
        self.set_status(task, TaskStatus.PENDING, f"retry after attempt {attempt.number}: {reason}")
        task.not_before = now + decision.delay_s
        self.events.append(
            RetryScheduled(
                task.id, attempt.number + 1, task.not_before, decision.delay_s, attempt.worker_id
            )
        )
        if decision.delay_s <= 0:
            self.make_ready(task, now)
        else:
            self.timers.push(task.not_before, TimerKind.RETRY, task.seq, task.id, attempt.number)

    def blame(
        self, task: TaskRecord, attempt: AttemptRecord, failure_type: FailureType, now: float
    ) -> None:
        """Count the failure against the worker and its hardware class, where it is theirs."""
        changes = self.breakers.on_failure(
            now,
            worker_id=attempt.worker_id if failure_type in WORKER_FAULTS else None,
            hardware_class=self.hardware_of(task, attempt)
            if failure_type in HARDWARE_FAULTS
            else None,
            source=attempt.worker_id,
        )
        self.note_breaker_changes(changes)

    def hardware_of(self, task: TaskRecord, attempt: AttemptRecord) -> HardwareClass:
        worker = self.workers.get(attempt.worker_id)
        return hardware_class_of(task, worker.capabilities if worker else None)

    def note_breaker_changes(self, changes: list[BreakerChange]) -> None:
        self.events.extend(
            BreakerChanged(c.breaker, c.old.value, c.new.value, c.reason) for c in changes
        )

    def note_worker_result(self, worker_id: str, *, succeeded: bool) -> None:
        worker = self.workers.get(worker_id)
        if worker is None:
            return
        if succeeded:
            worker.tasks_completed += 1
        else:
            worker.tasks_failed += 1

    def note_health(self, worker_id: str, sample: HealthSample, now: float) -> None:
        """Add to the worker's health record; quarantine it when its score drops below the threshold.

        A lost lease is not a sample of its own: the dropped connection or the
        silence that lost it is, once for the worker however many tasks it held.
        """
        worker = self.workers.get(worker_id)
        if worker is None:
            return
        health = worker.health
        health.add(sample)
        half_life, threshold = self.config.health_half_life_s, self.config.health_threshold
        if not health.quarantined and score(health.samples, now, half_life) < threshold:
            why = f"{describe(health.samples, now, half_life)} is below {threshold:.0f}"
            self.quarantine(worker, why, now)

    def quarantine(
        self, worker: WorkerRecord, reason: str, now: float, *, by_admin: bool = False
    ) -> None:
        health = worker.health
        health.quarantined, health.quarantine_reason = True, reason
        health.quarantined_at, health.held_by_admin = now, by_admin
        health.recheck_at = None if by_admin else now + self.config.health_recheck_s
        self.events.append(WorkerHealthChanged(worker.id, True, reason))


def completion_reason(outcome: Outcome) -> str:
    if not outcome.test_cases:
        return "completed"
    failed = sum(1 for t in outcome.test_cases if t.outcome in _FAILING_TESTS)
    return f"{len(outcome.test_cases)} tests ran, {failed} failed"


_FAILING_TESTS = frozenset({TestOutcome.FAILED, TestOutcome.ERROR})


def failure_reason(outcome: Outcome) -> str:
    kind = outcome.failure.value if outcome.failure else "failure"
    if outcome.error:
        return f"{kind}: {outcome.error}"
    if outcome.failure is FailureKind.EXIT_NONZERO:
        return f"exited with code {outcome.exit_code}"
    if outcome.signal is not None:
        return f"{kind}: killed by signal {outcome.signal}"
    return kind
