"""The simulated coordinator shell around the real ``State``.

Like the real one it journals its settings first (``Configure``), so the
journal replays alike on any state, stamps each message with its own clock
on arrival, journals every command (in the journal's byte format) before
acting on it,
checks the retry budget's bound after it and counts the breakers it opened,
pushes assignments, cancels and acks down the worker's connection, answers
heartbeats with the leases it renewed, and ticks when ``next_deadline`` is due.
A restart rebuilds the state from the last snapshot plus the journal tail,
checks it against the state it had, and applies ``CoordinatorStarted``.

It also plays a cluster of ``nodes``: each worker is connected through one
(``node_of``), which the registrations and heartbeats it journals name, with
an incarnation that changes at each restart. A node cut off from the cluster
journals nothing for its workers; the leader journals its loss
(``CoordinatorNodeLost``) once its registry record would have expired.
"""

from __future__ import annotations

from collections import Counter

from dtf import protocol as p
from dtf.core import commands as c
from dtf.core.breakers import BreakerState
from dtf.core.events import AssignTask, BreakerChanged, CancelAttempt, Event, OutcomeAccepted
from dtf.core.state import State, StateConfig
from dtf.errors import DtfError
from dtf.testing.simnet import Envelope, Network, ToWorker
from dtf.testing.simrecovery import check_budget_bound


