"""Rich tables for the API's tasks, workers, results and status.

Records arrive as the coordinator's JSON, which omits fields left at their
defaults, so every lookup here has a fallback.
"""

from __future__ import annotations

from typing import Any

from rich.table import Column, Table

from dtf.cli.output import age_text, duration_text

Record = dict[str, Any]

STATUS_STYLES = {
    "completed": "green",
    "succeeded": "green",
    "online": "green",
    "failed": "red",
    "lost": "red",
    "offline": "red",
    "cancelled": "yellow",
    "suspect": "yellow",
    "running": "cyan",
    "assigned": "cyan",
}
FAILING_TEST_OUTCOMES = frozenset({"failed", "error"})


def styled(status: str) -> str:
    style = STATUS_STYLES.get(status)
    return f"[{style}]{status}[/{style}]" if style else status


def task_label(task: Record) -> str:
    spec = task.get("spec", {})
    return str(spec.get("name") or spec.get("type", "?"))


def last_attempt(task: Record) -> Record | None:
    attempts: list[Record] = task.get("attempts", [])
    return attempts[-1] if attempts else None


def test_counts(outcome: Record | None) -> dict[str, int]:
    counts: dict[str, int] = {}
    for case in (outcome or {}).get("test_cases", []):
        counts[case["outcome"]] = counts.get(case["outcome"], 0) + 1
    return counts


def failing_tests(outcome: Record | None) -> list[str]:
    cases = (outcome or {}).get("test_cases", [])
    return [c["node_id"] for c in cases if c["outcome"] in FAILING_TEST_OUTCOMES]


def counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {name}" for name, n in sorted(counts.items())) or "none"


def id_column(header: str, ids: list[str]) -> Column:
    """A column that shows ids whole: they are what users copy into the next command."""
    return Column(header, no_wrap=True, min_width=max([len(header), *map(len, ids)]))


def tasks_table(tasks: list[Record], now: float | None = None) -> Table:
    ids = [task["id"] for task in tasks]
    table = Table(
        id_column("id", ids), "name/type", "status", "priority", "attempts", "worker", "age"
    )
    for task in tasks:
        attempt = last_attempt(task)
        table.add_row(
            task["id"],
            task_label(task),
            styled(task["status"]),
            str(task.get("spec", {}).get("priority", 5)),
            str(len(task.get("attempts", []))),
            attempt["worker_id"] if attempt else "-",
            age_text(task.get("submitted_at"), now),
        )
    return table


def attempts_table(task: Record) -> Table:
    table = Table(
        "#", "worker", "ran with", "status", "failure", "reason", "exit", "duration",
        "retry delay", title="attempts",
    )  # fmt: skip
    for attempt in task.get("attempts", []):
        outcome = attempt.get("outcome") or {}
        exit_code = outcome.get("exit_code")
        signal = outcome.get("signal")
        table.add_row(
            str(attempt["number"]),
            attempt["worker_id"],
            params_text(attempt.get("params_patch") or {}),
            styled(attempt.get("status", "running")),
            failure_text(attempt, outcome),
            attempt.get("reason") or "-",
            f"signal {signal}"
            if signal is not None
            else str(exit_code if exit_code is not None else "-"),
            duration_text(outcome.get("duration_s") if outcome else None),
            duration_text(attempt.get("retry_delay_s")),
        )
    return table


def failure_text(attempt: Record, outcome: Record) -> str:
    """The classified failure, marked when dtf's fault injection caused it on purpose."""
    failure = attempt.get("failure_type") or attempt.get("failure") or outcome.get("failure")
    injected = outcome.get("injected_fault")
    if injected:
        return f"{failure or 'ok'} [yellow](injected {injected})[/yellow]"
    return str(failure or "-")


def params_text(params: Record) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "-"


def recovery_lines(task: Record) -> list[str]:
    """One line per failed attempt: what it was, the evidence, what followed and why."""
    lines = []
    for attempt in task.get("attempts", []):
        if not attempt.get("failure_type"):
            continue
        evidence = "; ".join(attempt.get("evidence") or []) or "no evidence"
        step = attempt.get("recovery") or "escalated"
        why = attempt.get("recovery_reason") or task.get("status_reason") or ""
        lines.append(
            f"attempt {attempt['number']}: {attempt['failure_type']} "
            f"(rule {attempt.get('classified_by', '?')}: {evidence}) -> {step}: {why}"
        )
    return lines


