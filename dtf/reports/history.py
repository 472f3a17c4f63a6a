"""The run's metric series with their history, and the regressions found in them.

A series is one metric at equal dimensions (``dtf.results.queries.SERIES_KEY``).
Its history is every sample of that series recorded up to the run's last
sample of it, newest ``HISTORY_POINTS`` kept, so a report made later says
the same as one made right after the run. The series go to the analysis as
``dtf.results.insights`` builds them (one environment per point, the worker's
machine included) and regressions are detected over the family of all of the
run's series at once (Benjamini-Hochberg across them). An alert is the run's
own when the first point after the change is one of the run's samples.
"""

from __future__ import annotations

import dataclasses

import duckdb
import numpy as np

from dtf.analysis.regressions import Alert, detect_regressions
from dtf.analysis.series import Series
from dtf.reports.model import RegressionFinding, SeriesHistory, SeriesPoint
from dtf.results import queries
from dtf.results.insights import analysis_series

HISTORY_POINTS = 200

SeriesId = tuple[str, tuple[tuple[str, str], ...]]


@dataclasses.dataclass(frozen=True)
class RunHistories:
    histories: list[SeriesHistory]
    regressions: list[RegressionFinding]
    series_checked: int


def run_histories(cursor: duckdb.DuckDBPyConnection, run_id: str) -> RunHistories:
    """Histories of the run's series and the alerts on them."""
    own = queries.series(cursor, queries.Filters(run_id=run_id))
    whole: dict[str, list[queries.Series]] = {}
    for part in own:
        metric = str(part.key["name"])
        if metric not in whole:
            whole[metric] = queries.series(cursor, queries.Filters(metric=metric))
    machines = queries.worker_machines(cursor)
    cut = [history_until(part, whole[str(part.key["name"])]) for part in own]
    family = [analysis_series(found, machines) for found in cut]
    alerts = alerts_by_series(family, detect_regressions(family).alerts)
    histories, findings = [], []
    for index, (part, found, analysed) in enumerate(zip(own, cut, family, strict=True)):
        in_run = {float(at) for at in part.recorded_at}
        points = tuple(
            SeriesPoint(label, float(at), float(value), float(at) in in_run)
            for label, at, value in zip(
                analysed.order_keys, found.recorded_at, found.values, strict=True
            )
        )
        mine = alerts.get(series_id(analysed), [])
        histories.append(series_history(found, points, tuple(mine)))
        findings += [RegressionFinding(index, a, points[a.change_index].in_run) for a in mine]
    return RunHistories(histories, findings, len(own))


def history_until(part: queries.Series, candidates: list[queries.Series]) -> queries.Series:
    """The newest points, up to the run's last sample, of the series ``part`` belongs to."""
    found = next((s for s in candidates if s.key == part.key), part)
    end = int(np.searchsorted(found.recorded_at, float(np.max(part.recorded_at)), side="right"))
    start = max(0, end - HISTORY_POINTS)
    return dataclasses.replace(
        found,
        values=found.values[start:end],
        labels=found.labels[start:end],
        recorded_at=found.recorded_at[start:end],
        worker_ids=found.worker_ids[start:end],
        first_index=found.first_index + start,
    )


def series_id(series: Series) -> SeriesId:
    return series.metric, series.labels


def alerts_by_series(
    family: list[Series], alerts: tuple[Alert, ...]
) -> dict[SeriesId, list[Alert]]:
    grouped: dict[SeriesId, list[Alert]] = {series_id(s): [] for s in family}
    for alert in alerts:
        grouped[(alert.metric, alert.labels)].append(alert)
    return grouped


def series_history(
    found: queries.Series, points: tuple[SeriesPoint, ...], alerts: tuple[Alert, ...]
) -> SeriesHistory:
    key = found.key
    return SeriesHistory(
        metric=str(key["name"]),
        unit=str(key["unit"] or ""),
        direction=found.direction,
        model=str(key["model"] or ""),
        hardware_class=str(key["hardware_class"] or ""),
        device_model=str(key["device_model"] or ""),
        batch_size=key["batch_size"],
        precision=key["precision"],
        config=str(key["config"] or ""),
        points=points,
        alerts=alerts,
    )
