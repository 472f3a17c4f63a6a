"""Notable changes between two polls of the demo's tasks, as lines to print.

Compares attempt histories: a failed or lost attempt, a retry or recovery
starting on a worker, a task that ends failed or cancelled.
"""

from __future__ import annotations

from typing import Any

Task = dict[str, Any]

ENDED_BADLY = ("failed", "lost")


def task_name(task: Task) -> str:
    return str(task.get("spec", {}).get("name") or task["id"])


def attempt_events(task: Task, before: Task | None) -> list[str]:
    """Lines for attempts that started or ended badly since ``before``."""
    seen = {a["number"]: a.get("status", "running") for a in (before or {}).get("attempts", [])}
    attempts: list[Task] = task.get("attempts", [])
    lines = []
    for index, attempt in enumerate(attempts):
        number, status = attempt["number"], attempt.get("status", "running")
        if number not in seen and index > 0:
            previous = attempts[index - 1].get("status")
            verb = "recovered" if previous == "lost" else "retried"
            lines.append(f"{task_name(task)}: {verb}, attempt {number} on {attempt['worker_id']}")
        if status in ENDED_BADLY and seen.get(number) != status:
            why = attempt.get("reason") or attempt.get("failure") or status
            lines.append(
                f"{task_name(task)}: attempt {number} on {attempt['worker_id']} {status} ({why})"
            )
    return lines


def task_events(task: Task, before: Task | None) -> list[str]:
    lines = attempt_events(task, before)
    status = task["status"]
    if status in ("failed", "cancelled") and (before or {}).get("status") != status:
        lines.append(f"{task_name(task)}: task {status} ({task.get('status_reason') or '-'})")
    return lines


def changes(before: dict[str, Task], after: dict[str, Task]) -> list[str]:
    """Every notable change from ``before`` to ``after`` (tasks keyed by id)."""
    lines: list[str] = []
    for task_id, task in after.items():
        lines.extend(task_events(task, before.get(task_id)))
    return lines
