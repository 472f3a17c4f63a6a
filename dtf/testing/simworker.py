"""A simulated worker agent that behaves like the real one, on a simulated clock.

It registers with what it still holds, plays each assignment as the fault
model says (``simfaults``: a duration and an outcome, or taking the whole
worker down), reports Started and the outcome (resending the outcome until it is
acknowledged), heartbeats every interval with its held leases and
``max_fence_seen``, and self-fences: it drops an attempt the moment its lease
may have expired, counted conservatively from when the coordinator granted or
renewed it. ``ExecutionLog`` records what actually ran where, so the
simulation can check that two attempts of one task never executed at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from dtf import protocol as p
from dtf.core.model import Capabilities, LeaseRef, Outcome
from dtf.testing.simfaults import FaultModel
from dtf.testing.simnet import Envelope, Network, ToCoordinator


@dataclass
class Execution:
    task_id: str
    worker_id: str
    fence: int
    started_at: float
    ended_at: float | None = None
    ending: str = ""


class ExecutionLog:
    def __init__(self) -> None:
        self.live: dict[str, Execution] = {}
        self.history: list[Execution] = []

    def begin(self, task_id: str, worker_id: str, fence: int, now: float) -> Execution:
        other = self.live.get(task_id)
        if other is not None:
            raise AssertionError(
                f"task {task_id}: fence {fence} started on {worker_id} at {now:.2f} while "
                f"fence {other.fence} has been executing on {other.worker_id} "
                f"since {other.started_at:.2f}"
            )
        execution = Execution(task_id, worker_id, fence, now)
        self.live[task_id] = execution
        self.history.append(execution)
        return execution

    def end(self, execution: Execution, now: float, ending: str) -> None:
        execution.ended_at, execution.ending = now, ending
        del self.live[execution.task_id]


@dataclass(frozen=True)
class WorkerTimings:
    lease_timeout_s: float
    heartbeat_interval_s: float


@dataclass
class Running:
    lease: LeaseRef
    finish_at: float
    deadline: float
    outcome: Outcome
    execution: Execution
    crashes_worker: bool = False


class SimWorker:
    def __init__(
        self,
        worker_id: str,
        capabilities: Capabilities,
        slots: int,
        *,
        timings: WorkerTimings,
        faults: FaultModel,
        network: Network,
        log: ExecutionLog,
        rng: random.Random,
    ) -> None:
        self.id, self.capabilities, self.slots = worker_id, capabilities, slots
        self.timings, self.network, self.log, self.rng = timings, network, log, rng
        self.faults = faults
        self.is_alive = True
        self.session: str | None = None
        self.session_count = 0
        self.is_registered = False
        self.reconnect_at: float = 0.0
        self.next_heartbeat_at = 0.0
        self.max_fence_seen = 0
        self.incarnation = 0  # the agent process: a crash or restart starts another
        self.running: dict[int, Running] = {}
        self.unacked: dict[int, tuple[LeaseRef, Outcome]] = {}
        self.produced: dict[int, Outcome] = {}
        self.poison_crashes: list[tuple[float, str | None]] = []
        """When a task took this worker down, and the session it had; the
        simulation drains it to revive the worker and close the connection."""

    # -- faults ------------------------------------------------------------

    def crash(self, now: float) -> None:
        """The machine dies: running attempts die with it, memory is lost."""
        for running in self.running.values():
            self.log.end(running.execution, now, "crashed")
        self.running.clear()
        self.unacked.clear()
        self.is_alive, self.session, self.is_registered = False, None, False
        self.max_fence_seen = 0
        self.incarnation += 1

    def boot(self, now: float) -> None:
        self.is_alive, self.reconnect_at = True, now

    def restart_agent(self, now: float) -> None:
        """The agent restarts; some executors survive it and are held on re-register."""
        for fence, running in list(self.running.items()):
            if self.rng.random() < 0.5:
                self.log.end(running.execution, now, "killed by agent restart")
                del self.running[fence]
        self.incarnation += 1
        self.drop_connection(now, reconnect_after_s=self.rng.uniform(0.5, 3.0))

    def drop_connection(self, now: float, reconnect_after_s: float) -> None:
        self.session, self.is_registered = None, False
        self.reconnect_at = now + reconnect_after_s

    # -- the clock -----------------------------------------------------------

    def step(self, now: float) -> None:
        if not self.is_alive:
            return
        self.fence_and_finish(now)
        if not self.is_alive:
            return
        if self.session is None:
            if now >= self.reconnect_at and self.network.is_up(self.id, now):
                self.connect(now)
        elif self.is_registered and now >= self.next_heartbeat_at:
            self.heartbeat(now)
            self.resend_outcomes(now)

    def fence_and_finish(self, now: float) -> None:
        for fence, running in list(self.running.items()):
            if now >= running.deadline:
                self.log.end(running.execution, now, "self-fenced")
                del self.running[fence]
            elif now >= running.finish_at and running.crashes_worker:
                self.poison_crashes.append((now, self.session))
                self.crash(now)
                return
            elif now >= running.finish_at:
                ending = "failed" if running.outcome.failure else "succeeded"
                self.log.end(running.execution, now, ending)
                del self.running[fence]
                self.unacked[fence] = (running.lease, running.outcome)
                self.send(now, p.OutcomeReport(running.lease, running.outcome))

    def connect(self, now: float) -> None:
        self.session_count += 1
        self.session = f"{self.id}/{self.session_count}"
        register = p.Register(
            self.id,
            self.session,
            self.capabilities,
            self.slots,
            self.held(),
            incarnation=f"{self.id}#{self.incarnation}",
            max_fence_seen=self.max_fence_seen,
        )
        self.network.send(now, Envelope(self.id, self.session, now, register))

    def held(self) -> list[LeaseRef]:
        return [r.lease for r in self.running.values()] + [ref for ref, _ in self.unacked.values()]

    def heartbeat(self, now: float) -> None:
        assert self.session is not None
        self.next_heartbeat_at = now + self.timings.heartbeat_interval_s
        self.send(now, p.HeartbeatRequest(self.session, self.held(), self.max_fence_seen))

    def resend_outcomes(self, now: float) -> None:
        for ref, outcome in self.unacked.values():
            self.send(now, p.OutcomeReport(ref, outcome))

    def send(self, now: float, payload: ToCoordinator) -> None:
        """Reports made while not registered are not sent; outcomes go out again on register."""
        if self.session is None or not self.is_registered:
            return
        self.network.send(now, Envelope(self.id, self.session, now, payload), may_duplicate=True)

    # -- messages ------------------------------------------------------------

    def receive(self, now: float, envelope: Envelope) -> None:
        """Messages for an older connection are dropped, as a closed socket would."""
        if not self.is_alive or envelope.session != self.session:
            return
        handler = getattr(self, f"on_{type(envelope.payload).__name__.lower()}")
        handler(now, envelope)

    def on_registered(self, now: float, envelope: Envelope) -> None:
        self.is_registered, self.next_heartbeat_at = True, now
        self.resend_outcomes(now)

    def on_assign(self, now: float, envelope: Envelope) -> None:
        assign = envelope.payload
        assert isinstance(assign, p.Assign)
        self.max_fence_seen = max(self.max_fence_seen, assign.fence)
        deadline = envelope.sent_at + self.timings.lease_timeout_s
        if now >= deadline or assign.fence in self.running or assign.fence in self.unacked:
            return
        run = self.faults.run(assign.spec, self.id, self.capabilities, now, self.rng)
        if not run.crashes_worker:
            self.produced[assign.fence] = run.outcome
        execution = self.log.begin(assign.task_id, self.id, assign.fence, now)
        self.running[assign.fence] = Running(
            assign.lease, now + run.duration_s, deadline, run.outcome, execution, run.crashes_worker
        )
        self.send(now, p.Started(assign.lease))

    def on_cancel(self, now: float, envelope: Envelope) -> None:
        cancel = envelope.payload
        assert isinstance(cancel, p.Cancel)
        running = self.running.pop(cancel.fence, None)
        if running is not None:
            self.log.end(running.execution, now, "cancelled")

    def on_outcomeack(self, now: float, envelope: Envelope) -> None:
        ack = envelope.payload
        assert isinstance(ack, p.OutcomeAck)
        self.unacked.pop(ack.fence, None)

    def on_heartbeatreply(self, now: float, envelope: Envelope) -> None:
        reply = envelope.payload
        assert isinstance(reply, p.HeartbeatReply) and envelope.request_sent_at is not None
        renewed_until = envelope.request_sent_at + self.timings.lease_timeout_s
        for ref in reply.renewed:
            running = self.running.get(ref.fence)
            if running is not None:
                running.deadline = max(running.deadline, renewed_until)

    def on_errormessage(self, now: float, envelope: Envelope) -> None:
        """The coordinator refused this session (409): reconnect and register."""
        self.drop_connection(now, reconnect_after_s=0.0)
