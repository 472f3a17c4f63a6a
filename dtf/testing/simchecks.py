"""What must hold when a simulation has settled.

Every submitted task is there and terminal; each attempt's outcome was counted
at most once and is the outcome its worker produced; only the client cancelled
tasks; no two attempts of a task ever executed at the same time; nothing ran
before its dependencies had completed; and replaying the whole journal on a
fresh state yields the very same snapshot.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Mapping, Sequence
from itertools import pairwise

from dtf.core import commands as c
from dtf.core.model import Outcome
from dtf.core.records import AttemptStatus, TaskStatus
from dtf.core.state import State, StateConfig
from dtf.testing.invariants import check_invariants
from dtf.testing.simworker import Execution


def check_end_state(
    state: State,
    *,
    submitted: Collection[str],
    cancelled: Collection[str],
    counted: Counter[tuple[str, int]],
    produced: Mapping[int, Outcome],
    executions: Sequence[Execution],
) -> None:
    check_invariants(state)
    problems = [
        *_presence_problems(state, submitted),
        *_outcome_problems(state, counted, produced),
        *_cancel_problems(state, cancelled),
        *_execution_problems(state, executions),
    ]
    if problems:
        shown = "\n  ".join(problems[:20])
        raise AssertionError(f"{len(problems)} end-state problems:\n  {shown}")


def check_replay(state: State, journal: Sequence[bytes], config: StateConfig) -> None:
    replayed = State(config)
    for seq, data in enumerate(journal, start=1):
        replayed.apply(c.decode(data), seq=seq)
    if replayed.snapshot() != state.snapshot():
        raise AssertionError(
            f"replaying {len(journal)} journal entries on a fresh state gave another snapshot"
        )


def _presence_problems(state: State, submitted: Collection[str]) -> list[str]:
    problems = [f"task {t} was submitted but is missing" for t in submitted if t not in state.tasks]
    problems += [
        f"task {t} exists but was never submitted" for t in state.tasks if t not in submitted
    ]
    problems += [
        f"task {t.id} is still {t.status.value}"
        for t in state.tasks.values()
        if not t.status.is_terminal
    ]
    return problems


def _outcome_problems(
    state: State, counted: Counter[tuple[str, int]], produced: Mapping[int, Outcome]
) -> list[str]:
    problems = [f"{key} counted {n} times" for key, n in counted.items() if n > 1]
    for task in state.tasks.values():
        for attempt in task.attempts:
            key = (task.id, attempt.number)
            if attempt.outcome is None:
                if counted[key]:
                    problems.append(f"{key} counted an outcome the attempt does not keep")
            elif counted[key] != 1:
                problems.append(f"{key} keeps an outcome but was counted {counted[key]} times")
            elif attempt.outcome != produced.get(attempt.fence):
                problems.append(f"{key} keeps {attempt.outcome}, not what its worker produced")
        succeeded = [a for a in task.attempts if a.status is AttemptStatus.SUCCEEDED]
        if task.status is TaskStatus.COMPLETED and len(succeeded) != 1:
            problems.append(f"task {task.id} completed with {len(succeeded)} successful attempts")
    return problems


def _cancel_problems(state: State, cancelled: Collection[str]) -> list[str]:
    return [
        f"task {t.id} is cancelled though the client never cancelled it"
        for t in state.tasks.values()
        if t.status is TaskStatus.CANCELLED and t.id not in cancelled
    ]


def _execution_problems(state: State, executions: Sequence[Execution]) -> list[str]:
    problems = []
    by_task: dict[str, list[Execution]] = defaultdict(list)
    for execution in executions:
        by_task[execution.task_id].append(execution)
        for dependency_id in state.tasks[execution.task_id].spec.dependencies:
            dependency = state.tasks[dependency_id]
            finished_at = dependency.finished_at
            if (
                dependency.status is not TaskStatus.COMPLETED
                or finished_at is None
                or (finished_at > execution.started_at)
            ):
                problems.append(
                    f"task {execution.task_id} executed at {execution.started_at} before "
                    f"dependency {dependency_id} completed"
                )
    for task_id, runs in by_task.items():
        runs.sort(key=lambda run: run.started_at)
        for earlier, later in pairwise(runs):
            if earlier.ended_at is None or earlier.ended_at > later.started_at:
                problems.append(
                    f"task {task_id}: fence {earlier.fence} on {earlier.worker_id} and "
                    f"fence {later.fence} on {later.worker_id} executed at the same time"
                )
    return problems
