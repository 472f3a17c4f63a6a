"""The demo with ``--fault-injection``: what it checks and the faults it summarises.

With faults injected a task may rightly fail (its retries ran out, or the
recovery escalated), so the checks are the ones that must hold whatever
the faults: every task ends completed, or failed with a reason, and every
fault that struck an attempt which reported is labelled in its outcome.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from rich.table import Table

from dtf.cli.render import counts_text
from dtf.demo.summary import Check
from dtf.worker.faults import FaultKind, InjectedFault

Task = dict[str, Any]


def attempt_of(tasks: dict[str, Task], fault: InjectedFault) -> Task | None:
    task = tasks.get(fault.task_id)
    attempts = task.get("attempts", []) if task else []
    return attempts[fault.attempt - 1] if fault.attempt <= len(attempts) else None


def is_labelled(tasks: dict[str, Task], fault: InjectedFault) -> bool:
    """An attempt that reported an outcome names the fault in it; a crashed
    agent reports nothing, so its attempt (and any other it ran) is lost."""
    attempt = attempt_of(tasks, fault)
    if attempt is None or attempt.get("status") == "lost":
        return True
    return (attempt.get("outcome") or {}).get("injected_fault") == fault.kind.value


def fault_checks(tasks: dict[str, Task], injected: list[InjectedFault]) -> list[Check]:
    unfinished = [t["id"] for t in tasks.values() if t["status"] not in ("completed", "failed")]
    unexplained = [
        t["id"] for t in tasks.values() if t["status"] == "failed" and not t.get("status_reason")
    ]
    unlabelled = [f"{f.task_id}#{f.attempt}" for f in injected if not is_labelled(tasks, f)]
    return [
        Check(
            f"every task completed or failed with a reason ({', '.join(unfinished + unexplained) or 'all did'})",
            not unfinished and not unexplained,
        ),
        Check(
            f"all {len(injected)} injected faults are labelled in the attempts that reported "
            f"({', '.join(unlabelled) or 'all are'})",
            not unlabelled,
        ),
    ]


def faults_table(tasks: dict[str, Task], injected: list[InjectedFault]) -> Table:
    """Per kind: how many struck, how the attempts were classified, how their tasks ended."""
    by_kind: dict[FaultKind, list[InjectedFault]] = defaultdict(list)
    for fault in injected:
        by_kind[fault.kind].append(fault)
    table = Table(
        "fault", "injected", "attempt classified as", "tasks then", title="injected faults"
    )
    for kind, faults in sorted(by_kind.items()):
        attempts = [attempt_of(tasks, fault) for fault in faults]
        classified = Counter(
            (a.get("failure_type") or a.get("status", "running")) if a else "-" for a in attempts
        )
        ended = Counter(tasks[f.task_id]["status"] for f in faults if f.task_id in tasks)
        table.add_row(
            kind.value, str(len(faults)), counts_text(dict(classified)), counts_text(dict(ended))
        )
    return table


def recovery_line(tasks: dict[str, Task], injected: list[InjectedFault], restarts: int) -> str:
    hit = {fault.task_id for fault in injected if fault.task_id in tasks}
    completed = sum(1 for task_id in hit if tasks[task_id]["status"] == "completed")
    return (
        f"{len(injected)} faults injected into {len(hit)} tasks: {completed} of those tasks "
        f"completed anyway, {len(hit) - completed} failed with a reason; "
        f"{restarts} worker restart{'s' if restarts != 1 else ''}"
    )
