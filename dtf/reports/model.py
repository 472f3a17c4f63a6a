"""What a run report says, as plain structs every renderer reads.

A ``RunReport`` is built once per run id from the results file
(``dtf.reports.build.build_report``) and rendered to HTML, Markdown, JSON or
JUnit XML without touching DuckDB again. Numbers stay numbers (no rounding,
no units folded into text), so the JSON rendering is the report itself.
"""

from __future__ import annotations

from msgspec import Struct

from dtf.analysis.regressions import Alert


class RunSummary(Struct, frozen=True):
    """Headline counts. ``retries`` are attempts beyond each task's first; ``unfinished``
    counts tasks with finished attempts that were not terminal when the file was read."""

    run_id: str
    commits: tuple[str, ...]
    tasks: int
    tasks_by_status: dict[str, int]
    tasks_by_type: dict[str, int]
    unfinished: int
    attempts: int
    attempts_by_status: dict[str, int]
    retries: int
    first_submitted_at: float | None
    last_finished_at: float | None
    duration_s: float | None
    workers: tuple[str, ...]
    hardware_classes: tuple[str, ...]


class MetricStats(Struct, frozen=True):
    """Statistics of one metric's samples at one (model, hardware class, batch size, precision)."""

    metric: str
    unit: str
    direction: str
    model: str
    hardware_class: str
    batch_size: int | None
    precision: str | None
    count: int
    mean: float
    median: float
    p90: float
    p95: float
    p99: float
    stddev: float | None
    min: float
    max: float


class MetricSamples(Struct, frozen=True):
    """The raw values behind one ``MetricStats`` row, for distributions."""

    metric: str
    unit: str
    model: str
    hardware_class: str
    batch_size: int | None
    precision: str | None
    values: tuple[float, ...]


class FailureCount(Struct, frozen=True):
    failure_type: str
    hardware_class: str
    count: int


class RecoveryCount(Struct, frozen=True):
    """How often recovery chose ``strategy`` after a failed attempt."""

    strategy: str
    count: int


class FailureBreakdown(Struct, frozen=True):
    failed_attempts: int
    by_type: tuple[FailureCount, ...]
    recoveries: tuple[RecoveryCount, ...]


class TestCaseResult(Struct, frozen=True):
    __test__ = False

    node_id: str
    outcome: str
    duration_s: float | None
    message: str | None


class AttemptResult(Struct, frozen=True):
    """One try of a task: where it ran, how it ended, what it measured and which tests ran."""

    attempt: int
    worker_id: str | None
    status: str
    hardware_class: str | None
    device_model: str | None
    batch_size: int | None
    precision: str | None
    failure: str | None
    failure_type: str | None
    reason: str | None
    recovery: str | None
    duration_s: float | None
    exit_code: int | None
    finished_at: float | None
    injected_fault: str | None
    metrics: dict[str, tuple[float, ...]]
    test_cases: tuple[TestCaseResult, ...]


class TaskResult(Struct, frozen=True):
    """A task of the run with every attempt, oldest first; ``status`` is ``unfinished``
    for a task whose attempts are in the file but which had not ended yet."""

    task_id: str
    name: str
    task_type: str
    status: str
    status_reason: str | None
    model: str | None
    attempts: tuple[AttemptResult, ...]


class SeriesPoint(Struct, frozen=True):
    """One sample of a series' history; ``label`` is its commit, else its run id."""

    label: str
    recorded_at: float
    value: float
    in_run: bool


class SeriesHistory(Struct, frozen=True):
    """A metric series (equal dimensions) up to and including this run, with its alerts;
    each alert's ``change_index`` is a position in ``points``."""

    metric: str
    unit: str
    direction: str
    model: str
    hardware_class: str
    device_model: str
    batch_size: int | None
    precision: str | None
    config: str
    points: tuple[SeriesPoint, ...]
    alerts: tuple[Alert, ...]


class RegressionFinding(Struct, frozen=True):
    """An alert of one of the run's series: ``series`` indexes ``RunReport.histories``;
    ``introduced_by_run`` when the first point after the change is one of this run's."""

    series: int
    alert: Alert
    introduced_by_run: bool


class RunReport(Struct, frozen=True):
    run_id: str
    summary: RunSummary
    metrics: tuple[MetricStats, ...]
    samples: tuple[MetricSamples, ...]
    failures: FailureBreakdown
    tasks: tuple[TaskResult, ...]
    histories: tuple[SeriesHistory, ...]
    regressions: tuple[RegressionFinding, ...]
    series_checked: int
