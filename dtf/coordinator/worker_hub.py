"""Worker connections: one WebSocket per worker session.

Inbound messages become commands on the bus without waiting for each to be
journaled (the bus keeps their order), so a worker's stream of started and
outcome reports is written in batches. Outbound messages (assignments,
cancellations, outcome acknowledgements) come from bus events and go through
a per-connection queue drained by its own sender task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import msgspec
from starlette.websockets import WebSocket, WebSocketDisconnect

from dtf import protocol as p
from dtf.coordinator.bus import Bus
from dtf.coordinator.checkpoint_grants import GrantIssuer
from dtf.core import commands as c
from dtf.core.events import AssignTask, CancelAttempt, Event, OutcomeAccepted, RunHealthCheck
from dtf.core.model import LeaseRef
from dtf.core.records import TaskRecord
from dtf.errors import DtfError

log = logging.getLogger(__name__)


class _Connection:
    def __init__(self, websocket: WebSocket, worker_id: str, session: str) -> None:
        self.websocket = websocket
        self.worker_id = worker_id
        self.session = session
        # The URL the worker reached us at, as http(s) ("ws" -> "http", "wss" -> "https").
        self.base_url = str(websocket.base_url).replace("ws", "http", 1).rstrip("/")
        self.outbox: asyncio.Queue[p.CoordinatorMessage | None] = asyncio.Queue()

    def send(self, message: p.CoordinatorMessage) -> None:
        self.outbox.put_nowait(message)

    async def drain(self) -> None:
        while (first := await self.outbox.get()) is not None:
            batch = p.take_queued(self.outbox, first)
            closing = None in batch
            messages = [m for m in batch if m is not None]
            await self.websocket.send_text(p.encode_frame(messages).decode())
            if closing:
                return


def lease_to_hand_out_s(task: TaskRecord, now: float, heartbeat_interval_s: float) -> float | None:
    """What the task's lease has left at ``now`` (wall clock, as the state's times
    are): what an assignment tells the worker, so that one sent late cannot outlive
    the lease the coordinators hold. None when the lease is gone or has no more than
    a heartbeat interval left: the worker could not renew it in time, and the
    coordinators will expire it and run the task elsewhere."""
    if task.lease is None:
        return None
    left_s = task.lease.expires_at - now
    return left_s if left_s > heartbeat_interval_s else None


class WorkerHub:
    def __init__(
        self,
        bus: Bus,
        *,
        lease_timeout_s: float,
        heartbeat_interval_s: float,
        grants: GrantIssuer | None = None,
        node_id: str = "",
        node_incarnation: str = "",
    ) -> None:
        self.bus = bus
        self.grants = grants
        # journaled with each registration and heartbeat; "" when standalone
        self.node_id, self.node_incarnation = node_id, node_incarnation
        self.lease_timeout_s = lease_timeout_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self._connections: dict[str, _Connection] = {}
        # Set by whoever runs the server: true once it is shutting down. A connection
        # this process closes then is not the worker's failure, so it is not journaled.
        self.is_stopping: Callable[[], bool] = lambda: False
        bus.subscribe(self.on_events)

    def on_events(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, AssignTask):
                self._send_assign(event)
            elif isinstance(event, CancelAttempt):
                self._send(event.worker_id, p.Cancel(event.task_id, event.attempt, event.fence))
            elif isinstance(event, OutcomeAccepted):
                self._send(event.worker_id, p.OutcomeAck(event.task_id, event.attempt, event.fence))
            elif isinstance(event, RunHealthCheck):
                self._send(event.worker_id, p.RunHealthCheck(event.reason))

    def _send_assign(self, event: AssignTask) -> None:
        """An assignment, with the checkpoint grant for its process when there are grants,
        and what its lease has left (none when ``lease_to_hand_out_s`` says so)."""
        connection = self._connections.get(event.worker_id)
        if connection is None or not self._is_current(event, connection):
            return
        task = self.bus.state.tasks[event.task_id]
        left_s = lease_to_hand_out_s(task, time.time(), self.heartbeat_interval_s)
        if left_s is None:
            return
        lease = LeaseRef(event.task_id, event.attempt, event.fence)
        grant = self.grant(lease, connection.base_url)
        connection.send(
            p.Assign(lease.task_id, lease.attempt, lease.fence, event.spec, left_s, grant)
        )

    def grant(self, lease: LeaseRef, base_url: str) -> p.CheckpointGrant | None:
        """The checkpoint grant for ``lease``'s process, reached at ``base_url``; None
        when this coordinator issues no grants."""
        return self.grants.grant(self.bus.state, lease, base_url) if self.grants else None

    def _is_current(self, event: AssignTask, connection: _Connection) -> bool:
        """Whether the assignment still stands once its whole batch is applied, and
        the state has applied this connection's registration. A cluster node catching
        up on the log applies assignments whose leases later entries already ended;
        and an assignment made before this session registered is settled by the
        registration (kept if the worker holds it, ended if not), never sent late."""
        state = self.bus.state
        worker = state.workers.get(event.worker_id)
        if worker is None or worker.session != connection.session:
            return False
        task = state.tasks.get(event.task_id)
        lease = None if task is None else task.lease
        return lease is not None and (lease.attempt, lease.fence) == (event.attempt, event.fence)

    def _send(self, worker_id: str, message: p.CoordinatorMessage) -> None:
        connection = self._connections.get(worker_id)
        if connection is not None:
            connection.send(message)

    async def serve(self, websocket: WebSocket) -> None:
        """Run one worker connection until it closes."""
        await websocket.accept()
        raw = await _receive_payload(websocket)
        if raw is None:
            return
        try:
            first = p.worker_message_decoder.decode(raw)
        except msgspec.DecodeError as exc:
            await _refuse(websocket, f"expected a register message first: {exc}")
            return
        if not isinstance(first, p.Register):
            await _refuse(
                websocket, f"expected a register message first, got {type(first).__name__}"
            )
            return
        connection = _Connection(websocket, first.worker_id, first.session)
        sender = asyncio.create_task(connection.drain(), name=f"dtf-send-{first.worker_id}")
        try:
            if await self._register(connection, first):
                await self._receive(connection)
        finally:
            await self._close(connection, sender)

    def registration(self, message: p.Register) -> c.RegisterWorker:
        """The command registering ``message``'s worker through this node."""
        return c.RegisterWorker(
            time.time(),
            message.worker_id,
            message.session,
            message.capabilities,
            message.slots,
            message.held,
            message.incarnation,
            message.health_check,
            self.node_id,
            self.node_incarnation,
            message.max_fence_seen,
        )

    async def _register(self, connection: _Connection, message: p.Register) -> bool:
        command = self.registration(message)
        try:
            self.bus.state.check(command)
        except DtfError as exc:
            connection.send(p.ErrorMessage(exc.message))
            return False
        previous = self._connections.get(message.worker_id)
        if previous is not None:
            previous.send(p.ErrorMessage("replaced by a newer connection of this worker"))
            previous.outbox.put_nowait(None)
        self._connections[message.worker_id] = connection
        connection.send(
            p.Registered(
                message.worker_id, message.session, self.lease_timeout_s, self.heartbeat_interval_s
            )
        )
        await self.bus.execute(command)
        if message.held:
            renewed = self.bus.state.current_lease_refs(message.worker_id, message.held)
            connection.send(p.LeasesRenewed(renewed, self.lease_timeout_s))
        log.info("worker %s connected", message.worker_id, extra={"event": "worker_connected"})
        return True

    async def _receive(self, connection: _Connection) -> None:
        while (raw := await _receive_payload(connection.websocket)) is not None:
            try:
                messages = p.frame_messages(p.worker_frame_decoder.decode(raw))
            except msgspec.DecodeError as exc:
                connection.send(p.ErrorMessage(f"unreadable message ignored: {exc}"))
                continue
            for message in messages:
                self._dispatch(connection, message)

    def _dispatch(self, connection: _Connection, message: p.WorkerMessage) -> None:
        now = time.time()
        if isinstance(message, p.Started):
            command: c.Command = c.TaskStarted(
                now, connection.worker_id, message.lease, message.ran_for_s
            )
        elif isinstance(message, p.OutcomeReport):
            command = c.ReportOutcome(now, connection.worker_id, message.lease, message.outcome)
        elif isinstance(message, p.HealthCheckReport):
            self._report_health_check(connection, message)
            return
        else:
            connection.send(p.ErrorMessage("already registered on this connection"))
            return
        try:
            future = self.bus.enqueue(command)
        except DtfError as exc:
            connection.send(_refusal(exc, message.lease))
            return
        future.add_done_callback(lambda f: _report_failure(connection, message.lease, f))

    def _report_health_check(self, connection: _Connection, report: p.HealthCheckReport) -> None:
        command = c.ReportHealthCheck(
            time.time(),
            connection.worker_id,
            connection.session,
            report.passed,
            report.detail,
            report.duration_s,
        )
        try:
            future = self.bus.enqueue(command)
        except DtfError as exc:
            connection.send(p.ErrorMessage(exc.message))
            return
        future.add_done_callback(lambda f: _report_failure(connection, None, f))

    async def _close(self, connection: _Connection, sender: asyncio.Task[None]) -> None:
        """Forget the connection and journal the disconnect, unless this process is
        stopping: a restart journals the lost connections itself (``CoordinatorStarted``),
        and in a cluster the leader strands the workers of a node that left
        (``CoordinatorNodeLost``), both without charging the workers' health."""
        stopping = self.is_stopping()
        if self._connections.get(connection.worker_id) is connection:
            del self._connections[connection.worker_id]
            if not stopping:
                await self._journal_disconnect(connection)
        connection.outbox.put_nowait(None)
        sender.cancel()
        log.info(
            "worker %s disconnected%s",
            connection.worker_id,
            " (this coordinator is stopping)" if stopping else "",
            extra={"event": "worker_disconnected"},
        )

    async def _journal_disconnect(self, connection: _Connection) -> None:
        try:
            await self.bus.execute(
                c.WorkerDisconnected(time.time(), connection.worker_id, connection.session)
            )
        except DtfError as exc:
            log.warning("could not record disconnect of %s: %s", connection.worker_id, exc)


