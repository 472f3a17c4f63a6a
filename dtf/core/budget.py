"""Run-wide retry budgets: when a large share of a run is already retrying,
the cause is the infrastructure, not the tasks, and more retries only add load.

A run is the tasks sharing a ``run_id`` label (tasks without one form one
run). A task counts as retrying from its first scheduled retry until it ends.
Once retrying tasks would exceed ``share`` of a run of at least ``min_tasks``,
new failures in that run are not retried automatically, and their reason says
why. Derived from the task records, so a restored state rebuilds it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from dtf.core.records import TaskRecord

RUN_LABEL = "run_id"


def run_of(task: TaskRecord) -> str:
    return task.spec.labels.get(RUN_LABEL, "")


class RetryBudgets:
    def __init__(self) -> None:
        self.sizes: Counter[str] = Counter()
        self.retrying: dict[str, dict[str, None]] = {}

    def add_task(self, task: TaskRecord) -> None:
        self.sizes[run_of(task)] += 1

    def start_retry(self, task: TaskRecord) -> None:
        self.retrying.setdefault(run_of(task), {})[task.id] = None

    def end(self, task: TaskRecord) -> None:
        self.retrying.get(run_of(task), {}).pop(task.id, None)

    def refusal(self, task: TaskRecord, *, share: float, min_tasks: int) -> str | None:
        """Why this task's failure may not be retried, or None while budget is left."""
        run = run_of(task)
        size = self.sizes[run]
        retrying = self.retrying.get(run, {})
        if size < min_tasks or task.id in retrying:
            return None
        if (len(retrying) + 1) / size <= share:
            return None
        name = f"run {run!r}" if run else "tasks without a run_id"
        return (
            f"retry budget of {name} spent: {len(retrying)} of its {size} tasks are already "
            f"retrying (at most {share:.0%}); automatic retries stopped, which points at the "
            "infrastructure: check the workers and `dtf failures`"
        )

    def rebuild(self, tasks: Iterable[TaskRecord]) -> None:
        for task in tasks:
            self.add_task(task)
            if not task.status.is_terminal and any(a.recovery for a in task.attempts):
                self.start_retry(task)
