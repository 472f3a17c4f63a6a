"""Routes over the results file: aggregation, export, and the analyses of
``dtf.results.insights`` (regressions, compare, flaky, anomalies, trends, alerts).

Queries run in the results' own threads on a cursor of their own
(``dtf.results.reads``), so a slow aggregation never holds up the event loop
or the ingester's writes, and each includes every attempt finished before
the request. The listing of attempts, ``GET /api/results``,
reads the live state and stays in ``api.py``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import duckdb
from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from dtf.coordinator.responses import json_response
from dtf.coordinator.runtime import Runtime
from dtf.results import insights
from dtf.results.export import check_export, export_table
from dtf.results.queries import Filters, aggregate
from dtf.results.reads import ResultsReads

Authorization = Annotated[str | None, Header()]
Reader = Callable[[str | None, Callable[[Any], Any]], Awaitable[Any]]
Since = Annotated[float | None, Query(description="Epoch seconds")]
MEDIA_TYPES = {
    "parquet": "application/vnd.apache.parquet",
    "csv": "text/csv",
    "json": "application/json",
}


def results_router(rt: Runtime, results: ResultsReads) -> APIRouter:
    router = APIRouter(prefix="/api/results", tags=["results"])

    @router.get("/aggregate")
    async def aggregate_results(
        by: Annotated[
            str, Query(description="Comma-separated dimensions, e.g. model,hardware")
        ] = "",
        metric: str | None = None,
        run_id: str | None = None,
        since: Annotated[float | None, Query(description="Epoch seconds")] = None,
        authorization: Authorization = None,
    ) -> Response:
        """count, mean, median, p90, p95, p99, stddev, min and max of metric samples per
        group of the ``by`` dimensions (model, hardware, device, batch_size, precision,
        worker, run_id, commit, config, metric)."""
        rt.auth.require(authorization, "read")
        dimensions = [name.strip() for name in by.split(",") if name.strip()]
        filters = Filters(metric=metric, run_id=run_id, since=since)
        groups = await results.run(lambda cursor: aggregate(cursor, dimensions, filters))
        return json_response({"by": dimensions, "metric": metric, "groups": groups})

    @router.get("/export")
    async def export_results(
        table: str = "metric_samples",
        format: Annotated[str, Query(pattern="^(parquet|csv|json)$")] = "parquet",
        authorization: Authorization = None,
    ) -> Response:
        """One table of the results file (tasks, attempts, metric_samples, test_cases,
        worker_snapshots, runs) as Parquet, CSV or a JSON array."""
        rt.auth.require(authorization, "read")
        check_export(table, format)
        path = await results.run(lambda cursor: _export(cursor, table, format))
        return FileResponse(
            path,
            media_type=MEDIA_TYPES[format],
            filename=f"{table}.{format}",
            background=BackgroundTask(path.unlink, missing_ok=True),
        )

    add_insight_routes(router, rt, results)
    return router


def add_insight_routes(router: APIRouter, rt: Runtime, results: ResultsReads) -> None:
    """The analyses; errors name the unknown run or metric, or the environments that differ."""
    read = _authorized_reader(rt, results)
    _change_routes(router, read)
    _outlier_routes(router, read)


def _authorized_reader(rt: Runtime, results: ResultsReads) -> Reader:
    async def read(authorization: str | None, query: Callable[[Any], Any]) -> Any:
        rt.auth.require(authorization, "read")
        return await results.run(query)

    return read


def _change_routes(router: APIRouter, read: Reader) -> None:
    """Regressions, run comparisons, trends and the alerts stored at ingest."""

    @router.get("/regressions")
    async def regressions(
        metric: str | None = None,
        since: Since = None,
        min_change: Annotated[float, Query(ge=0.0, description="Minimum relative change")] = 0.02,
        authorization: Authorization = None,
    ) -> Response:
        """Change points of every metric series, Benjamini-Hochberg over all of them; alerts
        dated at or after ``since``, grouped by commit range."""
        report = await read(
            authorization,
            lambda cursor: insights.regressions(
                cursor, Filters(metric=metric), since=since, min_relative_change=min_change
            ),
        )
        return json_response(report)

    @router.get("/compare")
    async def compare(run_a: str, run_b: str, authorization: Authorization = None) -> Response:
        """Run A (baseline) against run B: per metric the change, its bootstrap interval and a
        verdict; per test the failure counts; metrics from different environments refused."""
        comparison = await read(
            authorization, lambda cursor: insights.compare_runs(cursor, run_a, run_b)
        )
        return json_response(comparison)

    @router.get("/trends")
    async def trends(
        metric: str | None = None,
        steps: Annotated[int, Query(ge=1, le=100)] = 5,
        authorization: Authorization = None,
    ) -> Response:
        """Per series: Theil-Sen slope with its interval, and a forecast ``steps`` ahead."""
        found = await read(
            authorization,
            lambda cursor: insights.trends(cursor, Filters(metric=metric), steps=steps),
        )
        return json_response({"trends": found})

    @router.get("/alerts")
    async def alerts(since: Since = None, authorization: Authorization = None) -> Response:
        """The alerts of the online check at ingest, each in its newest state."""
        found = await read(
            authorization, lambda cursor: insights.stored_alerts(cursor, since=since)
        )
        return json_response({"alerts": found})


def _outlier_routes(router: APIRouter, read: Reader) -> None:
    """Flaky tests and anomalies."""

    @router.get("/flaky")
    async def flaky(since: Since = None, authorization: Authorization = None) -> Response:
        """Tests that passed and failed on one commit (or run), with flake and flip rates."""
        found = await read(authorization, lambda cursor: insights.flaky_tests(cursor, since=since))
        return json_response({"flaky": found})

    @router.get("/anomalies")
    async def anomalies(since: Since = None, authorization: Authorization = None) -> Response:
        """Robust z-scores of task durations and metric series; an isolation forest over workers."""
        findings = await read(authorization, lambda cursor: insights.anomalies(cursor, since=since))
        return json_response(findings)


def _export(cursor: duckdb.DuckDBPyConnection, table: str, file_format: str) -> Path:
    descriptor, name = tempfile.mkstemp(prefix=f"dtf-{table}-", suffix=f".{file_format}")
    os.close(descriptor)
    path = Path(name)
    try:
        export_table(cursor, table, file_format, path)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path
