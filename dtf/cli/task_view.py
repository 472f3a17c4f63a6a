"""``dtf task show``: one task in full, and the one-line results ``dtf submit --wait`` prints."""

from __future__ import annotations

import json

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from dtf.cli.output import clock_text, duration_text
from dtf.cli.render import (
    Record,
    attempts_table,
    counts_text,
    failing_tests,
    last_attempt,
    recovery_lines,
    styled,
    task_label,
    test_counts,
)


def spec_summary(spec: Record) -> str:
    """What the task runs, in one line: the command, the test file or the entry point."""
    config = spec.get("config", {})
    kind = spec.get("type", "?")
    if kind == "command":
        command = config.get("command", "")
        return command if isinstance(command, str) else " ".join(command)
    if kind == "test":
        return " ".join([config.get("path", "?"), *config.get("args", [])])
    if kind == "benchmark":
        params = json.dumps(config.get("params", {}), sort_keys=True)
        return f"{config.get('entry_point', '?')} {params}"
    return json.dumps(config, sort_keys=True)


def last_outcome(task: Record) -> Record | None:
    """The outcome of the latest attempt that has one."""
    for attempt in reversed(task.get("attempts", [])):
        if attempt.get("outcome"):
            outcome: Record = attempt["outcome"]
            return outcome
    return None


def header_table(task: Record) -> Table:
    spec = task.get("spec", {})
    table = Table("", "", show_header=False, box=None)
    table.add_row("id", task["id"])
    table.add_row("name/type", f"{task_label(task)} ({spec.get('type', '?')})")
    table.add_row("runs", Text(spec_summary(spec)))
    table.add_row("status", styled(task["status"]))
    if task.get("status_reason") and task["status_reason"] != task["status"]:
        table.add_row("reason", Text(task["status_reason"]))
    waiting = task.get("waiting")
    if waiting:
        table.add_row("waiting", Text(waiting.get("summary", "")))
    table.add_row("priority", str(spec.get("priority", 5)))
    if spec.get("dependencies"):
        table.add_row("depends on", ", ".join(spec["dependencies"]))
    if spec.get("requirements"):
        table.add_row("requires", json.dumps(spec["requirements"], sort_keys=True))
    if spec.get("labels"):
        table.add_row("labels", ", ".join(f"{k}={v}" for k, v in sorted(spec["labels"].items())))
    table.add_row("submitted", clock_text(task.get("submitted_at")))
    table.add_row("finished", clock_text(task.get("finished_at")))
    return table


def outcome_parts(task: Record) -> list[RenderableType]:
    parts: list[RenderableType] = []
    outcome = last_outcome(task)
    if outcome and outcome.get("test_cases"):
        line = f"tests: {counts_text(test_counts(outcome))}"
        failing = failing_tests(outcome)
        parts.append(Text(line + ("\nfailing: " + ", ".join(failing) if failing else "")))
    if outcome and outcome.get("metrics"):
        metrics = Table("metric", "value", title="metrics")
        for name, value in sorted(outcome["metrics"].items()):
            metrics.add_row(name, json.dumps(value))
        parts.append(metrics)
    failed = [a for a in task.get("attempts", []) if a.get("status") in ("failed", "lost")]
    tail = ((failed[-1].get("outcome") or {}).get("stderr_tail") if failed else None) or ""
    if tail.strip():
        title = f"stderr of attempt {failed[-1]['number']} (last failed)"
        parts.append(Panel(Text(tail.rstrip()), title=title, title_align="left"))
    return parts


def checkpoint_text(checkpoint: Record) -> str:
    """``"step 7 (json, 120 B, 3f2a9c01d4e5)"``."""
    step = checkpoint.get("step")
    where = f"step {step}" if step is not None else "a checkpoint"
    return f"{where} ({checkpoint['kind']}, {checkpoint['size']} B, {checkpoint['digest'][:12]})"


def checkpoint_lines(task: Record) -> list[str]:
    """Per attempt: what it resumed from and what it saved."""
    lines = []
    for attempt in task.get("attempts", []):
        number = attempt["number"]
        if attempt.get("resumed_from"):
            resumed = attempt["resumed_from"]
            lines.append(
                f"attempt {number} resumed from {checkpoint_text(resumed)} "
                f"saved by attempt {resumed['attempt']}"
            )
        if attempt.get("checkpoints_saved"):
            last = checkpoint_text(attempt["last_checkpoint"])
            lines.append(f"attempt {number} saved {attempt['checkpoints_saved']}, last {last}")
    return lines


def print_task(console: Console, task: Record) -> None:
    parts: list[RenderableType] = [header_table(task)]
    if task.get("attempts"):
        parts.append(attempts_table(task))
        history = recovery_lines(task)
        if history:
            parts.append(Panel(Text("\n".join(history)), title="recovery", title_align="left"))
        saved = checkpoint_lines(task)
        if saved:
            parts.append(Panel(Text("\n".join(saved)), title="checkpoints", title_align="left"))
    parts.extend(outcome_parts(task))
    console.print(Group(*parts))


def task_problem(task: Record) -> str | None:
    """Why a finished task counts as a failure for ``--wait``, or None when it succeeded."""
    if task["status"] in ("failed", "cancelled"):
        return f"{task['status']}: {task.get('status_reason') or 'no reason given'}"
    failing = failing_tests(last_outcome(task))
    if failing:
        return f"{len(failing)} failing tests: {', '.join(failing)}"
    return None


def result_line(task: Record) -> str:
    """``"<id> completed on local-1 (attempt 2, 1.2s); tests: 3 passed"``."""
    attempt = last_attempt(task)
    outcome = last_outcome(task) or {}
    line = f"{task['id']} {task['status']}"
    if attempt:
        where = f"attempt {attempt['number']}, {duration_text(outcome.get('duration_s'))}"
        line += f" on {attempt['worker_id']} ({where})"
    if outcome.get("test_cases"):
        line += f"; tests: {counts_text(test_counts(outcome))}"
    if task["status"] != "completed" and task.get("status_reason"):
        line += f"; {task['status_reason']}"
    failing = failing_tests(outcome)
    if failing:
        line += f"; failing: {', '.join(failing)}"
    return line


def poll_summary(counts: dict[str, int]) -> str:
    """'waiting for 3 tasks: 1 pending, 2 running', from the count of each status."""
    return f"waiting for {sum(counts.values())} tasks: {counts_text(counts)}"


def any_problems(tasks: list[Record]) -> list[tuple[str, str]]:
    return [(t["id"], p) for t in tasks if (p := task_problem(t)) is not None]
