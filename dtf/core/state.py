"""The coordinator's whole state and the one function that changes it.

How this works: ``State.apply(command)`` validates the command against the
current state (``check``), then mutates tasks, attempts, workers and leases
and returns the events that followed. It reads no clock (time is
``command.at``, never allowed to run backwards), draws no global randomness
and iterates only insertion-ordered containers, so applying the same journal
on any machine yields the same state and the same events.

After every command the scheduler fills free worker slots; assignments are
therefore part of the deterministic replay, not separate commands. Timers
(lease expiry, delayed retries, requirement fallbacks, worker liveness,
quarantine reviews) fire only on ``Tick``; ``next_deadline`` tells the shell when one is due.

Rules kept here:
- a task has at most one live lease; every lease has a fence number that only grows;
- an outcome counts only under the task's current lease; later ones are kept
  on the attempt as superseded, and a resend of a counted outcome changes nothing;
- an attempt is finished exactly once (``AttemptRecord.finish``);
- a task status changes only through ``_set_status`` (``TaskRecord.move_to``).
"""

from __future__ import annotations

import typing
from collections import Counter
from typing import Any

import msgspec

from dtf.core import commands as c
from dtf.core.breakers import Breakers
from dtf.core.checkpoints import CheckpointMixin
from dtf.core.effective import effective_requirements, effective_spec
from dtf.core.events import (
    AssignTask,
    CancelAttempt,
    Event,
    OutcomeAccepted,
    RequirementStageAdvanced,
)
from dtf.core.lifecycle import StateConfig
from dtf.core.quarantine import HealthMixin
from dtf.core.records import (
    ApiKeyRecord,
    AttemptRecord,
    AttemptStatus,
    Lease,
    TaskRecord,
    TaskStatus,
    WorkerRecord,
    WorkerStatus,
)
from dtf.core.recovery_plan import hardware_class_of
from dtf.core.stranding import StrandingMixin
from dtf.core.submission import SubmissionMixin
from dtf.core.timers import Timer, TimerKind


class Snapshot(msgspec.Struct):
    config: StateConfig
    breakers: Breakers
    applied_seq: int
    clock: float
    next_seq: int
    next_fence: int
    tasks: list[TaskRecord]
    workers: list[WorkerRecord]
    api_keys: list[ApiKeyRecord]
    idempotency: dict[str, str]


__all__ = ["Snapshot", "State", "StateConfig"]


