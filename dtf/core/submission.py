"""Accepting tasks: idempotency, dependency checks, satisfiability, cancellation checks.

A batch is accepted whole or refused whole. A resubmitted task (same
client-chosen id and identical spec, or a known idempotency key) is reported
as a duplicate with its existing id, so retrying a submit after a timeout
never creates a second task.
"""

from __future__ import annotations

from graphlib import CycleError, TopologicalSorter

import msgspec

from dtf.core import commands as c
from dtf.core.events import TaskAccepted
from dtf.core.lifecycle import Lifecycle
from dtf.core.matching import explain_waiting, satisfies
from dtf.core.model import RequirementSet, TaskSpec, validate_config
from dtf.core.records import TaskRecord, TaskStatus
from dtf.errors import Conflict, InvalidRequest, InvalidTransition, NotFound, Unsatisfiable


class SubmissionMixin(Lifecycle):
    def check_submit_tasks(self, command: c.SubmitTasks) -> None:
        fresh: dict[str, TaskSpec] = {}
        keys_in_batch: set[str] = set()
        for index, new in enumerate(command.tasks):
            where = f"tasks[{index}]"
            key = new.spec.idempotency_key
            if self.duplicate_of(new) is not None or key in keys_in_batch:
                continue
            if key is not None:
                keys_in_batch.add(key)
            if new.task_id in fresh:
                raise Conflict(
                    f"task id {new.task_id!r} appears twice in this batch", field=f"{where}.id"
                )
            try:
                validate_config(new.spec.type, new.spec.config, path=f"{where}.config")
            except msgspec.ValidationError as exc:
                raise InvalidRequest(str(exc), field=f"{where}.config") from None
            fresh[new.task_id] = new.spec
        self.check_dependencies(fresh)
        if command.reject_unsatisfiable:
            self.check_satisfiable(fresh)

    def duplicate_of(self, new: c.NewTask) -> str | None:
        """The id of the existing task this submission repeats, if any."""
        key = new.spec.idempotency_key
        if key is not None and key in self.idempotency:
            return self.idempotency[key]
        existing = self.tasks.get(new.task_id)
        if existing is None:
            return None
        if existing.spec != new.spec:
            raise Conflict(
                f"task id {new.task_id!r} already exists with a different spec; "
                "choose another id or resubmit the identical spec",
                field="id",
            )
        return existing.id

    def check_dependencies(self, fresh: dict[str, TaskSpec]) -> None:
        graph: dict[str, list[str]] = {}
        for task_id, spec in fresh.items():
            for dependency in spec.dependencies:
                if dependency == task_id:
                    raise InvalidRequest(
                        f"task {task_id!r} depends on itself", field="dependencies"
                    )
                if dependency not in fresh and dependency not in self.tasks:
                    raise InvalidRequest(
                        f"task {task_id!r} depends on unknown task {dependency!r}",
                        field="dependencies",
                    )
            in_batch = [d for d in spec.dependencies if d in fresh]
            if in_batch:
                graph[task_id] = in_batch
        try:
            TopologicalSorter(graph).prepare()
        except CycleError as exc:
            cycle = " -> ".join(exc.args[1])
            raise InvalidRequest(f"dependency cycle: {cycle}", field="dependencies") from None

    def check_satisfiable(self, fresh: dict[str, TaskSpec]) -> None:
        live = self.live_workers()
        for task_id, spec in fresh.items():
            stages = [spec.requirements.stage(i) for i in range(spec.requirements.stage_count)]
            if not any(satisfies(s, w.capabilities, w.id) for s in stages for w in live):
                raise Unsatisfiable(
                    f"no live worker can run task {task_id!r}: {self.explain(stages[0])}",
                    field="requirements",
                )

    def check_cancel_task(self, command: c.CancelTask) -> None:
        task = self.tasks.get(command.task_id)
        if task is None:
            raise NotFound(f"task {command.task_id!r} does not exist")
        if task.status.is_terminal:
            raise InvalidTransition(
                f"task {command.task_id!r} is already {task.status.value}; nothing to cancel"
            )

    def on_submit_tasks(self, command: c.SubmitTasks, now: float) -> None:
        """Record every new task first, then link dependencies, so a batch may
        list a dependant before its dependency."""
        accepted: list[tuple[str, bool]] = []
        added: list[TaskRecord] = []
        for new in command.tasks:
            existing = self.duplicate_of(new)
            if existing is None:
                added.append(self.add_task(new, now))
            accepted.append((existing or new.task_id, existing is not None))
        for task in added:
            if task.status is TaskStatus.BLOCKED and task.id not in self.unmet:
                self.link_dependencies(task, now)
        self.events.extend(
            TaskAccepted(task_id, self.tasks[task_id].status, duplicate)
            for task_id, duplicate in accepted
        )

    def add_task(self, new: c.NewTask, now: float) -> TaskRecord:
        task = TaskRecord(new.task_id, new.spec, self.next_seq, now, TaskStatus.BLOCKED)
        self.next_seq += 1
        self.tasks[task.id] = task
        self.budgets.add_task(task)
        self.task_counts[TaskStatus.BLOCKED] += 1
        if new.spec.idempotency_key is not None:
            self.idempotency[new.spec.idempotency_key] = task.id
        return task

    def link_dependencies(self, task: TaskRecord, now: float) -> None:
        """Block the task on its unfinished dependencies, or fail or release it at once."""
        unmet = 0
        for dependency_id in dict.fromkeys(task.spec.dependencies):
            dependency = self.tasks[dependency_id]
            if dependency.status is TaskStatus.COMPLETED:
                continue
            if dependency.status.is_terminal:
                reason = f"dependency {dependency_id} {dependency.status.value}"
                self.finish_task(task, TaskStatus.FAILED, reason, now)
                return
            self.dependants.setdefault(dependency_id, []).append(task.id)
            unmet += 1
        if unmet:
            self.unmet[task.id] = unmet
            task.status_reason = f"waiting for {unmet} dependencies"
            return
        self.set_status(task, TaskStatus.PENDING, None)
        self.make_ready(task, now)

    def explain(self, requirements: RequirementSet) -> str:
        live = [(w.id, w.capabilities) for w in self.live_workers()]
        return explain_waiting(requirements, live)
