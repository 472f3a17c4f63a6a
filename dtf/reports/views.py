"""Readings of a ``RunReport`` that more than one renderer needs.

Test results follow one rule everywhere: a task's last attempt counts. Its
test cases are the results; a failure of the same test in an earlier attempt
is kept beside it as a rerun (the test failed again at the end) or a flake
(it passed at the end). A last attempt that failed without running any test
(a lost worker, a crash before pytest reported) is one error of the task.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from dtf.reports.model import AttemptResult, MetricStats, RunReport, TaskResult, TestCaseResult

TERMINAL_CODES = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
FAILING_OUTCOMES = frozenset({"failed", "error"})
TIME_UNITS = frozenset({"ms", "us", "s"})
OUTCOME_ORDER = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")


@dataclass(frozen=True)
class EarlierResult:
    attempt: int
    case: TestCaseResult


@dataclass(frozen=True)
class CaseHistory:
    """A test's result in the last attempt, with its failures in earlier attempts."""

    node_id: str
    final: TestCaseResult
    earlier: tuple[EarlierResult, ...]

    @property
    def is_failing(self) -> bool:
        return self.final.outcome in FAILING_OUTCOMES

    @property
    def is_flaky(self) -> bool:
        return bool(self.earlier) and not self.is_failing


def last_attempt(task: TaskResult) -> AttemptResult | None:
    return task.attempts[-1] if task.attempts else None


def case_histories(task: TaskResult) -> list[CaseHistory]:
    last = last_attempt(task)
    if last is None:
        return []
    earlier: dict[str, list[EarlierResult]] = {}
    for attempt in task.attempts[:-1]:
        for case in attempt.test_cases:
            if case.outcome in FAILING_OUTCOMES:
                earlier.setdefault(case.node_id, []).append(EarlierResult(attempt.attempt, case))
    return [
        CaseHistory(case.node_id, case, tuple(earlier.get(case.node_id, ())))
        for case in last.test_cases
    ]


def is_broken_attempt(attempt: AttemptResult) -> bool:
    """An attempt that failed without any test result to show for it."""
    return attempt.status != "succeeded" and not attempt.test_cases


def failure_text(attempt: AttemptResult) -> str:
    kind = attempt.failure_type or attempt.failure or attempt.status
    return f"{kind}: {attempt.reason}" if attempt.reason else kind


def test_tasks(report: RunReport) -> list[TaskResult]:
    return [t for t in report.tasks if t.task_type == "test"]


def outcome_counts(task: TaskResult) -> Counter[str]:
    counts = Counter(history.final.outcome for history in case_histories(task))
    last = last_attempt(task)
    if last is not None and is_broken_attempt(last):
        counts["error"] += 1
    return counts


def test_totals(report: RunReport) -> Counter[str]:
    totals: Counter[str] = Counter()
    for task in test_tasks(report):
        totals.update(outcome_counts(task))
    return totals


def failing_tests(report: RunReport) -> list[tuple[TaskResult, CaseHistory]]:
    return [
        (task, history)
        for task in test_tasks(report)
        for history in case_histories(task)
        if history.is_failing
    ]


def is_latency(stats: MetricStats) -> bool:
    return stats.direction == "lower_is_better" and stats.unit in TIME_UNITS


def is_throughput(stats: MetricStats) -> bool:
    return stats.direction == "higher_is_better"


def number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}"


def percent(value: float) -> str:
    return f"{value * 100:+.1f}%"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m {rest:02.0f}s"


def series_name(labels: dict[str, str], metric: str) -> str:
    """``latency_ms · matmul · cpu · bs 8``: what a reader needs to find the series."""
    parts = [metric, labels.get("model", ""), labels.get("hardware_class", "")]
    if labels.get("batch_size"):
        parts.append(f"bs {labels['batch_size']}")
    if labels.get("precision"):
        parts.append(labels["precision"])
    return " · ".join(part for part in parts if part)


def plain(text: str) -> str:
    """``text`` without terminal colour codes (pytest colours its failure messages)."""
    return TERMINAL_CODES.sub("", text)
