"""``GET /api/failure-patterns``: recurring failures in the recorded attempts,
found by ``dtf.core.patterns`` (and scored by ``dtf.core.pattern_model``) over
the live state."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response

from dtf.coordinator.responses import json_response
from dtf.coordinator.runtime import Runtime
from dtf.core.pattern_records import failures_of, successes_of, within_window
from dtf.core.patterns import detect_patterns

Authorization = Annotated[str | None, Header()]
MAX_WINDOW_S = 30 * 24 * 3600.0


def pattern_routes(router: APIRouter, rt: Runtime) -> None:
    @router.get("/failure-patterns", tags=["failures"])
    async def failure_patterns(
        authorization: Authorization = None,
        window_s: Annotated[float, Query(gt=0, le=MAX_WINDOW_S)] = 3600.0,
        min_confidence: Annotated[float, Query(ge=0, le=1)] = 0.0,
        min_probability: Annotated[float, Query(ge=0, le=1)] = 0.0,
    ) -> Response:
        """Recurring failures of the last ``window_s`` seconds by worker, hardware
        class, failure type and task, and bursts: each with a count, the rules'
        confidence, a learned probability that it is real (worker, hardware and
        task patterns; below ``min_probability`` they are left out) and a
        recommended action; by learned probability, else confidence, first."""
        rt.auth.require(authorization, "read")
        now = time.time()
        failures = failures_of(rt.state)
        patterns = detect_patterns(
            failures,
            now=now,
            window_s=window_s,
            successes=successes_of(rt.state),
            min_confidence=min_confidence,
            min_probability=min_probability,
        )
        considered = len(within_window(failures, now=now, window_s=window_s))
        return json_response(
            {"patterns": patterns, "failures_considered": considered, "window_s": window_s}
        )
