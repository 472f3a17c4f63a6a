"""The run report as one self-contained HTML page with Plotly charts.

plotly.js is inlined once, with the first chart, so the file opens offline
and stays a single file to attach to a CI run. Every text from the results
file is escaped. Sections: a summary, regressions (with the series' history
and the change marked), performance (latency by batch size, throughput,
distributions, the metrics table), tests, failures and every task's attempts.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import plotly.graph_objects as go
import plotly.io as pio

from dtf.reports import charts
from dtf.reports.model import RunReport
from dtf.reports.views import (
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

PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       color: #1f2328; background: #f6f8fa; }
header { background: #24292f; color: #fff; padding: 20px 32px; }
header h1 { margin: 0 0 4px; font-size: 22px; font-weight: 600; }
header p { margin: 0; color: #c9d1d9; font-size: 14px; }
main { max-width: 1200px; margin: 0 auto; padding: 16px 32px 48px; }
section { background: #fff; border: 1px solid #d0d7de; border-radius: 8px; padding: 16px 20px;
          margin: 16px 0; }
h2 { font-size: 18px; margin: 0 0 12px; }
h3 { font-size: 15px; margin: 16px 0 8px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(120px, 1fr)); gap: 12px; }
.card { background: #fff; border: 1px solid #d0d7de; border-radius: 8px;
        padding: 10px 14px; }
.card .value { font-size: 22px; font-weight: 600; }
.card .label { font-size: 12px; color: #57606a; text-transform: uppercase; letter-spacing: .04em; }
.bad .value { color: #cf222e; } .good .value { color: #1a7f37; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid #eaeef2; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; }
.muted { color: #57606a; }
.status-failed, .status-error, .status-lost, .kind-regression { color: #cf222e; font-weight: 600; }
.status-completed, .status-succeeded, .status-passed, .kind-improvement { color: #1a7f37; }
.table-wrap { max-height: 480px; overflow: auto; }
"""


def render_html(report: RunReport) -> str:
    colours = charts.Colours()
    embed = ChartEmbedder()
    sections = [
        summary_section(report),
        regressions_section(report, embed, colours),
        performance_section(report, embed, colours),
        tests_section(report, embed),
        failures_section(report, embed, colours),
        tasks_section(report),
    ]
    title = f"dtf run {report.run_id}"
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        f"<title>{e(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f"<header><h1>{e(title)}</h1><p>{e(header_line(report))}</p></header>\n"
        f"<main>\n{''.join(s for s in sections if s)}</main>\n</body>\n</html>\n"
    )


class ChartEmbedder:
    """Figures as ``<div>``s; plotly.js goes inline with the first and is reused after."""

    def __init__(self) -> None:
        self.has_script = False

    def __call__(self, figure: go.Figure | None, div_id: str) -> str:
        if figure is None:
            return ""
        markup = pio.to_html(
            figure,
            full_html=False,
            include_plotlyjs=not self.has_script,
            div_id=div_id,
            config=PLOTLY_CONFIG,
        )
        self.has_script = True
        return f"<div class='chart'>{markup}</div>\n"


def e(value: object) -> str:
    return html.escape(plain("" if value is None else str(value)))


def header_line(report: RunReport) -> str:
    summary = report.summary
    parts = [f"commit {', '.join(summary.commits) or '-'}"]
    if summary.first_submitted_at is not None:
        parts.append(f"submitted {timestamp(summary.first_submitted_at)}")
    if summary.last_finished_at is not None:
        parts.append(f"finished {timestamp(summary.last_finished_at)}")
    parts.append(f"workers {', '.join(summary.workers) or '-'}")
    parts.append(f"hardware {', '.join(summary.hardware_classes) or '-'}")
    return " · ".join(parts)


