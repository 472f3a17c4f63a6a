"""Checkpoint routes: a task's process saves and loads checkpoints.

``POST /api/tasks/{id}/checkpoints?attempt=&fence=[&step=]`` takes the raw
body (``application/json`` for a JSON value, ``application/octet-stream``
for bytes), stores the blob, then journals ``RecordCheckpoint``; a lease that
is no longer current gets 409 and nothing is recorded. ``GET
/api/tasks/{id}/checkpoints/latest`` returns the latest checkpoint's bytes
with its digest, step and attempt in headers; ``GET /api/checkpoints/{digest}``
returns any stored blob (a standalone coordinator deletes superseded ones
after a while: ``checkpoint_sweeper.py``). A task's process authenticates with the attempt's
checkpoint token (see ``checkpoint_grants.py``); a worker or admin key may
save, and any key may read.

In a cluster (``peers`` given) a save is copied to another coordinator before
it is journaled, a blob missing here is fetched from the others, and the
coordinators copy blobs among themselves with ``PUT`` and ``GET
/api/internal/blobs/{digest}`` (admin key only; see ``blob_peers.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated

import msgspec
from fastapi import APIRouter, FastAPI, Header, Query, Request, Response

from dtf.coordinator.blob_peers import BlobPeers, is_blob_of
from dtf.coordinator.checkpoint_grants import TOKEN_PREFIX, GrantIssuer
from dtf.coordinator.checkpoint_store import CheckpointStore
from dtf.coordinator.checkpoint_sweeper import sweep_checkpoints
from dtf.coordinator.responses import json_response
from dtf.coordinator.runtime import Runtime
from dtf.core import commands as c
from dtf.core.model import LeaseRef
from dtf.core.records import CheckpointKind, CheckpointRef, TaskRecord
from dtf.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unauthorized

Authorization = Annotated[str | None, Header()]
ContentType = Annotated[str | None, Header()]

MEDIA_TYPES = {
    CheckpointKind.JSON: "application/json",
    CheckpointKind.BYTES: "application/octet-stream",
}
UNUSED_DIGEST = "0" * 64


def checkpoint_router(
    rt: Runtime, store: CheckpointStore, grants: GrantIssuer, peers: BlobPeers | None = None
) -> APIRouter:
    """The checkpoint routes; with ``peers`` (a cluster node) also the internal blob routes."""
    router = APIRouter(prefix="/api", tags=["checkpoints"], lifespan=_lifespan(rt, store, peers))

    @router.post("/tasks/{task_id}/checkpoints", status_code=201)
    async def save_checkpoint(
        task_id: str,
        request: Request,
        attempt: Annotated[int, Query(ge=1)],
        fence: Annotated[int, Query(ge=1)],
        step: Annotated[int | None, Query(ge=0)] = None,
        authorization: Authorization = None,
        content_type: ContentType = None,
    ) -> Response:
        """Save a checkpoint under lease (attempt, fence); 409 if that lease is no longer current."""
        lease = LeaseRef(task_id, attempt, fence)
        _authorize(rt, grants, authorization, task_id, "work", lease=lease)
        kind = kind_of(content_type)
        worker_id = holder_of(_task(rt, task_id), attempt)
        rt.state.check(c.RecordCheckpoint(time.time(), worker_id, lease, UNUSED_DIGEST, 0, kind))
        data = await read_body(request, store)
        if kind is CheckpointKind.JSON:
            check_json(data)
        digest = await asyncio.to_thread(store.put, data)
        if peers is not None:
            await peers.replicate(digest, data)
        command = c.RecordCheckpoint(time.time(), worker_id, lease, digest, len(data), kind, step)
        await rt.bus.execute(command)
        saved = rt.state.tasks[task_id].attempts[attempt - 1].last_checkpoint
        return json_response({"task_id": task_id, **msgspec.to_builtins(saved)}, 201)

    @router.get("/tasks/{task_id}/checkpoints/latest")
    async def latest_checkpoint(task_id: str, authorization: Authorization = None) -> Response:
        """The task's latest checkpoint: raw bytes, with X-Dtf-Checkpoint-* headers."""
        _authorize(rt, grants, authorization, task_id, "read")
        checkpoint = _task(rt, task_id).checkpoint
        if checkpoint is None:
            raise NotFound(f"task {task_id!r} has no checkpoint yet")
        data = await load_blob(store, peers, checkpoint.digest)
        return Response(data, media_type=MEDIA_TYPES[checkpoint.kind], headers=headers(checkpoint))

    @router.get("/checkpoints/{digest}")
    async def checkpoint_blob(digest: str, authorization: Authorization = None) -> Response:
        """A stored checkpoint blob by its SHA-256."""
        rt.auth.require(authorization, "read")
        data = await load_blob(store, peers, digest)
        return Response(data, media_type=MEDIA_TYPES[CheckpointKind.BYTES])

    if peers is not None:
        _add_internal_routes(router, rt, store)
    return router


