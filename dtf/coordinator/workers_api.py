"""REST routes for workers: list and inspect them, take one out of service or put it back."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from msgspec import Meta, Struct

from dtf.coordinator.bodies import decode_body
from dtf.coordinator.responses import json_response
from dtf.coordinator.runtime import Runtime
from dtf.coordinator.views import worker_view
from dtf.core import commands as c
from dtf.core.records import WorkerRecord
from dtf.errors import NotFound

Authorization = Annotated[str | None, Header()]


class AdmissionRequest(Struct, forbid_unknown_fields=True):
    """Optional body of the enable and disable routes: why, for the record."""

    reason: Annotated[str, Meta(max_length=500)] = ""


def worker_routes(router: APIRouter, rt: Runtime) -> None:
    @router.get("/workers", tags=["workers"])
    async def list_workers(authorization: Authorization = None) -> Response:
        """Every worker seen: capabilities (declared ones marked), status, health and breaker."""
        rt.auth.require(authorization, "read")
        now = time.time()
        return json_response(
            {"workers": [worker_view(rt.state, w, now=now) for w in rt.state.workers.values()]}
        )

    @router.get("/workers/{worker_id}", tags=["workers"])
    async def get_worker(worker_id: str, authorization: Authorization = None) -> Response:
        rt.auth.require(authorization, "read")
        return json_response(worker_view(rt.state, _worker(rt, worker_id), now=time.time()))

    @router.post("/workers/{worker_id}/disable", tags=["workers"])
    async def disable_worker(
        worker_id: str, request: Request, authorization: Authorization = None
    ) -> Response:
        """Quarantine a worker by hand (admin): running work finishes, nothing new is sent."""
        return await _set_enabled(rt, worker_id, request, authorization, enabled=False)

    @router.post("/workers/{worker_id}/enable", tags=["workers"])
    async def enable_worker(
        worker_id: str, request: Request, authorization: Authorization = None
    ) -> Response:
        """End a worker's quarantine (admin), whether health or an admin put it there."""
        return await _set_enabled(rt, worker_id, request, authorization, enabled=True)


async def _set_enabled(
    rt: Runtime, worker_id: str, request: Request, authorization: str | None, *, enabled: bool
) -> Response:
    rt.auth.require(authorization, "admin")
    raw = await request.body()
    body = decode_body(raw, AdmissionRequest) if raw.strip() else AdmissionRequest()
    await rt.bus.execute(c.SetWorkerEnabled(time.time(), worker_id, enabled, body.reason))
    return json_response(worker_view(rt.state, _worker(rt, worker_id), now=time.time()))


def _worker(rt: Runtime, worker_id: str) -> WorkerRecord:
    worker = rt.state.workers.get(worker_id)
    if worker is None:
        raise NotFound(f"worker {worker_id!r} is not registered; list workers with `dtf workers`")
    return worker
