"""Read models served by the API: tasks with their history, workers, results, status."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec

from dtf.core.breakers import BreakerState, CircuitBreaker
from dtf.core.effective import effective_requirements
from dtf.core.health import explain, score
from dtf.core.matching import count_satisfying, explain_waiting, satisfies
from dtf.core.records import TaskRecord, TaskStatus, WorkerRecord
from dtf.core.recovery_plan import hardware_class_of
from dtf.core.state import State


def task_view(state: State, task: TaskRecord, *, now: float) -> dict[str, Any]:
    view: dict[str, Any] = msgspec.to_builtins(task)
    view.setdefault("attempts", [])
    if task.status in (TaskStatus.PENDING, TaskStatus.BLOCKED):
        view["waiting"] = waiting_view(state, task, now=now)
    return view


def waiting_view(state: State, task: TaskRecord, *, now: float) -> dict[str, Any]:
    """Why a task is not running yet, per constraint where that is the reason."""
    if task.status is TaskStatus.BLOCKED:
        unfinished = [d for d in task.spec.dependencies if not state.tasks[d].status.is_terminal]
        return {"summary": f"waiting for dependencies: {', '.join(unfinished)}", "constraints": []}
    if task.not_before is not None and task.not_before > now:
        return {
            "summary": f"retry scheduled in {task.not_before - now:.1f}s",
            "constraints": [],
        }
    requirements = effective_requirements(task)
    workers = state.live_workers()
    live = [(w.id, w.capabilities) for w in workers]
    counts = count_satisfying(requirements, live)
    matching = [w for w in workers if satisfies(requirements, w.capabilities, w.id)]
    summary = explain_waiting(requirements, live, held_back(state, task, matching, now=now))
    if task.spec.requirements.stage_count > 1:
        summary = f"requirement set {task.requirement_stage + 1} of {task.spec.requirements.stage_count}: {summary}"
    return {
        "summary": summary,
        "constraints": [msgspec.to_builtins(count) for count in counts],
    }


def held_back(state: State, task: TaskRecord, matching: list[WorkerRecord], *, now: float) -> str:
    """Why the live workers that meet ``task``'s requirements run no more of it now:
    not taking work at all, an open circuit breaker (the worker's, or that of the
    hardware class the task would run on there), or full slots."""
    out = [w.id for w in matching if not state.takes_work(w)]
    tripped = [
        w.id
        for w in matching
        if w.id not in out
        and not state.breakers.allows(
            now, worker_id=w.id, hardware_class=hardware_class_of(task, w.capabilities)
        )
    ]
    reasons = [f"not taking work: {', '.join(out)}"] if out else []
    reasons += [f"circuit breaker open: {', '.join(tripped)}"] if tripped else []
    if len(out) + len(tripped) < len(matching):
        reasons.append("the others' slots busy" if reasons else "all slots busy")
    return "; ".join(reasons)


def result_views(
    state: State, *, task_id: str | None, limit: int, offset: int
) -> list[dict[str, Any]]:
    if task_id is None:
        tasks = list(state.tasks.values())
    else:
        tasks = [state.tasks[task_id]] if task_id in state.tasks else []
    results = [
        {
            "task_id": task.id,
            "task_type": task.spec.type.value,
            "attempt": attempt.number,
            "worker_id": attempt.worker_id,
            "status": attempt.status.value,
            "failure": attempt.failure.value if attempt.failure else None,
            "reason": attempt.reason,
            "assigned_at": attempt.assigned_at,
            "started_at": attempt.started_at,
            "finished_at": attempt.finished_at,
            "outcome": msgspec.to_builtins(attempt.outcome) if attempt.outcome else None,
            "labels": task.spec.labels,
        }
        for task in tasks
        for attempt in task.attempts
        if attempt.finished_at is not None
    ]
    return results[offset : offset + limit]


def wait_view(tasks: list[TaskRecord], listed: int = 100) -> dict[str, Any]:
    """How many of ``tasks`` are in each status, and (the first ``listed`` of) those
    not finished yet."""
    unfinished = [t.id for t in tasks if not t.status.is_terminal]
    return {
        "done": not unfinished,
        "counts": dict(Counter(t.status.value for t in tasks)),
        "unfinished": unfinished[:listed],
        "unfinished_total": len(unfinished),
    }


def worker_view(state: State, worker: WorkerRecord, *, now: float) -> dict[str, Any]:
    """A worker with its health score and circuit breaker (closed when it never failed)."""
    view: dict[str, Any] = msgspec.to_builtins(worker)
    breaker = state.breakers.workers.get(worker.id)
    view["breaker"] = breaker_view(breaker) if breaker else {"state": "closed"}
    view["health"] = health_view(state, worker, now=now)
    view["takes_work"] = state.takes_work(worker)
    return view


def health_view(state: State, worker: WorkerRecord, *, now: float) -> dict[str, Any]:
    """The score and what weighs on it, quarantine and health check; raw samples omitted."""
    health = worker.health
    half_life = state.config.health_half_life_s
    view: dict[str, Any] = msgspec.to_builtins(health)
    del view["samples"]
    view["score"] = round(score(health.samples, now, half_life), 1)
    view["summary"] = explain(health.samples, now, half_life)
    view["threshold"] = state.config.health_threshold
    return view


def breaker_view(breaker: CircuitBreaker) -> dict[str, Any]:
    return {
        "name": breaker.name,
        "state": breaker.state.value,
        "consecutive_failures": breaker.consecutive_failures,
        "next_probe_at": breaker.next_probe_at,
    }


def open_breakers(state: State) -> list[dict[str, Any]]:
    breakers = [*state.breakers.workers.values(), *state.breakers.hardware.values()]
    return [breaker_view(b) for b in breakers if b.state is not BreakerState.CLOSED]


def out_of_service(state: State) -> list[dict[str, Any]]:
    """Workers that take no new work even when connected: quarantined, or failing their check."""
    found = []
    for worker in state.workers.values():
        health = worker.health
        if health.quarantined:
            found.append({"worker_id": worker.id, "reason": health.quarantine_reason})
        elif not health.admits_work:
            detail = health.check_detail or health.check_command
            found.append(
                {"worker_id": worker.id, "reason": f"health check {health.check}: {detail}"}
            )
    return found