def _add_internal_routes(router: APIRouter, rt: Runtime, store: CheckpointStore) -> None:
    """What coordinators of one cluster ask each other: blobs from this node's store only."""

    @router.put("/internal/blobs/{digest}", tags=["internal"])
    async def store_blob(
        digest: str, request: Request, authorization: Authorization = None
    ) -> Response:
        """Store a peer's copy of a blob (admin key); storing it again changes nothing."""
        rt.auth.require(authorization, "admin")
        data = await read_body(request, store)
        if not is_blob_of(digest, data):
            raise InvalidRequest(
                f"the {len(data)} bytes sent are not blob {digest} (their SHA-256 differs); "
                "send the blob's exact bytes",
                field="body",
            )
        await asyncio.to_thread(store.put, data)
        return json_response({"digest": digest, "bytes": len(data)}, 201)

    @router.get("/internal/blobs/{digest}", tags=["internal"])
    async def stored_blob(digest: str, authorization: Authorization = None) -> Response:
        """A blob if this node stores it (admin key); never asks other nodes."""
        rt.auth.require(authorization, "admin")
        data = await asyncio.to_thread(store.get, digest)
        return Response(data, media_type=MEDIA_TYPES[CheckpointKind.BYTES])


def _lifespan(
    rt: Runtime, store: CheckpointStore, peers: BlobPeers | None
) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    """A standalone coordinator sweeps superseded blobs while serving (see
    ``checkpoint_sweeper.py`` for why a cluster node does not); a cluster node
    closes its peers' connections after."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if peers is not None:
            try:
                yield
            finally:
                await peers.close()
            return
        sweeping = asyncio.create_task(
            sweep_checkpoints(
                store,
                lambda: rt.state.tasks.values(),
                interval_s=rt.settings.checkpoint_sweep_interval_s,
                grace_s=rt.settings.checkpoint_grace_s,
            ),
            name="dtf-checkpoint-sweep",
        )
        try:
            yield
        finally:
            sweeping.cancel()
            await asyncio.gather(sweeping, return_exceptions=True)

    return lifespan


async def load_blob(store: CheckpointStore, peers: BlobPeers | None, digest: str) -> bytes:
    """A blob from this node's store, else (in a cluster) from a peer's."""
    try:
        return await asyncio.to_thread(store.get, digest)
    except NotFound:
        if peers is None:
            raise
    return await peers.fetch(digest)


def _authorize(
    rt: Runtime,
    grants: GrantIssuer,
    authorization: str | None,
    task_id: str,
    permission: str,
    *,
    lease: LeaseRef | None = None,
) -> None:
    """A checkpoint token for this task (and lease, when saving), or an API key
    with ``permission``."""
    token = (authorization or "")[7:].strip()
    if not token.startswith(f"{TOKEN_PREFIX}_"):
        rt.auth.require(authorization, permission)
        return
    granted = grants.lease_of(task_id, token)
    if granted is None:
        raise Unauthorized(f"the checkpoint token is not valid for task {task_id!r}")
    if lease is not None and granted != lease:
        raise Forbidden(
            f"the checkpoint token is for attempt {granted.attempt} (fence {granted.fence}), "
            f"not attempt {lease.attempt} (fence {lease.fence})"
        )


def _task(rt: Runtime, task_id: str) -> TaskRecord:
    task = rt.state.tasks.get(task_id)
    if task is None:
        raise NotFound(f"task {task_id!r} does not exist")
    return task


def holder_of(task: TaskRecord, attempt: int) -> str:
    if not 1 <= attempt <= len(task.attempts):
        raise Conflict(f"task {task.id!r} has no attempt {attempt}")
    return task.attempts[attempt - 1].worker_id


def kind_of(content_type: str | None) -> CheckpointKind:
    media_type = (content_type or "application/octet-stream").split(";")[0].strip().lower()
    for kind, known in MEDIA_TYPES.items():
        if media_type == known:
            return kind
    raise InvalidRequest(
        f"checkpoint content type {media_type!r} is not accepted; send "
        "application/octet-stream for bytes or application/json for a JSON value",
        field="content-type",
    )


async def read_body(request: Request, store: CheckpointStore) -> bytes:
    """The body, refused with 413 as soon as it outgrows the store's limit."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit():
        store.check_size(int(declared))
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        store.check_size(len(body))
    return bytes(body)


def check_json(data: bytes) -> None:
    try:
        msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise InvalidRequest(
            f"checkpoint sent as application/json is not valid JSON: {exc}", field="body"
        ) from None


def headers(checkpoint: CheckpointRef) -> dict[str, str]:
    found = {
        "X-Dtf-Checkpoint-Digest": checkpoint.digest,
        "X-Dtf-Checkpoint-Attempt": str(checkpoint.attempt),
        "X-Dtf-Checkpoint-Kind": checkpoint.kind.value,
    }
    if checkpoint.step is not None:
        found["X-Dtf-Checkpoint-Step"] = str(checkpoint.step)
    return found