def _report_failure(
    connection: _Connection, lease: LeaseRef | None, future: asyncio.Future[list[Event]]
) -> None:
    if future.cancelled():
        return
    exc = future.exception()
    if isinstance(exc, DtfError):
        connection.send(_refusal(exc, lease))
    elif exc is not None:
        log.error("command from %s failed", connection.worker_id, exc_info=exc)


def _refusal(exc: DtfError, lease: LeaseRef | None) -> p.ErrorMessage:
    """Name the lease when retrying cannot help (a 4xx), not when the
    coordinator is only unavailable for now."""
    final = exc.status_code < 500
    return p.ErrorMessage(exc.message, lease if final else None)


async def _receive_payload(websocket: WebSocket) -> bytes | None:
    """The next frame's payload, text or binary; None once the peer is gone."""
    try:
        message = await websocket.receive()
    except (WebSocketDisconnect, RuntimeError):
        return None
    if message["type"] == "websocket.disconnect":
        return None
    if message.get("bytes") is not None:
        return bytes(message["bytes"])
    return str(message.get("text") or "").encode()


async def _refuse(websocket: WebSocket, reason: str) -> None:
    try:
        await websocket.send_text(p.json_encoder.encode(p.ErrorMessage(reason)).decode())
        await websocket.close(code=1008)
    except (WebSocketDisconnect, RuntimeError):
        pass
