"""REST routes under ``/api``: tasks, workers, results, status, keys (the
worker protocol's routes are in ``worker_api.py``).

Handlers are thin: authenticate, decode the body, build a command, run it
through the bus, shape the reply. All state lives in ``bus.state``.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response

from dtf.coordinator import auth
from dtf.coordinator.bodies import (
    KeyRequest,
    LookupRequest,
    SubmitBatch,
    WaitRequest,
    decode_body,
    new_tasks,
    request_body,
)
from dtf.coordinator.patterns_api import pattern_routes
from dtf.coordinator.responses import json_response
from dtf.coordinator.runtime import Runtime
from dtf.coordinator.views import result_views, task_view, wait_view
from dtf.coordinator.worker_api import worker_protocol_routes
from dtf.coordinator.workers_api import worker_routes
from dtf.core import commands as c
from dtf.core.events import TaskAccepted
from dtf.core.model import TaskSpec
from dtf.core.records import TaskStatus
from dtf.errors import NotFound

Authorization = Annotated[str | None, Header()]


def build_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(prefix="/api")
    _submit_routes(router, runtime)
    _task_routes(router, runtime)
    _task_list_routes(router, runtime)
    worker_routes(router, runtime)
    worker_protocol_routes(router, runtime)
    _info_routes(router, runtime)
    pattern_routes(router, runtime)
    return router


def _submit_routes(router: APIRouter, rt: Runtime) -> None:
    @router.post("/tasks", status_code=201, openapi_extra=request_body(TaskSpec), tags=["tasks"])
    async def submit_task(
        request: Request, authorization: Authorization = None, reject_unsatisfiable: bool = False
    ) -> Response:
        """Submit one task. Resubmitting the same id or idempotency key returns the existing task."""
        rt.auth.require(authorization, "submit")
        spec = decode_body(await request.body(), TaskSpec)
        accepted = await _submit(rt, new_tasks([spec], path=""), reject_unsatisfiable)
        return json_response(accepted[0], 201)

    @router.post(
        "/tasks/batch", status_code=201, openapi_extra=request_body(SubmitBatch), tags=["tasks"]
    )
    async def submit_batch(request: Request, authorization: Authorization = None) -> Response:
        """Submit many tasks in one request; the batch is accepted or refused whole."""
        rt.auth.require(authorization, "submit")
        batch = decode_body(await request.body(), SubmitBatch)
        accepted = await _submit(rt, new_tasks(batch.tasks), batch.reject_unsatisfiable)
        return json_response({"tasks": accepted}, 201)


def _task_routes(router: APIRouter, rt: Runtime) -> None:
    @router.get("/tasks", tags=["tasks"])
    async def list_tasks(
        authorization: Authorization = None,
        status: TaskStatus | None = None,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
        order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
    ) -> Response:
        """Tasks, newest first by default, with their attempt history."""
        rt.auth.require(authorization, "read")
        tasks = [t for t in rt.state.tasks.values() if status is None or t.status is status]
        if order == "desc":
            tasks.reverse()
        now = time.time()
        page = [task_view(rt.state, t, now=now) for t in tasks[offset : offset + limit]]
        return json_response({"tasks": page, "total": len(tasks)})

    @router.get("/tasks/{task_id}", tags=["tasks"])
    async def get_task(task_id: str, authorization: Authorization = None) -> Response:
        """One task with its full attempt history and, if it waits, why."""
        rt.auth.require(authorization, "read")
        return json_response(task_view(rt.state, _task(rt, task_id), now=time.time()))

    @router.post("/tasks/{task_id}/cancel", tags=["tasks"])
    async def cancel_task(task_id: str, authorization: Authorization = None) -> Response:
        """Cancel a task; a running attempt is killed on its worker."""
        rt.auth.require(authorization, "submit")
        _task(rt, task_id)
        await rt.bus.execute(c.CancelTask(time.time(), task_id))
        return json_response(task_view(rt.state, rt.state.tasks[task_id], now=time.time()))


async def _submit(
    rt: Runtime, tasks: list[c.NewTask], reject_unsatisfiable: bool
) -> list[dict[str, Any]]:
    events = await rt.bus.execute(c.SubmitTasks(time.time(), tasks, reject_unsatisfiable))
    return [
        {"task_id": e.task_id, "status": e.status.value, "duplicate": e.duplicate}
        for e in events
        if isinstance(e, TaskAccepted)
    ]


def _task_list_routes(router: APIRouter, rt: Runtime) -> None:
    """Routes that take a list of task ids in their body."""

    @router.post("/tasks/wait", openapi_extra=request_body(WaitRequest), tags=["tasks"])
    async def wait_for_tasks(request: Request, authorization: Authorization = None) -> Response:
        """Answer once every listed task has finished, or after ``timeout_s``: how many
        are in each status and which are unfinished. One long poll instead of a poll per
        task; ask again with what is unfinished."""
        rt.auth.require(authorization, "read")
        wanted = decode_body(await request.body(), WaitRequest)
        tasks = [_task(rt, task_id) for task_id in wanted.task_ids]
        await rt.waiters.wait([t.id for t in tasks if not t.status.is_terminal], wanted.timeout_s)
        # Looked up again: a node catching up from a snapshot replaces its task records.
        return json_response(wait_view([_task(rt, task_id) for task_id in wanted.task_ids]))

    @router.post("/tasks/lookup", openapi_extra=request_body(LookupRequest), tags=["tasks"])
    async def look_up_tasks(request: Request, authorization: Authorization = None) -> Response:
        """The listed tasks, in the order given, as ``GET /api/tasks/{id}`` shows each:
        one request for a whole batch."""
        rt.auth.require(authorization, "read")
        wanted = decode_body(await request.body(), LookupRequest)
        missing = [t for t in dict.fromkeys(wanted.task_ids) if t not in rt.state.tasks]
        if missing:
            shown = ", ".join(repr(task_id) for task_id in missing[:5])
            raise NotFound(
                f"{len(missing)} of the listed tasks do not exist ({shown}); "
                "list tasks with `dtf tasks`"
            )
        now = time.time()
        tasks = [
            task_view(rt.state, rt.state.tasks[task_id], now=now) for task_id in wanted.task_ids
        ]
        return json_response({"tasks": tasks})


def _task(rt: Runtime, task_id: str) -> Any:
    task = rt.state.tasks.get(task_id)
    if task is None:
        raise NotFound(f"task {task_id!r} does not exist; list tasks with `dtf tasks`")
    return task


def _info_routes(router: APIRouter, rt: Runtime) -> None:
    @router.get("/results", tags=["results"])
    async def results(
        authorization: Authorization = None,
        task_id: str | None = None,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> Response:
        """Every finished attempt's outcome: status, exit code, duration, output tails, metrics, tests."""
        rt.auth.require(authorization, "read")
        return json_response(
            {"results": result_views(rt.state, task_id=task_id, limit=limit, offset=offset)}
        )

    @router.get("/status", tags=["status"])
    async def status(authorization: Authorization = None) -> Response:
        """Counts of tasks and workers by status, and where the data lives."""
        rt.auth.require(authorization, "read")
        return json_response(rt.status())

    @router.post("/keys", status_code=201, openapi_extra=request_body(KeyRequest), tags=["keys"])
    async def create_key(request: Request, authorization: Authorization = None) -> Response:
        """Create an API key for a role (admin only). The key is shown once; only its hash is kept."""
        rt.auth.require(authorization, "admin")
        body = decode_body(await request.body(), KeyRequest)
        key_id, key = auth.new_key()
        await rt.bus.execute(
            c.CreateApiKey(time.time(), key_id, body.role, auth.hash_key(key), body.name)
        )
        return json_response({"key": key, "key_id": key_id, "role": body.role.value}, 201)
