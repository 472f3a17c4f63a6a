"""The run report as a compact GitHub-flavoured Markdown summary for CI.

Headline counts, a table of the key metrics (median and spread per model,
hardware and batch size), the regressions found in the run's series, the
failing tests and the failures by type. Long tables are cut at
``MAX_ROWS`` with a line saying how many rows the JSON or HTML report has.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from dtf.reports.model import RunReport, RunSummary
from dtf.reports.views import (
    OUTCOME_ORDER,
    case_histories,
    duration,
    failing_tests,
    failure_text,
    is_broken_attempt,
    last_attempt,
    number,
    percent,
    plain,
    series_name,
    test_tasks,
    test_totals,
)

MAX_ROWS = 25
MESSAGE_CHARS = 120


def render_markdown(report: RunReport) -> str:
    sections = [
        headline(report.summary),
        metrics_section(report),
        regressions_section(report),
        tests_section(report),
        failures_section(report),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def headline(summary: RunSummary) -> str:
    statuses = ", ".join(f"{count} {status}" for status, count in summary.tasks_by_status.items())
    facts = [
        f"**{summary.tasks} tasks** ({statuses or 'none finished'})",
        f"{summary.attempts} attempts ({summary.retries} retries)",
        f"{duration(summary.duration_s)}",
    ]
    if summary.unfinished:
        facts.append(f"{summary.unfinished} unfinished")
    where = [
        f"commit {', '.join(code(c) for c in summary.commits) or '-'}",
        f"workers {', '.join(summary.workers) or '-'}",
        f"hardware {', '.join(summary.hardware_classes) or '-'}",
    ]
    return f"## dtf run {code(summary.run_id)}\n\n" + " · ".join(facts) + "  \n" + " · ".join(where)


def metrics_section(report: RunReport) -> str:
    rows = [
        [
            s.metric,
            s.model,
            s.hardware_class,
            "-" if s.batch_size is None else str(s.batch_size),
            s.precision or "-",
            str(s.count),
            number(s.median),
            number(s.p90),
            number(s.min),
            number(s.max),
            s.unit,
        ]
        for s in report.metrics
    ]
    header = ["metric", "model", "hardware", "batch", "precision", "n", "median", "p90"]
    return section("Metrics", table([*header, "min", "max", "unit"], rows))


def regressions_section(report: RunReport) -> str:
    if not report.regressions:
        return f"### Regressions\n\nNone in the run's {report.series_checked} series."
    rows = []
    for finding in report.regressions:
        alert = finding.alert
        rows.append(
            [
                series_name(dict(alert.labels), alert.metric),
                f"{alert.kind}" + ("" if finding.introduced_by_run else " (earlier)"),
                percent(alert.relative_change),
                f"{number(alert.before_median)} → {number(alert.after_median)} {alert.unit}",
                f"{code(alert.last_good_key)} → {code(alert.first_bad_key)}",
                f"{alert.q_value:.2g}",
            ]
        )
    header = ["series", "kind", "change", "median", "between", "q"]
    return section("Regressions", table(header, rows))


def tests_section(report: RunReport) -> str:
    if not test_tasks(report):
        return ""
    rows = [
        [code(history.node_id), task.name, history.final.outcome, message(history.final.message)]
        for task, history in failing_tests(report)
    ]
    rows += [
        [f"(attempt {last.attempt} ran no test)", task.name, "error", message(failure_text(last))]
        for task in test_tasks(report)
        if (last := last_attempt(task)) is not None and is_broken_attempt(last)
    ]
    summary = tests_line(report)
    if not rows:
        return f"### Tests\n\n{summary}"
    return section("Tests", summary + "\n\n" + table(["test", "task", "outcome", "message"], rows))


def tests_line(report: RunReport) -> str:
    totals = test_totals(report)
    counted = ", ".join(f"{totals[o]} {o}" for o in OUTCOME_ORDER if totals[o])
    flaky = sum(h.is_flaky for task in test_tasks(report) for h in case_histories(task))
    tail = f"; {flaky} passed only on a rerun" if flaky else ""
    return f"{counted or 'no test results'}{tail}"


def failures_section(report: RunReport) -> str:
    failures = report.failures
    if not failures.failed_attempts:
        return ""
    rows = [[f.failure_type, f.hardware_class, str(f.count)] for f in failures.by_type]
    text = section("Failures by type", table(["failure type", "hardware", "attempts"], rows))
    if failures.recoveries:
        taken = ", ".join(f"{r.strategy} ({r.count})" for r in failures.recoveries)
        text += f"\n\nRecovery: {taken}"
    return text


def section(title: str, body: str) -> str:
    return f"### {title}\n\n{body}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [row_line(header), row_line(["---"] * len(header))]
    lines += [row_line(row) for row in rows[:MAX_ROWS]]
    if len(rows) > MAX_ROWS:
        lines.append(f"\n{len(rows) - MAX_ROWS} more rows in the JSON or HTML report.")
    return "\n".join(lines)


def row_line(cells: Iterable[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in cells) + " |"


def code(text: str) -> str:
    return f"`{text}`" if text else "-"


def message(text: str | None) -> str:
    if not text:
        return ""
    first = plain(text).strip().splitlines()[0] if text.strip() else ""
    short = first if len(first) <= MESSAGE_CHARS else first[: MESSAGE_CHARS - 1] + "…"
    return short.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
