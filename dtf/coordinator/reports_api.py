"""``GET /api/reports/{run_id}?format=html|md|json|junit``: a run's report from the results file.

The report is built in the results' own threads on a cursor of its own
(``dtf.results.reads``), like the other results routes.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from dtf.coordinator.runtime import Runtime
from dtf.reports.formats import make_report, report_format
from dtf.results.reads import ResultsReads

Authorization = Annotated[str | None, Header()]


def reports_router(rt: Runtime, results: ResultsReads) -> APIRouter:
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
        text = await results.run(lambda cursor: make_report(cursor, run_id, format))
        return Response(text, media_type=chosen.media_type)

    return router
