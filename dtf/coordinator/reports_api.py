"""``GET /api/reports/{run_id}?format=html|md|json|junit``: a run's report from the results file.

The report is built in a worker thread on a cursor of its own, after the
pending results are written (``ResultsIngester.fresh_reader``), like the other
results routes.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from dtf.coordinator.runtime import Runtime
from dtf.reports.formats import make_report, report_format
from dtf.results.ingest import ResultsIngester

Authorization = Annotated[str | None, Header()]


def reports_router(rt: Runtime, results: ResultsIngester) -> APIRouter:
    router = APIRouter(prefix="/api/reports", tags=["results"])

    @router.get("/{run_id}")
    async def run_report(
        run_id: str,
        format: Annotated[str, Query(pattern="^(html|md|json|junit)$")] = "html",
        authorization: Authorization = None,
    ) -> Response:
        """The report of the tasks labelled ``run_id``: HTML with charts, Markdown for a CI
        summary, JSON, or JUnit XML."""
        rt.auth.require(authorization, "read")
        chosen = report_format(format)
        text = await asyncio.to_thread(_report, results, run_id, format)
        return Response(text, media_type=chosen.media_type)

    return router


def _report(results: ResultsIngester, run_id: str, format_name: str) -> str:
    with results.fresh_reader() as cursor:
        return make_report(cursor, run_id, format_name)
