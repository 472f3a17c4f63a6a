"""The worker agent: holds a session with a coordinator and runs what it is given.

One WebSocket carries register, assignments, cancellations, started reports,
outcomes and their acknowledgements; threads of their own renew leases over
HTTP and self-fence attempts whose leases lapse (see ``heartbeat.py``). Every
task runs in its own process group, marked so that the reaper sidecar
kills it should the agent die. Tasks keep running while the connection is down;
their outcomes are kept until acknowledged and sent again after each
reconnect. Connecting, registering and reconnecting (through the coordinator
URLs in turn, with backoff) are in ``session.py``.

An attempt is dropped, with no outcome reported, when the coordinator
cancels it or its lease is fenced: the lease table no longer holds it, and
the lease table is what decides (it is also what heartbeats report).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import msgspec
from websockets.exceptions import ConnectionClosed

from dtf.core.model import Capabilities, FailureKind, LeaseRef, Outcome
from dtf.protocol import (
    Assign,
    Cancel,
    CoordinatorMessage,
    ErrorMessage,
    HealthCheckReport,
    LeasesRenewed,
    OutcomeAck,
    OutcomeReport,
    Register,
    Registered,
    RunHealthCheck,
    WorkerMessage,
    coordinator_frame_decoder,
    frame_messages,
)
from dtf.worker.audit import AuditLog
from dtf.worker.connection import Channel, Endpoints
from dtf.worker.executors import execute
from dtf.worker.fault_actions import FaultInjector
from dtf.worker.health_check import run_health_check
from dtf.worker.heartbeat import HeartbeatThread, Target, Watchdog, kill_fenced
from dtf.worker.leases import FencedLease, LeaseTable
from dtf.worker.observer import AttemptObserver
from dtf.worker.reaper import Reaper
from dtf.worker.session import (
    CLOSE_TIMEOUT_S,
    connect_until_stopped,
    open_connection,
    register,
)
from dtf.worker.settings import WorkerSettings

__all__ = ["WorkerAgent"]

logger = logging.getLogger(__name__)

HEARTBEAT_JOIN_S = 5.0


class WorkerAgent:
    def __init__(
        self, settings: WorkerSettings, capabilities: Capabilities, workdir: Path, reaper: Reaper
    ) -> None:
        self.settings = settings
        self.capabilities = capabilities
        self.workdir = workdir
        self.reaper = reaper
        self.leases = LeaseTable()
        self.running: dict[LeaseRef, asyncio.Task[None]] = {}
        self.unacked: dict[LeaseRef, Outcome] = {}
        self.channel: Channel | None = None
        self.stopping = asyncio.Event()
        self.has_finished_a_task = False
        self.idle_timer: asyncio.TimerHandle | None = None
        self.background: set[asyncio.Task[None]] = set()
        self.faults = (
            FaultInjector(settings.faults, settings.worker_id, self) if settings.faults else None
        )
        self.incarnation = uuid.uuid4().hex
        self.checking_health = False
        self.audit = (
            AuditLog(settings.audit_log, settings.worker_id) if settings.audit_log else None
        )
        loop = asyncio.get_running_loop()

        def on_fenced(fenced: FencedLease) -> None:
            self.note_dropped(fenced.lease, f"self-fenced: {fenced.reason}")
            loop.call_soon_threadsafe(self.on_fenced, fenced)

        self.fence = on_fenced
        self.registration_sent: tuple[list[LeaseRef], float] = ([], 0.0)
        """What this session's registration held, and when it was sent (monotonic)."""
        self.watchdog = Watchdog(self.leases, on_fenced)
        self.heartbeats = HeartbeatThread(
            settings.worker_id,
            settings.api_key,
            self.leases,
            on_fenced=on_fenced,
            on_session_rejected=lambda s: loop.call_soon_threadsafe(self.on_session_rejected, s),
        )

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop, f"{signal.Signals(signum).name} received")
        self.watchdog.start()
        self.heartbeats.start()
        connector = asyncio.create_task(
            connect_until_stopped(self.settings, self.stopping, self.serve)
        )
        stop_requested = asyncio.create_task(self.stopping.wait())
        try:
            await asyncio.wait((connector, stop_requested), return_when=asyncio.FIRST_COMPLETED)
            # A connection being opened or registered is not worth waiting long for.
            await asyncio.wait((connector,), timeout=CLOSE_TIMEOUT_S + 1.0)
        finally:
            for task in (connector, stop_requested):
                task.cancel()
            await asyncio.gather(connector, stop_requested, return_exceptions=True)
            await self.shut_down()
        return 0

    def stop(self, reason: str) -> None:
        if self.stopping.is_set():
            return
        logger.info("worker %s stopping: %s", self.settings.worker_id, reason)
        self.stopping.set()
        if self.channel is not None:
            self.in_background(self.channel.websocket.close())

    # -- connection ----------------------------------------------------------

    async def serve(self, endpoints: Endpoints) -> bool:
        """One connection, from register to close; False when registration failed."""
        async with open_connection(endpoints, self.settings.api_key) as websocket:
            registration, sent_at = self.registration(), time.monotonic()
            registered = await register(websocket, registration)
            self.registration_sent = (registration.held, sent_at)
            if registered is None or self.stopping.is_set():
                return registered is not None
            self.heartbeats.point_at(
                Target(
                    endpoints,
                    registered.session,
                    registered.heartbeat_interval_s,
                    registered.lease_timeout_s,
                )
            )
            await self.hold_session(Channel(websocket, registered.session))
        return True

    def registration(self) -> Register:
        """This worker as it registers: a new session, the attempts it holds and
        the highest fence it was sent (what it was never sent is no crash of its)."""
        held, max_fence_seen = self.leases.held()
        session = uuid.uuid4().hex
        worker_id, slots = self.settings.worker_id, self.settings.slots
        return Register(
            worker_id,
            session,
            self.capabilities,
            slots,
            held,
            self.incarnation,
            self.settings.health_check,
            max_fence_seen,
        )

    async def hold_session(self, channel: Channel) -> None:
        sender = asyncio.create_task(channel.drain())
        self.channel = channel
        for lease, outcome in self.unacked.items():
            channel.send(OutcomeReport(lease, outcome))
        try:
            async for raw in channel.websocket:
                self.on_raw_message(raw)
        except ConnectionClosed as exc:
            logger.warning("connection to the coordinator lost: %s", exc)
        finally:
            self.channel = None
            sender.cancel()

    def send(self, message: WorkerMessage) -> None:
        if self.channel is not None:
            self.channel.send(message)

    # -- coordinator messages ------------------------------------------------

    def on_raw_message(self, raw: str | bytes) -> None:
        try:
            messages = frame_messages(coordinator_frame_decoder.decode(raw))
        except msgspec.DecodeError as exc:
            logger.warning("ignoring unreadable coordinator message: %s", exc)
            return
        for message in messages:
            self.on_message(message)

    def on_message(self, message: CoordinatorMessage) -> None:
        match message:
            case Assign():
                self.on_assign(message)
            case Cancel():
                self.on_cancel(LeaseRef(message.task_id, message.attempt, message.fence))
            case OutcomeAck():
                self.on_outcome_ack(LeaseRef(message.task_id, message.attempt, message.fence))
            case ErrorMessage(lease=None):
                logger.error("coordinator says: %s", message.message)
            case ErrorMessage(lease=lease) if lease is not None:
                self.on_report_refused(lease, message.message)
            case RunHealthCheck():
                self.on_run_health_check(message.reason)
            case LeasesRenewed():
                self.on_leases_renewed(message)
            case Registered():
                logger.debug("ignoring a repeated registered message")

    def on_leases_renewed(self, renewal: LeasesRenewed) -> None:
        """The registration was applied, renewing what the coordinator kept of what it
        held: dated by when it was sent, as a heartbeat's renewals are, so leases stay
        fresh while a restarting coordinator is up too briefly for a heartbeat. A
        running attempt it did not keep is fenced at once."""
        held, sent_at = self.registration_sent
        fenced = self.leases.renew(held, renewal.renewed, sent_at, renewal.lease_timeout_s)
        kill_fenced(fenced, self.fence)

    def on_run_health_check(self, reason: str) -> None:
        command = self.settings.health_check
        if command is None:
            detail = "asked for a health check but none is configured; restart with --health-check"
            self.send(HealthCheckReport(False, detail))
        elif not self.checking_health:
            self.checking_health = True
            self.in_background(self.check_health(command, reason))

    async def check_health(self, command: str, reason: str) -> None:
        logger.info("running the health check (%s): %s", reason, command)
        try:
            timeout_s = self.settings.health_check_timeout_s
            report = await run_health_check(command, timeout_s, self.workdir)
        finally:
            self.checking_health = False
        verdict = "passed" if report.passed else "FAILED"
        logger.info("health check %s in %.1fs: %s", verdict, report.duration_s, report.detail)
        self.send(report)

    def on_assign(self, assign: Assign) -> None:
        lease = assign.lease
        self.leases.see_fence(assign.fence)
        if lease in self.running or lease in self.unacked:
            return
        if self.stopping.is_set():
            logger.info("not taking task %s: stopping", assign.task_id)
            return
        if len(self.running) >= self.settings.slots:
            logger.error(
                "coordinator assigned task %s although all %d slots are busy; not taking it",
                assign.task_id,
                self.settings.slots,
            )
            return
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        self.leases.add(lease, time.monotonic(), assign.lease_timeout_s)
        task = asyncio.create_task(self.run_attempt(assign))
        self.running[lease] = task
        task.add_done_callback(lambda _: self.running.pop(lease, None))

    def on_cancel(self, lease: LeaseRef) -> None:
        task = self.running.get(lease)
        if task is not None and self.leases.remove(lease):
            logger.info("cancelling task %s attempt %d", lease.task_id, lease.attempt)
            self.note_dropped(lease, "cancelled by the coordinator")
            task.cancel()

    def on_outcome_ack(self, lease: LeaseRef) -> None:
        if self.unacked.pop(lease, None) is not None:
            self.leases.remove(lease)
            self.note_if_idle()

    def on_report_refused(self, lease: LeaseRef, reason: str) -> None:
        """The coordinator will never accept this report: stop resending it."""
        logger.error("coordinator refused the report for %s: %s", lease, reason)
        self.on_outcome_ack(lease)

    def on_fenced(self, fenced: FencedLease) -> None:
        task = self.running.get(fenced.lease)
        if task is not None:
            task.cancel()

    def drop_connection(self, reason: str) -> bool:
        """Cut the WebSocket with no closing handshake, as a network fault would;
        False when there was no connection to cut."""
        if self.channel is None:
            return False
        logger.warning("cutting the connection to the coordinator: %s", reason)
        self.channel.websocket.transport.abort()
        return True

    def on_session_rejected(self, session: str) -> None:
        channel = self.channel
        if channel is not None and channel.session == session:
            self.in_background(channel.websocket.close())

    # -- attempts ------------------------------------------------------------

    async def run_attempt(self, assign: Assign) -> None:
        """Run one attempt and report its outcome. Cancelling this task (the
        attempt was cancelled or fenced) kills the attempt and reports nothing."""
        lease = assign.lease
        observer = AttemptObserver(lease, self.reaper, self.leases, self.send, self.audit)
        faults = self.faults.watch(assign, observer) if self.faults else None
        try:
            outcome = await execute(assign, workdir=self.workdir, observer=faults or observer)
        except Exception as exc:  # a bug in an executor ends this attempt, not the agent
            logger.exception("executor failed on task %s attempt %d", lease.task_id, lease.attempt)
            outcome = Outcome(
                failure=FailureKind.EXECUTOR_ERROR, error=f"worker agent error: {exc!r}"
            )
        finally:
            observer.close()
            if faults is not None:
                faults.close()
        if faults is not None:
            outcome = faults.label(outcome)
        self.running.pop(lease, None)
        if self.leases.finish(lease):
            self.unacked[lease] = outcome
            self.has_finished_a_task = True
            self.send(OutcomeReport(lease, outcome))
        self.note_if_idle()

    def note_if_idle(self) -> None:
        """In burst mode, arm the idle timer once nothing is running or unacknowledged."""
        if not self.settings.burst or not self.has_finished_a_task or self.idle_timer is not None:
            return
        if not self.running and not self.unacked:
            self.idle_timer = asyncio.get_running_loop().call_later(
                self.settings.burst_idle_s, self.stop, "burst mode: idle"
            )

    async def shut_down(self) -> None:
        attempts = list(self.running.items())
        for lease, task in attempts:
            self.leases.remove(lease)
            self.note_dropped(lease, "worker stopping")
            task.cancel()
        await asyncio.gather(*(task for _, task in attempts), return_exceptions=True)
        await asyncio.gather(*self.background, return_exceptions=True)
        self.watchdog.stop()
        self.heartbeats.stop(release_all=True)
        self.heartbeats.join(HEARTBEAT_JOIN_S)
        if self.audit is not None:
            self.audit.close()
        logger.info("worker %s stopped", self.settings.worker_id)

    def note_dropped(self, lease: LeaseRef, reason: str) -> None:
        if self.audit is not None:
            self.audit.note_dropped(lease, reason)

    def in_background(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