def hardware_text(capabilities: Record) -> str:
    declared = set(capabilities.get("declared_hardware", []))
    classes = list(capabilities.get("hardware", ["cpu"]))
    classes += [h for h in capabilities.get("declared_hardware", []) if h not in classes]
    return ", ".join(f"{h} (declared)" if h in declared else h for h in classes)


def gpus_text(capabilities: Record) -> str:
    parts = []
    for gpu in capabilities.get("gpus", []):
        detail = f"{gpu.get('memory_gb', 0):g} GB"
        if gpu.get("compute_capability") is not None:
            detail += f", cc {gpu['compute_capability']:g}"
        marker = " (declared)" if gpu.get("declared") else ""
        parts.append(f"{gpu['model']} ({detail}){marker}")
    return "; ".join(parts) or "-"


def status_with_breaker(worker: Record) -> str:
    """The worker's status, and its circuit breaker when that is not closed."""
    text = styled(worker.get("status", "online"))
    state = (worker.get("breaker") or {}).get("state", "closed")
    return text if state == "closed" else f"{text} [bold red](breaker {state})[/bold red]"


def health_text(worker: Record) -> str:
    """'97', or '62 quarantined' / '100 check failed' in red when the worker takes no work."""
    health = worker.get("health") or {}
    level = f"{health.get('score', 100.0):.0f}"
    if health.get("quarantined"):
        return f"[bold red]{level} quarantined[/bold red]"
    check = health.get("check", "none")
    if check in ("pending", "failed"):
        style = "yellow" if check == "pending" else "bold red"
        return f"[{style}]{level} check {check}[/{style}]"
    return f"[green]{level}[/green]" if float(level) >= health.get("threshold", 70) else level


def health_reason(worker: Record) -> str | None:
    """Why a worker takes no new work, or what weighs on its health; None when nothing does."""
    health = worker.get("health") or {}
    if health.get("quarantined"):
        return str(health.get("quarantine_reason") or "quarantined")
    if health.get("check") == "failed":
        return f"health check failed: {health.get('check_detail') or '?'}"
    if health.get("check") == "pending":
        return f"running its health check: {health.get('check_command')}"
    summary = health.get("summary")
    return str(summary) if summary and summary != "no recent results" else None


def workers_table(workers: list[Record], now: float | None = None) -> Table:
    table = Table(
        "id", "status", "health", "hardware", "slots", "cpu/mem", "gpus", "done/failed",
        "last seen",
    )  # fmt: skip
    for worker in workers:
        caps = worker.get("capabilities", {})
        table.add_row(
            worker["id"],
            status_with_breaker(worker),
            health_text(worker),
            hardware_text(caps),
            f"{len(worker.get('leases', []))}/{worker.get('slots', 0)}",
            f"{caps.get('cpu_count', 1)} cpu, {caps.get('memory_gb', 0.0):.1f} GB",
            gpus_text(caps),
            f"{worker.get('tasks_completed', 0)}/{worker.get('tasks_failed', 0)}",
            age_text(worker.get("last_seen_at"), now),
        )
    return table


def results_table(results: list[Record]) -> Table:
    ids = [result["task_id"] for result in results]
    table = Table(
        id_column("task", ids), "attempt", "worker", "status", "failure", "exit", "duration",
        "tests",
    )  # fmt: skip
    for result in results:
        outcome = result.get("outcome") or {}
        exit_code = outcome.get("exit_code")
        table.add_row(
            result["task_id"],
            str(result.get("attempt", "-")),
            result.get("worker_id", "-"),
            styled(result.get("status", "-")),
            result.get("failure") or "-",
            str(exit_code) if exit_code is not None else "-",
            duration_text(outcome.get("duration_s")),
            counts_text(test_counts(outcome)) if outcome.get("test_cases") else "-",
        )
    return table


def status_table(status: Record) -> Table:
    table = Table("", "", show_header=False, box=None)
    table.add_row("version", str(status.get("version", "?")))
    table.add_row("uptime", duration_text(status.get("uptime_s")))
    table.add_row("data dir", str(status.get("data_dir", "?")))
    table.add_row("journal seq", str(status.get("journal_seq", "?")))
    table.add_row("tasks", counts_text(status.get("tasks", {})))
    table.add_row("workers", counts_text(status.get("workers", {})))
    for breaker in status.get("breakers", []):
        table.add_row("breaker", f"[bold red]{breaker['name']} {breaker['state']}[/bold red]")
    for worker in status.get("out_of_service", []):
        table.add_row(
            "no new work", f"[bold red]{worker['worker_id']}[/bold red]: {worker['reason']}"
        )
    return table
