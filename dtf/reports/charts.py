"""The HTML report's Plotly figures, one function each; ``None`` when there is nothing to plot.

Every figure colours a line (model, hardware class, precision) the same way
(``Colours``, in the order the lines are first drawn), puts
batch sizes on a category axis in numeric order, and draws one small panel
per metric (at most ``MAX_PANELS``, two to a row).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TypeVar

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dtf.analysis.regressions import Alert
from dtf.reports.model import MetricSamples, MetricStats, RunReport, SeriesHistory
from dtf.reports.views import (
    OUTCOME_ORDER,
    is_latency,
    is_throughput,
    outcome_counts,
    percent,
    series_name,
    test_tasks,
)

MAX_PANELS = 6
MAX_HISTORIES = 6
PANEL_HEIGHT_PX = 300
PALETTE = ("#4C78A8", "#F58518", "#54A24B", "#B279A2", "#E45756", "#72B7B2", "#9D755D")
OUTCOME_COLOURS = {
    "passed": "#54A24B",
    "failed": "#E45756",
    "error": "#9E2A2B",
    "skipped": "#BAB0AC",
    "xfailed": "#D8D3CF",
    "xpassed": "#F58518",
}
REGRESSION_COLOUR = "#D62728"
HISTORY_COLOUR = "#8C8C8C"
FONT = "system-ui, -apple-system, Segoe UI, Roboto, sans-serif"


class Colours:
    """One colour per name, handed out in the order names are first asked for."""

    def __init__(self) -> None:
        self._colours: dict[str, str] = {}

    def __call__(self, name: str) -> str:
        if name not in self._colours:
            self._colours[name] = PALETTE[len(self._colours) % len(PALETTE)]
        return self._colours[name]


def batch_label(batch_size: int | None) -> str:
    return "n/a" if batch_size is None else str(batch_size)


def batch_order(batch_sizes: Sequence[int | None]) -> list[str]:
    known = sorted({b for b in batch_sizes if b is not None})
    return [*map(str, known), *(["n/a"] if None in batch_sizes else [])]


def panels(titles: Sequence[str], *, columns: int = 2) -> go.Figure:
    cols = min(columns, len(titles))
    rows = math.ceil(len(titles) / cols)
    figure = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=list(titles),
        horizontal_spacing=0.08,
        vertical_spacing=min(0.3 / rows, 0.15),
    )
    style(figure, height=PANEL_HEIGHT_PX * rows + 60)
    return figure


def position(index: int, columns: int = 2) -> tuple[int, int]:
    return index // columns + 1, index % columns + 1


def style(figure: go.Figure, *, height: int) -> None:
    figure.update_layout(
        template="plotly_white",
        height=height,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
        font={"family": FONT, "size": 12},
        hoverlabel={"font": {"family": FONT}},
    )


def trace_name(stats: MetricStats | MetricSamples, models: int) -> str:
    parts = [stats.hardware_class]
    if models > 1:
        parts.insert(0, stats.model)
    if stats.precision:
        parts.append(stats.precision)
    return " · ".join(parts)


def stats_by_metric(
    report: RunReport, wanted: Callable[[MetricStats], bool]
) -> dict[str, list[MetricStats]]:
    grouped: dict[str, list[MetricStats]] = defaultdict(list)
    for stats in report.metrics:
        if wanted(stats):
            grouped[stats.metric].append(stats)
    return dict(list(grouped.items())[:MAX_PANELS])


Located = TypeVar("Located", MetricStats, MetricSamples)
TraceMaker = Callable[[list[Located], str], go.Scatter | go.Bar | go.Box]


def batch_panels(
    report: RunReport,
    grouped: dict[str, list[Located]],
    titles: list[str],
    colours: Colours,
    make: TraceMaker[Located],
) -> go.Figure:
    """A panel per metric with batch sizes across; ``make(points, colour)`` draws one line."""
    figure = panels(titles)
    shown: set[str] = set()
    # Lines are named (and so coloured) alike in every chart of the report.
    models = len({stats.model for stats in report.metrics})
    for index, rows in enumerate(grouped.values()):
        row, col = position(index)
        lines: dict[str, list[Located]] = defaultdict(list)
        for item in sorted(rows, key=lambda i: (i.batch_size is None, i.batch_size or 0)):
            lines[trace_name(item, models)].append(item)
        for name, items in lines.items():
            trace = make(items, colours(name))
            trace.update(name=name, legendgroup=name, showlegend=name not in shown)
            figure.add_trace(trace, row=row, col=col)
            shown.add(name)
        order = batch_order([item.batch_size for item in rows])
        figure.update_xaxes(
            type="category", categoryorder="array", categoryarray=order, row=row, col=col
        )
    figure.update_xaxes(title_text="batch size")
    return figure


def latency_figure(report: RunReport, colours: Colours) -> go.Figure | None:
    """Median latency against batch size, a line per model and hardware; bars span min to max."""
    grouped = stats_by_metric(report, is_latency)
    if not grouped:
        return None
    titles = [f"{metric} ({rows[0].unit})" for metric, rows in grouped.items()]
    return batch_panels(report, grouped, titles, colours, latency_line)


def latency_line(points: list[MetricStats], colour: str) -> go.Scatter:
    return go.Scatter(
        x=[batch_label(s.batch_size) for s in points],
        y=[s.median for s in points],
        error_y={
            "type": "data",
            "symmetric": False,
            "array": [s.max - s.median for s in points],
            "arrayminus": [s.median - s.min for s in points],
            "thickness": 1,
        },
        customdata=[[s.p90, s.count] for s in points],
        hovertemplate="batch %{x}<br>median %{y:.4g}<br>p90 %{customdata[0]:.4g}"
        "<br>n %{customdata[1]}",
        mode="lines+markers",
        line={"width": 2, "color": colour},
        marker={"size": 8, "color": colour},
    )


def throughput_figure(report: RunReport, colours: Colours) -> go.Figure | None:
    """Median throughput per batch size, a bar per model and hardware class."""
    grouped = stats_by_metric(report, is_throughput)
    if not grouped:
        return None
    titles = [
        f"{metric} ({rows[0].unit or 'higher is better'})" for metric, rows in grouped.items()
    ]
    figure = batch_panels(report, grouped, titles, colours, throughput_bar)
    figure.update_layout(barmode="group", bargap=0.25)
    return figure


def throughput_bar(points: list[MetricStats], colour: str) -> go.Bar:
    return go.Bar(
        x=[batch_label(s.batch_size) for s in points],
        y=[s.median for s in points],
        marker_color=colour,
        hovertemplate="batch %{x}<br>median %{y:.4g}",
    )


def distribution_figure(report: RunReport, colours: Colours) -> go.Figure | None:
    """The samples of each metric with repeats as a box per batch size and line."""
    grouped = dict(list(repeated_samples(report).items())[:MAX_PANELS])
    if not grouped:
        return None
    titles = [f"{metric} ({groups[0].unit or '-'})" for metric, groups in grouped.items()]
    figure = batch_panels(report, grouped, titles, colours, samples_box)
    figure.update_layout(boxmode="group")
    return figure


def samples_box(groups: list[MetricSamples], colour: str) -> go.Box:
    return go.Box(
        x=[batch_label(g.batch_size) for g in groups for _ in g.values],
        y=[v for g in groups for v in g.values],
        boxpoints="all",
        jitter=0.3,
        pointpos=0,
        marker={"size": 5, "color": colour},
        line={"width": 1.5, "color": colour},
    )


def repeated_samples(report: RunReport) -> dict[str, list[MetricSamples]]:
    """Samples by metric, for the metrics with more than one sample somewhere."""
    grouped: dict[str, list[MetricSamples]] = defaultdict(list)
    for samples in report.samples:
        grouped[samples.metric].append(samples)
    return {
        metric: groups
        for metric, groups in sorted(grouped.items())
        if max(len(g.values) for g in groups) > 1
    }


def chosen_histories(report: RunReport) -> list[SeriesHistory]:
    """Series with alerts; without any, those of the first latency-like metric (else of any
    metric) with earlier points to compare with."""
    alerted = [h for h in report.histories if h.alerts]
    if alerted:
        return alerted[:MAX_HISTORIES]
    compared = [h for h in report.histories if any(not p.in_run for p in h.points)]
    latency = [h.metric for h in compared if h.direction == "lower_is_better"]
    metric = latency[0] if latency else next((h.metric for h in compared), None)
    return [h for h in compared if h.metric == metric][:MAX_HISTORIES]


def history_figure(report: RunReport, colours: Colours) -> go.Figure | None:
    """Each series' history up to this run; this run's points in colour, changes marked."""
    histories = chosen_histories(report)
    if not histories:
        return None
    titles = [series_name(history_labels(h), h.metric) for h in histories]
    figure = panels(titles, columns=1 if len(histories) == 1 else 2)
    columns = 1 if len(histories) == 1 else 2
    for index, history in enumerate(histories):
        row, col = position(index, columns)
        colour = colours(history.hardware_class)
        add_history(figure, history, colour, row, col, first=index == 0)
        for alert in history.alerts:
            mark_change(figure, alert, row, col)
        figure.update_xaxes(title_text="sample (oldest first)", row=row, col=col)
        figure.update_yaxes(title_text=history.unit, row=row, col=col)
    return figure


def history_labels(history: SeriesHistory) -> dict[str, str]:
    return {
        "model": history.model,
        "hardware_class": history.hardware_class,
        "batch_size": "" if history.batch_size is None else str(history.batch_size),
        "precision": history.precision or "",
    }


def add_history(
    figure: go.Figure, history: SeriesHistory, colour: str, row: int, col: int, *, first: bool
) -> None:
    points = list(enumerate(history.points, start=1))
    for in_run, name, marker in (
        (False, "earlier runs", {"color": HISTORY_COLOUR, "size": 5}),
        (True, "this run", {"color": colour, "size": 8, "line": {"width": 1, "color": "#333"}}),
    ):
        chosen = [(i, p) for i, p in points if p.in_run == in_run]
        figure.add_trace(
            go.Scatter(
                x=[i for i, _ in chosen],
                y=[p.value for _, p in chosen],
                text=[p.label for _, p in chosen],
                hovertemplate="%{text}<br>%{y:.4g}<extra></extra>",
                mode="markers",
                name=name,
                legendgroup=name,
                showlegend=first,
                marker=marker,
            ),
            row=row,
            col=col,
        )


def mark_change(figure: go.Figure, alert: Alert, row: int, col: int) -> None:
    """A dashed line at the change, the medians before and after it, and what changed."""
    change = alert.change_index + 1  # points are numbered from 1 on the axis
    figure.add_vline(
        x=change - 0.5,
        line={"color": REGRESSION_COLOUR, "dash": "dash", "width": 2},
        row=row,
        col=col,
    )
    for start, end, level in (
        (change - alert.before_count, change - 1, alert.before_median),
        (change, change + alert.after_count - 1, alert.after_median),
    ):
        figure.add_shape(
            type="line",
            x0=start,
            x1=end,
            y0=level,
            y1=level,
            line={"color": REGRESSION_COLOUR, "width": 2},
            row=row,
            col=col,
        )
    figure.add_annotation(
        x=change - 0.5,
        y=max(alert.before_median, alert.after_median),
        text=f"{alert.kind} {percent(alert.relative_change)}<br>{alert.last_good_key} → {alert.first_bad_key}",
        showarrow=False,
        xanchor="right",
        yanchor="bottom",
        font={"color": REGRESSION_COLOUR},
        row=row,
        col=col,
    )


def failure_figure(report: RunReport, colours: Colours) -> go.Figure | None:
    """Failed attempts by failure type, stacked by the hardware class they ran on."""
    counts = report.failures.by_type
    if not counts:
        return None
    figure = go.Figure()
    types = sorted({c.failure_type for c in counts})
    for hardware in sorted({c.hardware_class for c in counts}):
        found = {c.failure_type: c.count for c in counts if c.hardware_class == hardware}
        figure.add_trace(
            go.Bar(
                x=types,
                y=[found.get(t, 0) for t in types],
                name=hardware or "unknown",
                marker_color=colours(hardware),
                hovertemplate="%{x}: %{y} attempts",
            )
        )
    style(figure, height=340)
    figure.update_layout(barmode="stack", bargap=0.5, title="Failed attempts by failure type")
    figure.update_yaxes(
        title_text="attempts", dtick=1 if max(c.count for c in counts) < 10 else None
    )
    return figure


def tests_figure(report: RunReport) -> go.Figure | None:
    """Test outcomes of each test task's last attempt, one stacked bar per task."""
    tasks = test_tasks(report)
    if not tasks:
        return None
    counted = [(task.name, outcome_counts(task)) for task in tasks]
    figure = go.Figure()
    for outcome in OUTCOME_ORDER:
        if any(counts[outcome] for _, counts in counted):
            figure.add_trace(
                go.Bar(
                    y=[name for name, _ in counted],
                    x=[counts[outcome] for _, counts in counted],
                    name=outcome,
                    orientation="h",
                    marker_color=OUTCOME_COLOURS[outcome],
                    hovertemplate="%{y}: %{x} " + outcome + "<extra></extra>",
                )
            )
    style(figure, height=max(240, 60 * len(tasks) + 140))
    figure.update_layout(
        barmode="stack",
        bargap=0.35,
        title="Test outcomes (last attempt of each task)",
        legend_traceorder="normal",
    )
    figure.update_xaxes(title_text="tests")
    figure.update_yaxes(autorange="reversed")
    return figure
