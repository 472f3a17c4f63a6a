"""Build a ``RunReport`` for one run id from the results file (read only).

Everything is selected by the ``run_id`` label the tasks carry: terminal
tasks from ``tasks``, every finished attempt (reruns included) from
``attempts`` with its metric samples and test cases, statistics through
``dtf.results.queries.aggregate``, and each of the run's metric series with
its history up to this run through ``dtf.reports.history``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import duckdb

from dtf.analysis.units import metric_direction
from dtf.errors import NotFound
from dtf.reports.history import run_histories
from dtf.reports.model import (
    AttemptResult,
    FailureBreakdown,
    FailureCount,
    MetricSamples,
    MetricStats,
    RecoveryCount,
    RunReport,
    RunSummary,
    TaskResult,
    TestCaseResult,
)
from dtf.results.queries import Filters, aggregate

Row = dict[str, Any]
AttemptKey = tuple[str, int]
STAT_DIMENSIONS = ("metric", "unit", "model", "hardware", "batch_size", "precision")
SAMPLE_DIMENSIONS = ("name", "unit", "model", "hardware_class", "batch_size", "precision")

TASKS_SQL = """SELECT task_id, task_type, name, status, status_reason, model, commit,
    submitted_at, finished_at FROM tasks WHERE run_id = ? ORDER BY task_seq, task_id"""
ATTEMPTS_SQL = """SELECT task_id, attempt, worker_id, status, hardware_class, device_model,
    batch_size, precision, failure, failure_type, reason, recovery, duration_s, exit_code,
    finished_at, injected_fault, commit, model
    FROM attempts WHERE run_id = ? ORDER BY task_seq, task_id, attempt"""
SAMPLES_SQL = """SELECT task_id, attempt, name, unit, model, hardware_class, batch_size,
    precision, value FROM metric_samples WHERE run_id = ?
    ORDER BY task_seq, task_id, attempt, name, sample_index"""
CASES_SQL = """SELECT task_id, attempt, node_id, outcome, duration_s, message
    FROM test_cases WHERE run_id = ? ORDER BY task_id, attempt, rowid"""


def build_report(cursor: duckdb.DuckDBPyConnection, run_id: str) -> RunReport:
    """The report of ``run_id``; ``NotFound`` when the file holds nothing of that run."""
    tasks = fetch_rows(cursor, TASKS_SQL, run_id)
    attempts = fetch_rows(cursor, ATTEMPTS_SQL, run_id)
    if not tasks and not attempts:
        raise NotFound(
            f"no results of run {run_id!r} in the results file; list the runs with "
            "`duckdb -readonly FILE 'SELECT * FROM runs'` or check the task's run_id label"
        )
    samples = fetch_rows(cursor, SAMPLES_SQL, run_id)
    cases = fetch_rows(cursor, CASES_SQL, run_id)
    found = run_histories(cursor, run_id)
    return RunReport(
        run_id=run_id,
        summary=run_summary(run_id, tasks, attempts),
        metrics=tuple(metric_stats(cursor, run_id)),
        samples=tuple(metric_samples(samples)),
        failures=failure_breakdown(attempts),
        tasks=tuple(task_results(tasks, attempts, samples, cases)),
        histories=tuple(found.histories),
        regressions=tuple(found.regressions),
        series_checked=found.series_checked,
    )


def fetch_rows(cursor: duckdb.DuckDBPyConnection, sql: str, run_id: str) -> list[Row]:
    result = cursor.execute(sql, [run_id])
    names = [column[0] for column in result.description or ()]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def run_summary(run_id: str, tasks: list[Row], attempts: list[Row]) -> RunSummary:
    finished_task_ids = {t["task_id"] for t in tasks}
    attempted = {a["task_id"] for a in attempts}
    submitted = [t["submitted_at"] for t in tasks if t["submitted_at"] is not None]
    finished = [r["finished_at"] for r in (*tasks, *attempts) if r["finished_at"] is not None]
    first, last = (min(submitted) if submitted else None), (max(finished) if finished else None)
    return RunSummary(
        run_id=run_id,
        commits=distinct(r["commit"] for r in (*tasks, *attempts)),
        tasks=len(finished_task_ids | attempted),
        tasks_by_status=counts(t["status"] for t in tasks),
        tasks_by_type=counts(t["task_type"] for t in tasks),
        unfinished=len(attempted - finished_task_ids),
        attempts=len(attempts),
        attempts_by_status=counts(a["status"] for a in attempts),
        retries=len(attempts) - len(attempted),
        first_submitted_at=first,
        last_finished_at=last,
        duration_s=last - first if first is not None and last is not None else None,
        workers=distinct(a["worker_id"] for a in attempts),
        hardware_classes=distinct(a["hardware_class"] for a in attempts),
    )


def distinct(values: Any) -> tuple[str, ...]:
    return tuple(sorted({str(v) for v in values if v is not None}))


def counts(values: Any) -> dict[str, int]:
    return dict(sorted(Counter(str(v) for v in values if v is not None).items()))


def metric_stats(cursor: duckdb.DuckDBPyConnection, run_id: str) -> list[MetricStats]:
    groups = aggregate(cursor, STAT_DIMENSIONS, Filters(run_id=run_id))
    return [
        MetricStats(
            metric=g["name"],
            unit=g["unit"] or "",
            direction=metric_direction(g["name"]),
            model=g["model"] or "",
            hardware_class=g["hardware_class"] or "",
            batch_size=g["batch_size"],
            precision=g["precision"],
            count=g["count"],
            mean=g["mean"],
            median=g["median"],
            p90=g["p90"],
            p95=g["p95"],
            p99=g["p99"],
            stddev=g["stddev"],
            min=g["min"],
            max=g["max"],
        )
        for g in groups
    ]


def metric_samples(samples: list[Row]) -> list[MetricSamples]:
    grouped: dict[tuple[Any, ...], list[float]] = defaultdict(list)
    for sample in samples:
        grouped[tuple(sample[name] for name in SAMPLE_DIMENSIONS)].append(sample["value"])
    return [
        MetricSamples(
            metric=name,
            unit=unit or "",
            model=model or "",
            hardware_class=hardware or "",
            batch_size=batch_size,
            precision=precision,
            values=tuple(values),
        )
        for (name, unit, model, hardware, batch_size, precision), values in sorted(
            grouped.items(), key=lambda item: repr(item[0])
        )
    ]


def failure_breakdown(attempts: list[Row]) -> FailureBreakdown:
    failed = [a for a in attempts if a["status"] != "succeeded"]
    by_type = Counter(
        (a["failure_type"] or a["failure"] or "unclassified", a["hardware_class"] or "")
        for a in failed
    )
    recoveries = Counter(a["recovery"] for a in failed if a["recovery"])
    return FailureBreakdown(
        failed_attempts=len(failed),
        by_type=tuple(
            FailureCount(failure_type, hardware, count)
            for (failure_type, hardware), count in sorted(by_type.items())
        ),
        recoveries=tuple(
            RecoveryCount(strategy, count) for strategy, count in sorted(recoveries.items())
        ),
    )


def task_results(
    tasks: list[Row], attempts: list[Row], samples: list[Row], cases: list[Row]
) -> list[TaskResult]:
    metrics = attempt_metrics(samples)
    tests = attempt_cases(cases)
    by_task: dict[str, list[AttemptResult]] = defaultdict(list)
    for row in attempts:
        key = (row["task_id"], row["attempt"])
        by_task[row["task_id"]].append(attempt_result(row, metrics[key], tests[key]))
    known = {t["task_id"]: t for t in tasks}
    order = list(dict.fromkeys([*known, *by_task]))
    return [task_result(task_id, known.get(task_id), by_task[task_id]) for task_id in order]


def attempt_metrics(samples: list[Row]) -> defaultdict[AttemptKey, dict[str, tuple[float, ...]]]:
    values: defaultdict[AttemptKey, dict[str, list[float]]] = defaultdict(dict)
    for sample in samples:
        key = (sample["task_id"], sample["attempt"])
        values[key].setdefault(sample["name"], []).append(sample["value"])
    metrics: defaultdict[AttemptKey, dict[str, tuple[float, ...]]] = defaultdict(dict)
    for key, named in values.items():
        metrics[key] = {name: tuple(v) for name, v in named.items()}
    return metrics


def attempt_cases(cases: list[Row]) -> defaultdict[AttemptKey, list[TestCaseResult]]:
    grouped: defaultdict[AttemptKey, list[TestCaseResult]] = defaultdict(list)
    for case in cases:
        grouped[(case["task_id"], case["attempt"])].append(
            TestCaseResult(case["node_id"], case["outcome"], case["duration_s"], case["message"])
        )
    return grouped


def attempt_result(
    row: Row, metrics: dict[str, tuple[float, ...]], cases: list[TestCaseResult]
) -> AttemptResult:
    return AttemptResult(
        attempt=row["attempt"],
        worker_id=row["worker_id"],
        status=row["status"],
        hardware_class=row["hardware_class"],
        device_model=row["device_model"],
        batch_size=row["batch_size"],
        precision=row["precision"],
        failure=row["failure"],
        failure_type=row["failure_type"],
        reason=row["reason"],
        recovery=row["recovery"],
        duration_s=row["duration_s"],
        exit_code=row["exit_code"],
        finished_at=row["finished_at"],
        injected_fault=row["injected_fault"],
        metrics=metrics,
        test_cases=tuple(cases),
    )


def task_result(task_id: str, task: Row | None, attempts: list[AttemptResult]) -> TaskResult:
    if task is None:
        return TaskResult(task_id, task_id, "unknown", "unfinished", None, None, tuple(attempts))
    return TaskResult(
        task_id=task_id,
        name=task["name"] or task["model"] or task_id,
        task_type=task["task_type"] or "unknown",
        status=task["status"],
        status_reason=task["status_reason"],
        model=task["model"],
        attempts=tuple(attempts),
    )
