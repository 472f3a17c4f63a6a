"""REST routes under ``/api/cluster``: status, nodes, leadership, health, and
taking a node out of service or back.

``/api/cluster/health`` needs no key, like ``/health``: load balancers probe it
and skip a node that answers 503 (disabled, cut off from the cluster, or
lagging), while ``/health`` only says the process is alive.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response

from dtf.cluster.view import ClusterView, leadership_json, status_json
from dtf.coordinator.bodies import decode_body
from dtf.coordinator.responses import json_response
from dtf.coordinator.runtime import Runtime
from dtf.coordinator.workers_api import AdmissionRequest

Authorization = Annotated[str | None, Header()]


def cluster_router(runtime: Runtime, view: ClusterView) -> APIRouter:
    router = APIRouter(prefix="/api/cluster", tags=["cluster"])
    _read_routes(router, runtime, view)
    _admission_routes(router, runtime, view)
    return router


def _read_routes(router: APIRouter, rt: Runtime, view: ClusterView) -> None:
    @router.get("/status")
    async def cluster_status(authorization: Authorization = None) -> Response:
        """This node, the leader, every node with its applied position and lag, and health."""
        rt.auth.require(authorization, "read")
        return json_response(status_json(view.status()))

    @router.get("/nodes")
    async def cluster_nodes(authorization: Authorization = None) -> Response:
        rt.auth.require(authorization, "read")
        return json_response({"nodes": view.nodes()})

    @router.get("/leader")
    async def cluster_leader(authorization: Authorization = None) -> Response:
        """The current leader (null during an election) and the leadership history, newest first."""
        rt.auth.require(authorization, "read")
        return json_response(leadership_json(view.leadership()))

    @router.get("/health")
    async def cluster_health() -> Response:
        """200 when this node should get traffic, 503 when not; no authentication."""
        healthy, detail = view.health()
        status = view.status()
        body = {
            "healthy": healthy,
            "detail": detail,
            "node_id": status.node_id,
            "is_leader": status.is_leader,
            "applied_seq": status.applied_seq,
        }
        if healthy:
            return json_response(body)
        error = {"message": detail, "field": None, "type": "CoordinatorUnavailable"}
        return json_response({**body, "error": error}, 503)


def _admission_routes(router: APIRouter, rt: Runtime, view: ClusterView) -> None:
    @router.post("/node/{node_id}/disable")
    async def disable_node(
        node_id: str, request: Request, authorization: Authorization = None
    ) -> Response:
        """Take a node out of service (admin): it resigns leadership, never campaigns, and
        its /api/cluster/health answers 503; it keeps applying the log and serving reads."""
        return await _set_enabled(rt, view, node_id, request, authorization, enabled=False)

    @router.post("/node/{node_id}/enable")
    async def enable_node(
        node_id: str, request: Request, authorization: Authorization = None
    ) -> Response:
        """Put a disabled node back in service (admin)."""
        return await _set_enabled(rt, view, node_id, request, authorization, enabled=True)


async def _set_enabled(
    rt: Runtime,
    view: ClusterView,
    node_id: str,
    request: Request,
    authorization: str | None,
    *,
    enabled: bool,
) -> Response:
    rt.auth.require(authorization, "admin")
    raw = await request.body()
    body = decode_body(raw, AdmissionRequest) if raw.strip() else AdmissionRequest()
    return json_response(await view.set_node_enabled(node_id, enabled, body.reason))