def timestamp(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def card(label: str, value: object, tone: str = "") -> str:
    return (
        f"<div class='card {tone}'><div class='value'>{e(value)}</div>"
        f"<div class='label'>{e(label)}</div></div>"
    )


def summary_section(report: RunReport) -> str:
    summary = report.summary
    failed = summary.tasks_by_status.get("failed", 0)
    tests = test_totals(report)
    failing = tests["failed"] + tests["error"]
    introduced = sum(f.introduced_by_run for f in report.regressions)
    cards = [
        card("tasks", summary.tasks),
        card("completed", summary.tasks_by_status.get("completed", 0), "good"),
        card("failed", failed, "bad" if failed else ""),
        card("attempts / retries", f"{summary.attempts} / {summary.retries}"),
        card("duration", duration(summary.duration_s)),
        card("tests passed", tests["passed"], "good" if tests["passed"] else ""),
        card("tests failing", failing, "bad" if failing else ""),
        card("regressions", introduced, "bad" if introduced else ""),
    ]
    return f"<section id='summary'><div class='cards'>{''.join(cards)}</div></section>\n"


def table(header: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """Cells are HTML already (escaped by the caller); ``numeric`` columns align right."""
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='num'>{cell}</td>" if i in numeric else f"<td>{cell}</td>"
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<div class='table-wrap'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>\n"


def regressions_section(report: RunReport, embed: ChartEmbedder, colours: charts.Colours) -> str:
    figure = embed(charts.history_figure(report, colours), "chart-history")
    if not report.regressions:
        note = f"No regressions in the run's {report.series_checked} series."
        if not figure:
            note += " None of them has earlier samples to compare with yet."
        body = f"<p class='muted'>{e(note)}</p>"
        return f"<section id='regressions'><h2>Regressions</h2>{body}{figure}</section>\n"
    rows = []
    for finding in report.regressions:
        alert = finding.alert
        rows.append(
            [
                e(series_name(dict(alert.labels), alert.metric)),
                f"<span class='kind-{e(alert.kind)}'>{e(alert.kind)}</span>"
                + ("" if finding.introduced_by_run else " <span class='muted'>(earlier)</span>"),
                e(percent(alert.relative_change)),
                e(f"{number(alert.before_median)} → {number(alert.after_median)} {alert.unit}"),
                f"<code>{e(alert.last_good_key)}</code> → <code>{e(alert.first_bad_key)}</code>",
                e(f"{alert.q_value:.2g}"),
            ]
        )
    header = ["series", "kind", "change", "median before → after", "between", "q"]
    body = table(header, rows, numeric=(2, 5))
    return f"<section id='regressions'><h2>Regressions</h2>{body}{figure}</section>\n"


def performance_section(report: RunReport, embed: ChartEmbedder, colours: charts.Colours) -> str:
    if not report.metrics:
        return ""
    parts = [
        ("Latency by batch size", charts.latency_figure(report, colours), "chart-latency"),
        ("Throughput", charts.throughput_figure(report, colours), "chart-throughput"),
        ("Distributions", charts.distribution_figure(report, colours), "chart-distributions"),
    ]
    shown = "".join(
        f"<h3>{e(title)}</h3>{embed(f, div)}" for title, f, div in parts if f is not None
    )
    rows = [
        [
            e(s.metric),
            e(s.model),
            e(s.hardware_class),
            e("-" if s.batch_size is None else s.batch_size),
            e(s.precision or "-"),
            e(s.count),
            *(e(number(v)) for v in (s.median, s.p90, s.p99, s.min, s.max, s.stddev)),
            e(s.unit),
        ]
        for s in report.metrics
    ]
    header = ["metric", "model", "hardware", "batch", "precision", "n", "median", "p90", "p99"]
    metrics = table([*header, "min", "max", "stddev", "unit"], rows, numeric=tuple(range(5, 12)))
    return (
        f"<section id='performance'><h2>Performance</h2>{shown}<h3>Metrics</h3>{metrics}"
        "</section>\n"
    )


def tests_section(report: RunReport, embed: ChartEmbedder) -> str:
    if not test_tasks(report):
        return ""
    figure = embed(charts.tests_figure(report), "chart-tests")
    rows = [
        [
            f"<code>{e(history.node_id)}</code>",
            e(task.name),
            f"<span class='status-{e(history.final.outcome)}'>{e(history.final.outcome)}</span>",
            f"<code>{e(history.final.message or '')}</code>",
        ]
        for task, history in failing_tests(report)
    ]
    rows += [
        [
            f"(attempt {last.attempt} ran no test)",
            e(task.name),
            "<span class='status-error'>error</span>",
            e(failure_text(last)),
        ]
        for task in test_tasks(report)
        if (last := last_attempt(task)) is not None and is_broken_attempt(last)
    ]
    failing = table(["test", "task", "outcome", "message"], rows) if rows else "<p>None.</p>"
    flaky = [
        f"<li><code>{e(h.node_id)}</code> ({e(task.name)}): failed in attempt "
        f"{', '.join(str(x.attempt) for x in h.earlier)}, passed in the last</li>"
        for task in test_tasks(report)
        for h in case_histories(task)
        if h.is_flaky
    ]
    reruns = f"<h3>Passed only on a rerun</h3><ul>{''.join(flaky)}</ul>" if flaky else ""
    return (
        f"<section id='tests'><h2>Tests</h2>{figure}<h3>Failing tests</h3>{failing}{reruns}"
        "</section>\n"
    )


def failures_section(report: RunReport, embed: ChartEmbedder, colours: charts.Colours) -> str:
    failures = report.failures
    if not failures.failed_attempts:
        return "<section id='failures'><h2>Failures</h2><p>No failed attempts.</p></section>\n"
    figure = embed(charts.failure_figure(report, colours), "chart-failures")
    rows = [[e(r.strategy), e(r.count)] for r in failures.recoveries]
    recoveries = (
        "<h3>Recovery taken after a failure</h3>" + table(["strategy", "times"], rows, numeric=(1,))
        if rows
        else ""
    )
    return f"<section id='failures'><h2>Failures</h2>{figure}{recoveries}</section>\n"


def tasks_section(report: RunReport) -> str:
    rows = []
    for task in report.tasks:
        last = last_attempt(task)
        history = " → ".join(
            f"<span class='status-{e(a.status)}'>{e(a.status)}</span>"
            + (
                f" <span class='muted'>({e(failure_text(a))})</span>"
                if a.status != "succeeded"
                else ""
            )
            for a in task.attempts
        )
        rows.append(
            [
                f"<code>{e(task.task_id)}</code>",
                e(task.name),
                e(task.task_type),
                f"<span class='status-{e(task.status)}'>{e(task.status)}</span>",
                history,
                e(last.hardware_class if last else "-"),
                e(last.worker_id if last else "-"),
                e(duration(last.duration_s if last else None)),
            ]
        )
    header = ["task", "name", "type", "status", "attempts", "hardware", "worker", "last duration"]
    return f"<section id='tasks'><h2>Tasks</h2>{table(header, rows)}</section>\n"
