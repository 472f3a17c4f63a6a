"""What the demo checks at the end, and the summary it prints.

``checks`` is a pure function of the final tasks: the demo exits 0 only when
every check holds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console, RenderableType
from rich.table import Table

from dtf.cli.output import duration_text
from dtf.cli.render import counts_text, failing_tests, styled, test_counts
from dtf.demo.workload import Workload

Task = dict[str, Any]

BENCHMARK_PARAMS = frozenset({"batch_size", "size", "repeats"})


@dataclass(frozen=True)
class Check:
    description: str
    passed: bool


def final_outcome(task: Task) -> dict[str, Any]:
    attempts = task.get("attempts", [])
    return (attempts[-1].get("outcome") or {}) if attempts else {}


def flaky_check(task: Task) -> Check:
    attempts = task.get("attempts", [])
    passed = (
        task["status"] == "completed"
        and len(attempts) == 2
        and attempts[0].get("failure") == "exit_nonzero"
    )
    shown = ", ".join(f"{a.get('status', 'running')}" for a in attempts)
    return Check(f"flaky task failed once, then completed on attempt 2 ({shown})", passed)


def recovery_check(task: Task, victim: str | None) -> Check:
    attempts = task.get("attempts", [])
    lost_on_victim = any(a["worker_id"] == victim and a.get("status") == "lost" for a in attempts)
    final_worker = attempts[-1]["worker_id"] if attempts else None
    passed = task["status"] == "completed" and lost_on_victim and final_worker != victim
    return Check(f"long task lost with killed worker {victim}, completed on {final_worker}", passed)


def pytest_checks(tasks: dict[str, Task], workload: Workload) -> list[Check]:
    passing_id, failing_id = workload.test_ids
    passing = final_outcome(tasks[passing_id])
    failing = final_outcome(tasks[failing_id])
    return [
        Check(
            "test_sample.py: tests ran and all passed",
            bool(passing.get("test_cases")) and not failing_tests(passing),
        ),
        Check("test_with_failure.py: its failing tests are reported", bool(failing_tests(failing))),
    ]


def checks(tasks: dict[str, Task], workload: Workload, victim: str | None) -> list[Check]:
    statuses = Counter(task["status"] for task in tasks.values())
    benchmarks = [tasks[task_id] for task_id in workload.benchmark_ids.values()]
    return [
        Check(
            f"all {len(tasks)} tasks completed ({counts_text(dict(statuses))})",
            statuses["completed"] == len(tasks),
        ),
        flaky_check(tasks[workload.flaky["id"]]),
        recovery_check(tasks[workload.long_task_id], victim),
        *pytest_checks(tasks, workload),
        Check(
            "every benchmark reported metrics",
            all(final_outcome(task).get("metrics") for task in benchmarks),
        ),
    ]


def history_text(task: Task) -> str:
    """``local-2 (lost) -> local-3``: where each attempt ran and how it ended if badly."""
    parts = []
    for attempt in task.get("attempts", []):
        status = attempt.get("status", "running")
        parts.append(attempt["worker_id"] + ("" if status == "succeeded" else f" ({status})"))
    return " -> ".join(parts) or "-"


def tasks_table(tasks: list[Task]) -> Table:
    table = Table("task", "type", "status", "attempts", "ran on", "duration", title="tasks")
    for task in tasks:
        table.add_row(
            task.get("spec", {}).get("name", task["id"]),
            task.get("spec", {}).get("type", "?"),
            styled(task["status"]),
            str(len(task.get("attempts", []))),
            history_text(task),
            duration_text(final_outcome(task).get("duration_s")),
        )
    return table


def workers_table(tasks: list[Task]) -> Table:
    per_worker: dict[str, Counter[str]] = {}
    for task in tasks:
        for attempt in task.get("attempts", []):
            counter = per_worker.setdefault(attempt["worker_id"], Counter())
            counter[attempt.get("status", "running")] += 1
    table = Table("worker", "attempts", "by outcome", title="which worker ran what")
    for worker_id, counter in sorted(per_worker.items()):
        table.add_row(worker_id, str(sum(counter.values())), counts_text(dict(counter)))
    return table


def benchmark_table(tasks: dict[str, Task], workload: Workload) -> Table:
    metrics = {
        size: final_outcome(tasks[task_id]).get("metrics", {})
        for size, task_id in workload.benchmark_ids.items()
    }
    found = {name for values in metrics.values() for name in values} - BENCHMARK_PARAMS
    names = sorted(found, key=lambda name: (not name.startswith("latency"), name))
    table = Table(
        "batch size",
        *names,
        title="matmul benchmark",
        caption="run alongside the other tasks on this machine's shared cores: illustrative figures",
    )
    for size, values in metrics.items():
        table.add_row(str(size), *(_metric_text(values.get(name)) for name in names))
    return table


def _metric_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def tests_table(tasks: dict[str, Task], workload: Workload) -> Table:
    table = Table("test task", "results", "failing tests", title="pytest")
    for task_id in workload.test_ids:
        outcome = final_outcome(tasks[task_id])
        table.add_row(
            tasks[task_id].get("spec", {}).get("name", task_id),
            counts_text(test_counts(outcome)),
            "\n".join(failing_tests(outcome)) or "-",
        )
    return table


def attempts_line(tasks: list[Task]) -> str:
    attempts = [a for task in tasks for a in task.get("attempts", [])]
    failures = Counter(a.get("failure") for a in attempts if a.get("failure"))
    retries = len(attempts) - sum(1 for task in tasks if task.get("attempts"))
    return (
        f"{len(attempts)} attempts for {len(tasks)} tasks: {retries} retries "
        f"(attempt failures: {counts_text(dict(failures))})"
    )


def print_summary(
    console: Console,
    tasks: dict[str, Task],
    workload: Workload,
    results: list[Check],
    where: dict[str, str],
    extra: Sequence[RenderableType] = (),
) -> None:
    """The summary; ``extra`` (such as the injected faults) goes after the tables."""
    ordered = [tasks[task_id] for task_id in workload.task_ids]
    console.rule("demo summary")
    statuses = Counter(task["status"] for task in ordered)
    console.print(f"tasks by status: {counts_text(dict(statuses))}")
    console.print(attempts_line(ordered))
    for table in (
        tasks_table(ordered),
        workers_table(ordered),
        benchmark_table(tasks, workload),
        tests_table(tasks, workload),
        *extra,
    ):
        console.print(table)
    for name, location in where.items():
        console.print(f"[bold]{name}[/bold]: {location}", highlight=False)
    for check in results:
        mark = "[green]ok[/green]  " if check.passed else "[red]FAIL[/red]"
        console.print(f"{mark} {check.description}")
