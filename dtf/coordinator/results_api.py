"""Routes over the results file: ``GET /api/results/aggregate`` and ``GET /api/results/export``.

Queries run in a worker thread on a cursor of their own (see
``dtf.results.store``), so a slow aggregation never holds up the event loop
or the ingester's writes. The listing of attempts, ``GET /api/results``,
reads the live state and stays in ``api.py``.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from dtf.coordinator.responses import json_response
from dtf.coordinator.runtime import Runtime
from dtf.results.export import check_export, export_table
from dtf.results.queries import Filters, aggregate
from dtf.results.store import ResultsStore

Authorization = Annotated[str | None, Header()]
MEDIA_TYPES = {
    "parquet": "application/vnd.apache.parquet",
    "csv": "text/csv",
    "json": "application/json",
}


def results_router(rt: Runtime, store: ResultsStore) -> APIRouter:
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
        groups = await asyncio.to_thread(_aggregate, store, dimensions, filters)
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
        path = await asyncio.to_thread(_export, store, table, format)
        return FileResponse(
            path,
            media_type=MEDIA_TYPES[format],
            filename=f"{table}.{format}",
            background=BackgroundTask(path.unlink, missing_ok=True),
        )

    return router


def _aggregate(store: ResultsStore, by: list[str], filters: Filters) -> list[dict[str, Any]]:
    with store.reader() as cursor:
        return aggregate(cursor, by, filters)


def _export(store: ResultsStore, table: str, file_format: str) -> Path:
    descriptor, name = tempfile.mkstemp(prefix=f"dtf-{table}-", suffix=f".{file_format}")
    os.close(descriptor)
    path = Path(name)
    try:
        with store.reader() as cursor:
            export_table(cursor, table, file_format, path)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path