class SimCoordinator:
    def __init__(
        self,
        config: StateConfig,
        network: Network,
        *,
        heartbeat_interval_s: float,
        snapshot_every: int,
        node_of: dict[str, str] | None = None,
    ) -> None:
        self.config, self.network = config, network
        self.heartbeat_interval_s = heartbeat_interval_s
        self.snapshot_every = snapshot_every
        self.state = State(config)
        self.journal: list[bytes] = []
        self.snapshot, self.snapshot_at = self.state.snapshot(), 0
        self.counted: Counter[tuple[str, int]] = Counter()
        self.pending_disconnects: list[tuple[float, str, str]] = []
        self.has_changed = False
        self.restarts = 0
        self.breakers_opened: Counter[str] = Counter()
        self.node_of = node_of or {}
        self.pending_node_losses: list[tuple[float, str]] = []
        self.execute(c.Configure(0.0, config))

    # -- the journal ---------------------------------------------------------

    def execute(self, command: c.Command) -> list[Event] | None:
        """Journal and apply ``command``; None when the state refuses it."""
        data = c.encode(command)
        decoded = c.decode(data)
        try:
            self.state.check(decoded)
        except DtfError:
            return None
        events = self.state.apply(decoded, seq=len(self.journal) + 1)
        self.journal.append(data)
        check_budget_bound(self.state, events)
        self.breakers_opened.update(
            e.breaker
            for e in events
            if isinstance(e, BreakerChanged) and e.new == BreakerState.OPEN
        )
        self.has_changed = True
        if len(self.journal) - self.snapshot_at >= self.snapshot_every:
            self.snapshot, self.snapshot_at = self.state.snapshot(), len(self.journal)
        return events

    def execute_and_route(self, command: c.Command) -> None:
        self.route(self.execute(command) or [])

    def restart(self, now: float) -> None:
        rebuilt = State.restore(self.snapshot)
        for seq, data in enumerate(self.journal[self.snapshot_at :], start=self.snapshot_at + 1):
            rebuilt.apply(c.decode(data), seq=seq)
        if rebuilt.snapshot() != self.state.snapshot():
            raise AssertionError(
                f"at {now}: snapshot {self.snapshot_at} plus {len(self.journal) - self.snapshot_at} "
                "journal entries rebuilt a different state than the one applied live"
            )
        self.state, self.restarts = rebuilt, self.restarts + 1
        self.pending_disconnects.clear()
        self.pending_node_losses.clear()
        self.execute_and_route(c.CoordinatorStarted(now))

    # -- the clock and the connections -------------------------------------------

    def tick(self, now: float) -> None:
        due = [d for d in self.pending_disconnects if d[0] <= now]
        self.pending_disconnects = [d for d in self.pending_disconnects if d[0] > now]
        for _, worker_id, session in due:
            self.execute_and_route(c.WorkerDisconnected(now, worker_id, session))
        lost = [node_id for at, node_id in self.pending_node_losses if at <= now]
        self.pending_node_losses = [n for n in self.pending_node_losses if n[0] > now]
        for node_id in lost:
            self.execute_and_route(c.CoordinatorNodeLost(now, node_id, self.incarnation))
        deadline = self.state.next_deadline()
        if deadline is not None and deadline <= now:
            self.execute_and_route(c.Tick(now))

    def notice_disconnect(self, at: float, worker_id: str, session: str) -> None:
        self.pending_disconnects.append((at, worker_id, session))

    def notice_node_loss(self, at: float, node_id: str) -> None:
        """The leader will see ``node_id``'s registry record gone at ``at``."""
        self.pending_node_losses.append((at, node_id))

    @property
    def incarnation(self) -> str:
        """Every node's process: a restart starts them all anew."""
        return f"i{self.restarts}"

    # -- messages ------------------------------------------------------------

    def receive(self, now: float, envelope: Envelope) -> None:
        message, worker_id = envelope.payload, envelope.worker_id
        if isinstance(message, p.Register):
            self.on_register(now, envelope, message)
        elif isinstance(message, p.HeartbeatRequest):
            self.on_heartbeat(now, envelope, message)
        elif isinstance(message, p.Started):
            self.execute_and_route(c.TaskStarted(now, worker_id, message.lease))
        elif isinstance(message, p.OutcomeReport):
            self.execute_and_route(c.ReportOutcome(now, worker_id, message.lease, message.outcome))

    def on_register(self, now: float, envelope: Envelope, message: p.Register) -> None:
        events = self.execute(
            c.RegisterWorker(
                now,
                message.worker_id,
                message.session,
                message.capabilities,
                message.slots,
                message.held,
                message.incarnation,
                node_id=self.node_of.get(message.worker_id, ""),
                node_incarnation=self.incarnation,
                max_fence_seen=message.max_fence_seen,
            )
        )
        if events is None:
            self.push(now, message.worker_id, message.session, p.ErrorMessage("refused"))
            return
        registered = p.Registered(
            message.worker_id,
            message.session,
            self.config.lease_timeout_s,
            self.heartbeat_interval_s,
        )
        self.push(now, message.worker_id, message.session, registered)
        self.route(events)

    def on_heartbeat(self, now: float, envelope: Envelope, message: p.HeartbeatRequest) -> None:
        worker_id = envelope.worker_id
        command = c.Heartbeat(
            now,
            worker_id,
            message.session,
            message.held,
            message.max_fence_seen,
            node_id=self.node_of.get(worker_id, ""),
            node_incarnation=self.incarnation,
        )
        events = self.execute(command)
        reply: ToWorker = p.ErrorMessage("session replaced; register again")
        if events is not None:
            self.route(events)
            renewed = self.state.current_lease_refs(worker_id, message.held)
            reply = p.HeartbeatReply(self.config.lease_timeout_s, renewed)
        self.network.send(
            now, Envelope(worker_id, message.session, now, reply, request_sent_at=envelope.sent_at)
        )

    def route(self, events: list[Event]) -> None:
        now = self.state.clock
        for event in events:
            if isinstance(event, AssignTask):
                assign = p.Assign(
                    event.task_id, event.attempt, event.fence, event.spec, event.lease_timeout_s
                )
                self.push_to_worker(now, event.worker_id, assign)
            elif isinstance(event, CancelAttempt):
                cancel = p.Cancel(event.task_id, event.attempt, event.fence)
                self.push_to_worker(now, event.worker_id, cancel)
            elif isinstance(event, OutcomeAccepted):
                self.counted[(event.task_id, event.attempt)] += event.counted
                ack = p.OutcomeAck(event.task_id, event.attempt, event.fence)
                self.push_to_worker(now, event.worker_id, ack)

    def push_to_worker(self, now: float, worker_id: str, message: ToWorker) -> None:
        self.push(now, worker_id, self.state.workers[worker_id].session, message)

    def push(self, now: float, worker_id: str, session: str, message: ToWorker) -> None:
        self.network.send_in_order(now, Envelope(worker_id, session, now, message))