class State(SubmissionMixin, CheckpointMixin, HealthMixin, StrandingMixin):
    def __init__(self, config: StateConfig | None = None) -> None:
        super().__init__(config)
        self.applied_seq = 0
        self.clock = 0.0
        self.api_keys: dict[str, ApiKeyRecord] = {}

    # -- applying commands -------------------------------------------------

    def check(self, command: c.Command) -> None:
        """Raise the ``DtfError`` that applying ``command`` would meet; change nothing."""
        checker = _CHECKERS.get(type(command))
        if checker is not None:
            checker(self, command)

    def apply(self, command: c.Command, seq: int | None = None) -> list[Event]:
        self.check(command)
        now = max(self.clock, command.at)
        self.clock = now
        if seq is not None:
            self.applied_seq = seq
        self.events = []
        _HANDLERS[type(command)](self, command, now)
        self.schedule(now)
        events, self.events = self.events, []
        return events

    def on_tick(self, command: c.Tick, now: float) -> None:
        self.fire_timers(now)
        self.expire_silent_workers(now)
        self.fire_health_rechecks(now)

    def on_create_api_key(self, command: c.CreateApiKey, now: float) -> None:
        self.api_keys[command.key_id] = ApiKeyRecord(
            command.key_id, command.role, command.key_hash, now, command.name
        )

    def on_configure(self, command: c.Configure, now: float) -> None:
        self.config = command.config
        self.breakers.threshold = command.config.circuit_breaker_threshold
        self.breakers.reset_time_s = command.config.circuit_breaker_reset_s

    def on_coordinator_started(self, command: c.CoordinatorStarted, now: float) -> None:
        fresh_until = now + self.config.lease_timeout_s
        for task in self.active_tasks():
            assert task.lease is not None
            task.lease.expires_at = max(task.lease.expires_at, fresh_until)
            self.timers.push(
                task.lease.expires_at, TimerKind.LEASE, task.seq, task.id, task.lease.fence
            )
        self.forgive_downtime(now, connections_lost=command.connections_lost)

    # -- the clock ---------------------------------------------------------

    def fire_timers(self, now: float) -> None:
        while (timer := self.timers.pop_due(now)) is not None:
            if self.is_moot(timer):
                continue
            if timer.kind is TimerKind.LEASE:
                self.on_lease_timer(timer, now)
            elif timer.kind is TimerKind.RETRY:
                self.make_ready(self.tasks[timer.task_id], now)
            else:
                self.on_fallback_timer(self.tasks[timer.task_id], now)

    def on_lease_timer(self, timer: Timer, now: float) -> None:
        """A renewed lease's timer is re-armed at the new expiry, even if that
        has passed too, so expiries fire in expiry order, live or restored."""
        task = self.tasks[timer.task_id]
        assert task.lease is not None
        if task.lease.expires_at != timer.due:
            self.timers.push(
                task.lease.expires_at, TimerKind.LEASE, task.seq, task.id, task.lease.fence
            )
            return
        self.expire_lease(task.id, task.lease.fence, now)

    def on_fallback_timer(self, task: TaskRecord, now: float) -> None:
        self.ready.remove(task.id)
        task.requirement_stage += 1
        task.stage_started_at = now
        self.enqueue(task)
        self.events.append(RequirementStageAdvanced(task.id, task.requirement_stage))

    def next_deadline(self) -> float | None:
        """When the next ``Tick`` has something to do, or None if nothing is pending.

        Timers made moot since they were set are dropped here so the clock
        loop does not wake for them; this changes no observable state.
        """
        while (timer := self.timers.peek()) is not None and self.is_moot(timer):
            self.timers.discard_top()
        deadlines = [timer.due] if timer is not None else []
        deadlines.extend(probe for probe in self.breaker_probes() if probe > self.clock)
        deadlines.extend(self.health_deadlines())
        deadlines.extend(
            w.last_seen_at + self.config.worker_timeout_s
            for w in self.workers.values()
            if w.status is not WorkerStatus.OFFLINE
        )
        return min(deadlines, default=None)

    def breaker_probes(self) -> list[float]:
        """When open breakers admit their probes (work may then be assigned)."""
        breakers = [*self.breakers.workers.values(), *self.breakers.hardware.values()]
        return [p for p in (b.next_probe_at for b in breakers) if p is not None]

    def is_moot(self, timer: Timer) -> bool:
        """Whether ``timer`` can never fire again. Asked alike when a timer comes due
        and when the leader's clock drops timers early (``next_deadline``), so a
        replica that never drops them (a follower, a restored state) fires the same
        timers in the same order. Each kind counts only for the exact lease, wait or
        queueing it was set for; a later one pushes a timer of its own."""
        task = self.tasks[timer.task_id]
        if timer.kind is TimerKind.LEASE:
            return task.lease is None or task.lease.fence != timer.token
        if timer.kind is TimerKind.RETRY:
            return (
                task.status is not TaskStatus.PENDING
                or task.id in self.ready
                or len(task.attempts) != timer.token
                or task.not_before != timer.due
            )
        fallback_due = task.stage_started_at + task.spec.requirements.fallback_after_seconds
        return (
            task.id not in self.ready
            or task.requirement_stage != timer.token
            or timer.due != fallback_due
        )

    def rebuild_indexes(self) -> None:
        """Derive ready queues, timers, dependency counts and retry budgets from the records."""
        self.budgets.rebuild(self.tasks.values())
        for task in self.tasks.values():
            self.task_counts[task.status] += 1
            if task.lease is not None:
                self.timers.push(
                    task.lease.expires_at, TimerKind.LEASE, task.seq, task.id, task.lease.fence
                )
            elif task.status is TaskStatus.PENDING and task.not_before is not None:
                self.timers.push(
                    task.not_before, TimerKind.RETRY, task.seq, task.id, len(task.attempts)
                )
            elif task.status is TaskStatus.PENDING:
                self.enqueue(task)
            elif task.status is TaskStatus.BLOCKED:
                dependencies = dict.fromkeys(task.spec.dependencies)
                waiting = [d for d in dependencies if not self.tasks[d].status.is_terminal]
                for dependency_id in waiting:
                    self.dependants.setdefault(dependency_id, []).append(task.id)
                self.unmet[task.id] = len(waiting)

    # -- scheduling --------------------------------------------------------

    def schedule(self, now: float) -> None:
        if not len(self.ready):
            return
        for worker in self.assignable_workers():
            while worker.free_slots > 0 and self.breaker_allows(worker.id, now):
                task_id = self.ready.pick(
                    worker.id,
                    worker.capabilities,
                    lambda tid, w=worker: self.is_acceptable_on(tid, w, now),  # type: ignore[misc]
                )
                if task_id is None:
                    break
                self.assign(self.tasks[task_id], worker, now)
            if not len(self.ready):
                return

    def breaker_allows(self, worker_id: str, now: float) -> bool:
        """A worker whose breaker is open gets nothing; half-open, one probe."""
        breaker = self.breakers.workers.get(worker_id)
        return breaker is None or breaker.allows(now)

    def is_acceptable_on(self, task_id: str, worker: WorkerRecord, now: float) -> bool:
        """Not while the breaker of the hardware class it would run on is open. A
        task avoids a worker it failed on, and one running a task it went down
        with, while another live worker could run it."""
        task = self.tasks[task_id]
        if self.breakers.hardware:
            hardware = self.breakers.hardware.get(hardware_class_of(task, worker.capabilities))
            if hardware is not None and not hardware.allows(now):
                return False
        if not self.shuns(task, worker):
            return True
        requirements = effective_requirements(task)
        return not any(
            w.id != worker.id and not self.shuns(task, w)
            for w in self.workers_satisfying(requirements)
        )

    def shuns(self, task: TaskRecord, worker: WorkerRecord) -> bool:
        if worker.id in task.avoid_workers:
            return True
        return bool(task.crash_mates) and any(t in task.crash_mates for t in worker.leases)

    def assign(self, task: TaskRecord, worker: WorkerRecord, now: float) -> None:
        self.ready.remove(task.id)
        fence = self.next_fence
        self.next_fence += 1
        attempt = AttemptRecord(
            number=len(task.attempts) + 1,
            worker_id=worker.id,
            fence=fence,
            assigned_at=now,
            requirement_stage=task.requirement_stage,
            params_patch=dict(task.params_patch),
            hardware=task.hardware_override,
            resumed_from=task.checkpoint,
        )
        task.attempts.append(attempt)
        task.lease = Lease(worker.id, attempt.number, fence, now + self.config.lease_timeout_s)
        worker.leases.append(task.id)
        hardware = hardware_class_of(task, worker.capabilities)
        self.note_breaker_changes(
            self.breakers.on_dispatch(now, worker_id=worker.id, hardware_class=hardware)
        )
        self.timers.push(task.lease.expires_at, TimerKind.LEASE, task.seq, task.id, fence)
        self.set_status(task, TaskStatus.ASSIGNED, f"assigned to {worker.id}")
        self.events.append(
            AssignTask(
                worker.id,
                task.id,
                attempt.number,
                fence,
                effective_spec(task),
                self.config.lease_timeout_s,
            )
        )

    # -- attempts ----------------------------------------------------------

    def on_task_started(self, command: c.TaskStarted, now: float) -> None:
        task = self.tasks[command.lease.task_id]
        if not self.is_current_lease(task, command.worker_id, command.lease.fence):
            return
        attempt = task.attempts[-1]
        if attempt.started_at is None:
            attempt.started_at = max(attempt.assigned_at, now - max(command.ran_for_s, 0.0))
        self.renew_lease(task, now)
        if task.status is TaskStatus.ASSIGNED:
            self.set_status(task, TaskStatus.RUNNING, f"running on {command.worker_id}")

    def on_report_outcome(self, command: c.ReportOutcome, now: float) -> None:
        task = self.tasks[command.lease.task_id]
        attempt = task.attempts[command.lease.attempt - 1]
        if attempt.status is AttemptStatus.RUNNING and self.is_current_lease(
            task, command.worker_id, command.lease.fence
        ):
            if attempt.started_at is None:
                attempt.started_at = max(attempt.assigned_at, now - command.outcome.duration_s)
            self.count_outcome(task, command.outcome, now)
            self.acknowledge(command, counted=True)
            return
        if (
            attempt.outcome != command.outcome
            and command.outcome not in attempt.superseded_outcomes
        ):
            attempt.superseded_outcomes.append(command.outcome)
        self.acknowledge(command, counted=False)

    def acknowledge(self, command: c.ReportOutcome, *, counted: bool) -> None:
        lease = command.lease
        self.events.append(
            OutcomeAccepted(command.worker_id, lease.task_id, lease.attempt, lease.fence, counted)
        )

    def on_cancel_task(self, command: c.CancelTask, now: float) -> None:
        task = self.tasks[command.task_id]
        if task.lease is not None:
            lease = task.lease
            self.end_attempt(task, AttemptStatus.CANCELLED, now, reason=command.reason)
            self.events.append(CancelAttempt(lease.worker_id, task.id, lease.attempt, lease.fence))
        self.finish_task(task, TaskStatus.CANCELLED, command.reason, now)

    # -- snapshots ---------------------------------------------------------

    def snapshot(self) -> bytes:
        return msgspec.msgpack.encode(
            Snapshot(
                config=self.config,
                breakers=self.breakers,
                applied_seq=self.applied_seq,
                clock=self.clock,
                next_seq=self.next_seq,
                next_fence=self.next_fence,
                tasks=list(self.tasks.values()),
                workers=list(self.workers.values()),
                api_keys=list(self.api_keys.values()),
                idempotency=self.idempotency,
            )
        )

    @classmethod
    def restore(cls, data: bytes) -> State:
        """The state a snapshot holds, settings included."""
        snap = msgspec.msgpack.decode(data, type=Snapshot)
        state = cls(snap.config)
        state.breakers = snap.breakers
        state.applied_seq, state.clock = snap.applied_seq, snap.clock
        state.next_seq, state.next_fence = snap.next_seq, snap.next_fence
        state.tasks = {t.id: t for t in snap.tasks}
        state.workers = {w.id: w for w in snap.workers}
        state.api_keys = {k.key_id: k for k in snap.api_keys}
        state.idempotency = dict(snap.idempotency)
        state.rebuild_indexes()
        return state

    def status_counts(self) -> dict[str, Any]:
        return {
            "tasks": {s.value: n for s, n in self.task_counts.items() if n},
            "workers": dict(Counter(w.status.value for w in self.workers.values())),
        }


def _methods(prefix: str) -> dict[type[Any], Any]:
    """Command type -> ``State`` method named ``<prefix><command tag>``, where one exists."""
    kinds: tuple[type[Any], ...] = typing.get_args(c.Command)
    found = {kind: getattr(State, f"{prefix}{kind.__struct_config__.tag}", None) for kind in kinds}
    return {kind: method for kind, method in found.items() if method is not None}


_CHECKERS = _methods("check_")
_HANDLERS = _methods("on_")
