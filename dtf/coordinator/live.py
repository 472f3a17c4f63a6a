"""The live channel ``/ws``: requests answered, applied changes pushed as they happen.

How this works: a client authenticates with an ``Authorization`` header or,
where it cannot set one (a browser), with an ``authenticate`` message first.
It then sends requests (``get_status``, ``get_cluster_status``,
``get_aggregated_results``) and subscribes to topics (tasks, workers, breakers,
cluster). The channel is a bus subscriber: every applied batch of events is
turned into update messages. It also listens to the cluster view, whose
``cluster_status_update`` and ``leadership_update`` go out as they are; a new
``cluster`` subscriber gets both at once, so it starts from the current state.
Messages are put on each subscribed client's bounded outbox, never awaited, so
a slow client cannot hold up the coordinator; one that falls ``OUTBOX_LIMIT``
messages behind is disconnected (close code 1013, "try again later") and may
reconnect and re-read the state. Request errors are answered with an
``error`` message and the connection stays open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import msgspec
from fastapi import WebSocket, WebSocketDisconnect

from dtf.cluster.view import (
    LEADERSHIP_UPDATE,
    STATUS_UPDATE,
    ClusterView,
    UpdateKind,
    leadership_json,
    status_json,
)
from dtf.coordinator.live_messages import (
    Authenticate,
    ClientMessage,
    GetAggregatedResults,
    GetClusterStatus,
    GetStatus,
    Subscribe,
    Topic,
    Unsubscribe,
    client_message_decoder,
)
from dtf.coordinator.runtime import Runtime
from dtf.core.events import (
    AttemptFinished,
    BreakerChanged,
    Event,
    TaskAccepted,
    TaskStatusChanged,
    WorkerHealthChanged,
    WorkerStatusChanged,
)
from dtf.core.records import TaskStatus
from dtf.errors import DtfError, Unauthorized
from dtf.results.queries import Filters, aggregate
from dtf.results.reads import ResultsReads

log = logging.getLogger(__name__)

OUTBOX_LIMIT = 10_000
AUTHENTICATE_TIMEOUT_S = 10.0
TRY_AGAIN_LATER = 1013
POLICY_VIOLATION = 1008
_encoder = msgspec.json.Encoder()

Message = dict[str, Any]


@dataclass(eq=False)
class _Client:
    websocket: WebSocket
    topics: set[Topic] = field(default_factory=set)
    outbox: asyncio.Queue[Message] = field(default_factory=lambda: asyncio.Queue(OUTBOX_LIMIT))
    sender: asyncio.Task[None] | None = None
    closing: asyncio.Task[None] | None = None

    def send(self, message: Message) -> bool:
        """Queue ``message``; False when the client has fallen too far behind."""
        try:
            self.outbox.put_nowait(message)
        except asyncio.QueueFull:
            return False
        return True

    async def drain(self) -> None:
        while True:
            message = await self.outbox.get()
            await self.websocket.send_text(_encoder.encode(message).decode())

    def abandon(self) -> None:
        """Stop sending and close: the client re-reads the state when it reconnects."""
        if self.sender is not None:
            self.sender.cancel()
        reason = "fell too far behind; reconnect"
        self.closing = asyncio.create_task(_close(self.websocket, TRY_AGAIN_LATER, reason))


class LiveChannel:
    def __init__(self, runtime: Runtime, results: ResultsReads, cluster: ClusterView) -> None:
        self.runtime = runtime
        self.results = results
        self.cluster = cluster
        self.clients: set[_Client] = set()
        runtime.bus.subscribe(self.on_events)
        cluster.subscribe(self.on_cluster)

    def on_events(self, events: list[Event]) -> None:
        if self.clients:
            self.broadcast([u for u in map(update_of, events) if u is not None])

    def on_cluster(self, kind: UpdateKind, payload: dict[str, Any]) -> None:
        if self.clients:
            self.broadcast([(Topic.CLUSTER, _update(kind, **payload))])

    def broadcast(self, updates: list[tuple[Topic, Message]]) -> None:
        for client in list(self.clients):
            wanted = (message for topic, message in updates if topic in client.topics)
            if not all(client.send(message) for message in wanted):
                self.clients.discard(client)
                client.abandon()

    async def serve(self, websocket: WebSocket) -> None:
        await websocket.accept()
        if not await self.authenticate(websocket):
            return
        client = _Client(websocket)
        client.sender = asyncio.create_task(client.drain(), name="dtf-live-send")
        self.clients.add(client)
        try:
            await self.receive(client)
        finally:
            self.clients.discard(client)
            client.sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await client.sender

    async def authenticate(self, websocket: WebSocket) -> bool:
        header = websocket.headers.get("authorization")
        try:
            if header is None:
                raw = await asyncio.wait_for(websocket.receive_text(), AUTHENTICATE_TIMEOUT_S)
                first = client_message_decoder.decode(raw)
                if not isinstance(first, Authenticate):
                    raise Unauthorized("send an authenticate message with your API key first")
                header = f"Bearer {first.key}"
            self.runtime.auth.require(header, "read")
        except (DtfError, msgspec.DecodeError, TimeoutError) as exc:
            reason = exc.message if isinstance(exc, DtfError) else "authenticate first"
            await _close(websocket, POLICY_VIOLATION, reason)
            return False
        except WebSocketDisconnect:
            return False
        await websocket.send_text(_encoder.encode({"type": "authenticated"}).decode())
        return True

    async def receive(self, client: _Client) -> None:
        while True:
            try:
                raw = await client.websocket.receive_text()
            except (WebSocketDisconnect, RuntimeError):
                return
            if not all(map(client.send, await self.replies(client, raw))):
                return

    async def replies(self, client: _Client, raw: str) -> list[Message]:
        """The answer to one request, followed by the current cluster state for a
        new ``cluster`` subscription."""
        try:
            message = client_message_decoder.decode(raw)
        except msgspec.DecodeError as exc:
            return [{"type": "error", "request_id": None, "message": str(exc)}]
        was_subscribed = Topic.CLUSTER in client.topics
        reply = await self.answer(client, message)
        if was_subscribed or Topic.CLUSTER not in client.topics:
            return [reply]
        return [reply, *self.cluster_updates()]

    def cluster_updates(self) -> list[Message]:
        status = status_json(self.cluster.status())
        leadership = leadership_json(self.cluster.leadership())
        return [_update(STATUS_UPDATE, **status), _update(LEADERSHIP_UPDATE, **leadership)]

    async def answer(self, client: _Client, message: ClientMessage) -> Message:
        reply: Message
        try:
            reply = await self.reply_to(client, message)
        except DtfError as exc:
            reply = {"type": "error", "message": exc.message}
        except Exception:
            log.exception("live channel request %s failed", type(message).__name__)
            reply = {"type": "error", "message": "internal error; see the coordinator log"}
        return {**reply, "request_id": message.request_id}

    async def reply_to(self, client: _Client, message: ClientMessage) -> Message:
        match message:
            case GetStatus():
                return {"type": "status", **self.runtime.status()}
            case GetClusterStatus():
                return {"type": "cluster_status", **status_json(self.cluster.status())}
            case GetAggregatedResults():
                filters = Filters(metric=message.metric, run_id=message.run_id, since=message.since)
                groups = await self.results.run(
                    lambda cursor: aggregate(cursor, message.by, filters)
                )
                by, metric = message.by, message.metric
                return {"type": "aggregated_results", "by": by, "metric": metric, "groups": groups}
            case Subscribe():
                client.topics.update(message.topics)
                return {"type": "subscribed", "topics": sorted(client.topics)}
            case Unsubscribe():
                client.topics.difference_update(message.topics)
                return {"type": "subscribed", "topics": sorted(client.topics)}
            case Authenticate():
                self.runtime.auth.require(f"Bearer {message.key}", "read")
                return {"type": "authenticated"}


def update_of(event: Event) -> tuple[Topic, Message] | None:
    """The pushed message for an event, with its topic; None for events no one watches."""
    match event:
        case TaskAccepted(task_id=task_id, status=status, duplicate=False):
            return Topic.TASKS, _update("task_submitted", task_id=task_id, status=status)
        case TaskStatusChanged(old=TaskStatus.BLOCKED, reason=None):
            return None  # a new task leaving its initial status: task_submitted says it
        case TaskStatusChanged():
            fields = {"task_id": event.task_id, "old": event.old, "new": event.new}
            return Topic.TASKS, _update("task_status_update", reason=event.reason, **fields)
        case AttemptFinished():
            return Topic.TASKS, _update("attempt_finished", **msgspec.structs.asdict(event))
        case WorkerStatusChanged():
            return Topic.WORKERS, _update("worker_status_update", **msgspec.structs.asdict(event))
        case WorkerHealthChanged():
            return Topic.WORKERS, _update("worker_health_update", **msgspec.structs.asdict(event))
        case BreakerChanged():
            return Topic.BREAKERS, _update("breaker_update", **msgspec.structs.asdict(event))
    return None


def _update(kind: str, **fields: Any) -> Message:
    return {"type": kind, **fields}


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        await websocket.close(code=code, reason=reason[:120])
