"""The worker protocol's routes: the WebSocket channel, and HTTP register,
heartbeat, started, outcome and assignments for workers that poll."""

from __future__ import annotations

import time
from typing import Annotated, TypeVar

from fastapi import APIRouter, Header, Request, Response, WebSocket

from dtf import protocol as p
from dtf.coordinator.bodies import decode_body, request_body
from dtf.coordinator.responses import json_response
from dtf.coordinator.runtime import Runtime
from dtf.coordinator.worker_hub import lease_to_hand_out_s
from dtf.core import commands as c
from dtf.core.effective import effective_spec
from dtf.core.model import LeaseRef
from dtf.errors import NotFound

Authorization = Annotated[str | None, Header()]
T = TypeVar("T")


def worker_protocol_routes(router: APIRouter, rt: Runtime) -> None:
    _socket_route(router, rt)
    _session_routes(router, rt)
    _polling_routes(router, rt)
    _report_routes(router, rt)


async def _worker_body(
    rt: Runtime, request: Request, authorization: str | None, kind: type[T]
) -> T:
    """A worker's request body, after checking its key may do worker things."""
    rt.auth.require(authorization, "work")
    return decode_body(await request.body(), kind)


def _socket_route(router: APIRouter, rt: Runtime) -> None:
    @router.websocket("/workers/ws")
    async def worker_socket(websocket: WebSocket) -> None:
        """The worker channel: register, assignments, started, outcomes."""
        try:
            rt.auth.require(websocket.headers.get("authorization"), "work")
        except Exception as exc:
            await websocket.close(code=1008, reason=str(exc)[:120])
            return
        await rt.hub.serve(websocket)


def _session_routes(router: APIRouter, rt: Runtime) -> None:
    @router.post(
        "/workers/register", openapi_extra=request_body(p.Register), tags=["worker protocol"]
    )
    async def register(request: Request, authorization: Authorization = None) -> Response:
        """Register over HTTP (workers that cannot hold a WebSocket)."""
        body = await _worker_body(rt, request, authorization, p.Register)
        await rt.bus.execute(rt.hub.registration(body))
        registered = p.Registered(
            body.worker_id,
            body.session,
            rt.settings.lease_timeout_s,
            rt.settings.heartbeat_interval_s,
        )
        return json_response(registered)

    @router.post(
        "/workers/{worker_id}/heartbeat",
        openapi_extra=request_body(p.HeartbeatRequest),
        tags=["worker protocol"],
    )
    async def heartbeat(
        worker_id: str, request: Request, authorization: Authorization = None
    ) -> Response:
        """Renew the leases the worker holds; 409 means: reconnect and register."""
        body = await _worker_body(rt, request, authorization, p.HeartbeatRequest)
        await rt.bus.execute(
            c.Heartbeat(
                time.time(),
                worker_id,
                body.session,
                body.held,
                body.max_fence_seen,
                rt.hub.node_id,
                rt.hub.node_incarnation,
            )
        )
        renewed = rt.state.current_lease_refs(worker_id, body.held)
        return json_response(p.HeartbeatReply(rt.settings.lease_timeout_s, renewed))


def _polling_routes(router: APIRouter, rt: Runtime) -> None:
    @router.get("/workers/{worker_id}/assignments", tags=["worker protocol"])
    async def assignments(
        worker_id: str, request: Request, authorization: Authorization = None
    ) -> Response:
        """The attempts this worker currently holds, for HTTP-polling workers, each with
        its checkpoint grant as over the WebSocket."""
        rt.auth.require(authorization, "work")
        worker = rt.state.workers.get(worker_id)
        if worker is None:
            raise NotFound(f"worker {worker_id!r} is not registered")
        now, interval_s = time.time(), rt.settings.heartbeat_interval_s
        base_url = str(request.base_url)
        handed_out = []
        for task in (rt.state.tasks[t] for t in worker.leases):
            left_s = lease_to_hand_out_s(task, now, interval_s)
            if task.lease is None or left_s is None:
                continue
            lease = LeaseRef(task.id, task.lease.attempt, task.lease.fence)
            grant = rt.hub.grant(lease, base_url)
            spec = effective_spec(task)
            handed_out.append(p.Assign(task.id, lease.attempt, lease.fence, spec, left_s, grant))
        return json_response(handed_out)

    @router.post(
        "/workers/{worker_id}/health-check",
        openapi_extra=request_body(p.HealthCheckRequest),
        tags=["worker protocol"],
    )
    async def health_check(
        worker_id: str, request: Request, authorization: Authorization = None
    ) -> Response:
        """Report the health check an HTTP worker ran because its record says ``pending``."""
        body = await _worker_body(rt, request, authorization, p.HealthCheckRequest)
        await rt.bus.execute(
            c.ReportHealthCheck(
                time.time(), worker_id, body.session, body.passed, body.detail, body.duration_s
            )
        )
        return json_response({"ok": True})


def _report_routes(router: APIRouter, rt: Runtime) -> None:
    @router.post(
        "/workers/{worker_id}/started",
        openapi_extra=request_body(p.Started),
        tags=["worker protocol"],
    )
    async def started(
        worker_id: str, request: Request, authorization: Authorization = None
    ) -> Response:
        body = await _worker_body(rt, request, authorization, p.Started)
        await rt.bus.execute(c.TaskStarted(time.time(), worker_id, body.lease, body.ran_for_s))
        return json_response({"ok": True})

    @router.post(
        "/workers/{worker_id}/outcome",
        openapi_extra=request_body(p.OutcomeReport),
        tags=["worker protocol"],
    )
    async def outcome(
        worker_id: str, request: Request, authorization: Authorization = None
    ) -> Response:
        """Report an attempt's outcome; safe to resend until acknowledged."""
        body = await _worker_body(rt, request, authorization, p.OutcomeReport)
        events = await rt.bus.execute(
            c.ReportOutcome(time.time(), worker_id, body.lease, body.outcome)
        )
        counted = any(getattr(e, "counted", False) for e in events)
        return json_response({"accepted": True, "counted": counted})
