"""``GET /api/reports/{run_id}?format=html|md|json|junit``: a run's report from the results file.

The report is built in a worker thread on a reader cursor of its own (see
``dtf.results.store``), like the other results routes.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from dtf.coordinator.runtime import Runtime
from dtf.reports.formats import make_report, report_format
from dtf.results.store import ResultsStore

Authorization = Annotated[str | None, Header()]


def reports_router(rt: Runtime, store: ResultsStore) -> APIRouter:
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
        text = await asyncio.to_thread(_report, store, run_id, format)
        return Response(text, media_type=chosen.media_type)

    return router


def _report(store: ResultsStore, run_id: str, format_name: str) -> str:
    with store.reader() as cursor:
        return make_report(cursor, run_id, format_name)
