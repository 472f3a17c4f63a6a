"""Invariants of the coordinator state, checked from the records alone.

``check_invariants(state)`` recounts and cross-checks tasks, attempts, leases,
workers and the ready queues and raises one ``AssertionError`` listing every
violation, each naming the task or worker and what was expected. Tests call
it after every command; the simulator after every step.
"""

from __future__ import annotations

from collections import Counter

import msgspec

from dtf.core.matching import satisfies
from dtf.core.records import AttemptRecord, AttemptStatus, TaskRecord, TaskStatus, WorkerRecord
from dtf.core.state import State


def check_invariants(state: State) -> None:
    problems: list[str] = []
    for task in state.tasks.values():
        problems.extend(_lease_problems(state, task))
        problems.extend(_attempt_problems(state, task))
        problems.extend(_status_problems(state, task))
        problems.extend(_dependency_problems(state, task))
    for worker in state.workers.values():
        problems.extend(_worker_problems(state, worker))
    problems.extend(_count_problems(state))
    if problems:
        raise AssertionError("state invariants violated:\n  " + "\n  ".join(problems))


def _lease_problems(state: State, task: TaskRecord) -> list[str]:
    lease, last = task.lease, task.current_attempt
    if lease is None:
        if task.status.is_active:
            return [f"task {task.id} is {task.status.value} but holds no lease"]
        if last is not None and last.status is AttemptStatus.RUNNING:
            return [f"task {task.id} attempt {last.number} is running without a lease"]
        return []
    problems = []
    if not task.status.is_active:
        problems.append(f"task {task.id} is {task.status.value} but holds lease {lease}")
    if last is None or (last.worker_id, last.number, last.fence) != (
        lease.worker_id,
        lease.attempt,
        lease.fence,
    ):
        return [*problems, f"task {task.id} lease {lease} does not match its last attempt"]
    if last.status is not AttemptStatus.RUNNING:
        problems.append(f"task {task.id} lease {lease} is on a {last.status.value} attempt")
    return problems + _holder_problems(state, task, last)


def _holder_problems(state: State, task: TaskRecord, attempt: AttemptRecord) -> list[str]:
    worker = state.workers.get(attempt.worker_id)
    if worker is None or task.id not in worker.leases:
        return [f"task {task.id} is leased to {attempt.worker_id}, which does not list it"]
    stage = task.spec.requirements.stage(attempt.requirement_stage)
    if attempt.hardware is not None:
        stage = msgspec.structs.replace(stage, hardware=list(attempt.hardware))
    if not satisfies(stage, worker.capabilities, worker.id):
        return [
            f"task {task.id} runs on {worker.id}, which does not satisfy "
            f"requirement stage {attempt.requirement_stage}"
        ]
    return []


def _attempt_problems(state: State, task: TaskRecord) -> list[str]:
    problems = []
    previous_fence = 0
    for index, attempt in enumerate(task.attempts):
        where = f"task {task.id} attempt {attempt.number}"
        if attempt.number != index + 1:
            problems.append(f"{where} is at position {index + 1}")
        if attempt.fence <= previous_fence or attempt.fence >= state.next_fence:
            problems.append(
                f"{where} has fence {attempt.fence}; expected above {previous_fence} "
                f"and below next_fence {state.next_fence}"
            )
        previous_fence = attempt.fence
        is_last = index == len(task.attempts) - 1
        if attempt.status is AttemptStatus.RUNNING and not is_last:
            problems.append(f"{where} is still running but a later attempt exists")
        if attempt.status is not AttemptStatus.RUNNING and attempt.finished_at is None:
            problems.append(f"{where} is {attempt.status.value} without finished_at")
    return problems


def _status_problems(state: State, task: TaskRecord) -> list[str]:
    problems = []
    is_ready = task.id in state.ready
    should_be_ready = task.status is TaskStatus.PENDING and task.not_before is None
    if is_ready != should_be_ready:
        problems.append(
            f"task {task.id} ({task.status.value}, not_before={task.not_before}) "
            f"is {'' if is_ready else 'not '}in the ready queues"
        )
    if task.status.is_terminal and task.finished_at is None:
        problems.append(f"task {task.id} is {task.status.value} without finished_at")
    last = task.current_attempt
    if task.status is TaskStatus.COMPLETED and (
        last is None or last.status is not AttemptStatus.SUCCEEDED
    ):
        problems.append(f"task {task.id} is completed but its last attempt did not succeed")
    if task.status is TaskStatus.RUNNING and (last is None or last.started_at is None):
        problems.append(f"task {task.id} is running but its attempt never started")
    if task.requirement_stage >= task.spec.requirements.stage_count:
        problems.append(f"task {task.id} is at requirement stage {task.requirement_stage}")
    return problems


def _dependency_problems(state: State, task: TaskRecord) -> list[str]:
    dependencies = [state.tasks[d] for d in dict.fromkeys(task.spec.dependencies)]
    if task.attempts:
        first_assigned_at = task.attempts[0].assigned_at
        return [
            f"task {task.id} started at {first_assigned_at} before dependency {d.id} "
            f"completed ({d.status.value}, finished_at={d.finished_at})"
            for d in dependencies
            if d.status is not TaskStatus.COMPLETED
            or d.finished_at is None
            or d.finished_at > first_assigned_at
        ]
    if task.status is not TaskStatus.BLOCKED:
        return []
    problems = [
        f"task {task.id} is blocked on {d.id}, which is {d.status.value}"
        for d in dependencies
        if d.status in (TaskStatus.FAILED, TaskStatus.CANCELLED)
    ]
    unfinished = sum(1 for d in dependencies if not d.status.is_terminal)
    if unfinished == 0 or state.unmet.get(task.id) != unfinished:
        problems.append(
            f"task {task.id} is blocked with {unfinished} unfinished dependencies; "
            f"the state counts {state.unmet.get(task.id)}"
        )
    return problems


def _worker_problems(state: State, worker: WorkerRecord) -> list[str]:
    problems = []
    if len(worker.leases) > worker.slots:
        problems.append(
            f"worker {worker.id} holds {len(worker.leases)} leases in {worker.slots} slots"
        )
    if len(set(worker.leases)) != len(worker.leases):
        problems.append(f"worker {worker.id} lists a task twice: {worker.leases}")
    for task_id in worker.leases:
        lease = state.tasks[task_id].lease
        if lease is None or lease.worker_id != worker.id:
            problems.append(f"worker {worker.id} lists {task_id}, leased to {lease}")
    return problems


def _count_problems(state: State) -> list[str]:
    problems = []
    recount = Counter(task.status for task in state.tasks.values())
    kept = {status: n for status, n in state.task_counts.items() if n}
    if kept != dict(recount):
        problems.append(f"status counts {kept} differ from a recount {dict(recount)}")
    for key, task_id in state.idempotency.items():
        task = state.tasks.get(task_id)
        if task is None or task.spec.idempotency_key != key:
            problems.append(f"idempotency key {key!r} points at {task_id!r}, which lacks it")
    return problems
