"""A deterministic simulation of a faulty fleet driving the real ``State``.

How this works: one ``random.Random(seed)`` decides everything — the fleet, the
tasks, message delays, crashes — and a fake clock advances in fixed steps.
Each step the simulated workers act (self-fence, finish, heartbeat,
reconnect), due messages are delivered, the client submits and cancels, and
the coordinator shell applies a ``Tick`` when ``next_deadline`` says one is
due. Every command goes through the journal byte format before it is applied,
exactly as the real coordinator does; a coordinator restart rebuilds the state
from the last snapshot plus the journal tail and applies ``CoordinatorStarted``.

Faults (worker crashes, agent restarts, network partitions, coordinator
restarts, losses of a cluster node with the workers connected through it,
late, reordered and duplicated messages) happen only during
``fault_window_s``; then the fleet heals and the run must end with every task
terminal. The tasks fail as real ones do (``simfaults``): software errors,
OOM until recovery halves the batch enough, CUDA errors, browser crashes,
lost WebGPU contexts, timeouts, poison tasks that take their worker down,
``bad_workers`` that fail everything with hardware errors, and an outage of
a shared service for ``outage_s`` within the fault window.
``check_invariants`` runs after every step that changed the state;
``simchecks`` and ``simrecovery`` verify the end state.

Usage: ``run_simulation(SimulationConfig(seed=7)) -> SimulationReport``.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from dtf.core import commands as c
from dtf.core.records import AttemptStatus
from dtf.core.recovery_policy import RecoveryPolicy
from dtf.core.state import State, StateConfig
from dtf.testing.invariants import check_invariants
from dtf.testing.simchecks import check_end_state, check_replay
from dtf.testing.simcoordinator import SimCoordinator
from dtf.testing.simfaults import FaultModel
from dtf.testing.simfleet import FleetMember, build_fleet, plan_client
from dtf.testing.simnet import Network
from dtf.testing.simrecovery import RecoveryTally, check_recovery
from dtf.testing.simworker import ExecutionLog, SimWorker, WorkerTimings


@dataclass(frozen=True)
class SimulationConfig:
    seed: int
    workers: int = 20
    tasks: int = 300
    lease_timeout_s: float = 10.0
    worker_timeout_s: float = 30.0
    heartbeat_interval_s: float = 2.0
    step_s: float = 0.5
    fault_window_s: float = 300.0
    max_time_s: float = 3000.0
    max_delay_s: float = 1.5
    duplicate_rate: float = 0.1
    failure_rate: float = 0.15
    long_run_rate: float = 0.1
    cancel_fraction: float = 0.03
    crash_rate: float = 0.001
    agent_restart_rate: float = 0.001
    partition_rate: float = 0.001
    coordinator_restart_rate: float = 0.002
    snapshot_every: int = 150
    bad_workers: int = 1
    outage_s: float = 30.0
    breaker_reset_s: float = 60.0
    run_sizes: tuple[int, int] = (12, 30)
    recovery: RecoveryPolicy = field(default_factory=RecoveryPolicy)
    poison_after_worker_crashes: int = 2
    nodes: int = 3
    node_loss_rate: float = 0.006
    registry_ttl_s: float = 3.0


@dataclass
class SimulationReport:
    seed: int
    end_time: float
    steps: int
    commands: int
    statuses: dict[str, int]
    attempts: int
    lost_attempts: int
    superseded_outcomes: int
    executions: int
    self_fenced: int
    crashes: int = 0
    agent_restarts: int = 0
    partitions: int = 0
    coordinator_restarts: int = 0
    node_losses: int = 0
    duplicated_messages: int = 0
    poison_crashes: int = 0
    bad_workers: list[str] = field(default_factory=list)
    breakers_opened: dict[str, int] = field(default_factory=dict)
    quarantined_workers: list[str] = field(default_factory=list)
    recovery: RecoveryTally | None = None
    final_snapshot: bytes = field(default=b"", repr=False)
    journal: list[bytes] = field(default_factory=list, repr=False)


def run_simulation(config: SimulationConfig) -> SimulationReport:
    return Simulation(config).run()


class Simulation:
    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.network = Network(self.fork(), config.max_delay_s, config.duplicate_rate)
        # Its own stream (seeded by a string: the same under any hash seed), so
        # that node losses leave the other faults of a seed as they were.
        self.node_rng = random.Random(f"node losses {config.seed}")
        fleet = build_fleet(config.workers)
        nodes = [f"n{i}" for i in range(config.nodes)]
        self.node_of = {m.worker_id: nodes[i % len(nodes)] for i, m in enumerate(fleet) if nodes}
        state_config = StateConfig(
            config.lease_timeout_s,
            config.worker_timeout_s,
            recovery=config.recovery,
            circuit_breaker_reset_s=config.breaker_reset_s,
            poison_after_worker_crashes=config.poison_after_worker_crashes,
        )
        self.coordinator = SimCoordinator(
            state_config,
            self.network,
            heartbeat_interval_s=config.heartbeat_interval_s,
            snapshot_every=config.snapshot_every,
            node_of=self.node_of,
        )
        self.log = ExecutionLog()
        self.fault_model = self.plan_faults(fleet)
        self.workers = {m.worker_id: self.start_worker(m) for m in fleet}
        cancels = round(config.tasks * config.cancel_fraction)
        submit_until = config.fault_window_s * 0.8
        self.plan = plan_client(
            self.fork(),
            fleet,
            config.tasks,
            submit_until,
            cancels,
            self.fault_model.bad_workers,
            config.run_sizes,
        )
        self.next_action = 0
        self.submitted: dict[str, None] = {}
        self.cancelled: set[str] = set()
        self.revive_at: dict[str, float] = {}
        self.faults: Counter[str] = Counter()
        self.now = 0.0

    def plan_faults(self, fleet: list[FleetMember]) -> FaultModel:
        """Which machines are bad, and when the shared service is down."""
        config = self.config
        bad = self.rng.sample([m.worker_id for m in fleet], min(config.bad_workers, len(fleet)))
        outage_start_s = self.rng.uniform(0.3, 0.6) * config.fault_window_s
        return FaultModel(
            noise_rate=config.failure_rate,
            long_run_rate=config.long_run_rate,
            bad_workers=frozenset(bad),
            outage_start_s=outage_start_s,
            outage_end_s=outage_start_s + config.outage_s,
        )

    def start_worker(self, member: FleetMember) -> SimWorker:
        config = self.config
        timings = WorkerTimings(config.lease_timeout_s, config.heartbeat_interval_s)
        return SimWorker(
            member.worker_id,
            member.capabilities,
            member.slots,
            timings=timings,
            faults=self.fault_model,
            network=self.network,
            log=self.log,
            rng=self.fork(),
        )

    def fork(self) -> random.Random:
        """An independent generator, so adding draws in one part leaves the others alone."""
        return random.Random(self.rng.getrandbits(64))

    def run(self) -> SimulationReport:
        steps = 0
        while not self.is_settled():
            if self.now > self.config.max_time_s:
                raise AssertionError(unsettled_message(self.coordinator.state, self.now))
            self.step(self.now)
            steps += 1
            self.now = steps * self.config.step_s
        return self.finish(steps)

    def step(self, now: float) -> None:
        self.coordinator.has_changed = False
        if now < self.config.fault_window_s:
            self.inject_faults(now)
        self.revive(now)
        for worker in self.workers.values():
            worker.step(now)
            self.notice_poison_crashes(worker)
        for envelope in self.network.deliver_due(now):
            if envelope.is_to_coordinator:
                self.coordinator.receive(now, envelope)
            else:
                self.workers[envelope.worker_id].receive(now, envelope)
        self.act_as_client(now)
        self.coordinator.tick(now)
        if self.coordinator.has_changed:
            check_invariants(self.coordinator.state)

    def is_settled(self) -> bool:
        tasks = self.coordinator.state.tasks
        return self.next_action == len(self.plan) and all(
            tasks[task_id].status.is_terminal for task_id in self.submitted
        )

    # -- faults ------------------------------------------------------------

    def inject_faults(self, now: float) -> None:
        config = self.config
        for worker in self.workers.values():
            if not worker.is_alive or worker.session is None:
                continue
            draw, session = self.rng.random(), worker.session
            if draw < config.crash_rate:
                worker.crash(now)
                self.revive_at[worker.id] = now + self.rng.uniform(5.0, 60.0)
            elif draw < config.crash_rate + config.agent_restart_rate:
                worker.restart_agent(now)
            elif draw < config.crash_rate + config.agent_restart_rate + config.partition_rate:
                outage_s = self.rng.uniform(3.0, 60.0)
                self.network.down_until[worker.id] = now + outage_s
                worker.drop_connection(now, reconnect_after_s=outage_s)
            else:
                continue
            self.faults[self.fault_name(draw)] += 1
            self.coordinator.notice_disconnect(now + self.rng.uniform(0.0, 2.0), worker.id, session)
        if self.rng.random() < config.coordinator_restart_rate:
            self.restart_coordinator(now)
        if self.node_of and self.node_rng.random() < config.node_loss_rate:
            self.lose_node(now, self.node_rng.choice(sorted(set(self.node_of.values()))))

    def lose_node(self, now: float, node_id: str) -> None:
        """``node_id`` is cut off: its workers reach nothing (they self-fence) and
        it journals nothing for them, not even their dropped connections."""
        outage_s = self.node_rng.uniform(5.0, 60.0)
        for worker in self.workers.values():
            if self.node_of[worker.id] != node_id or not worker.is_alive:
                continue
            self.network.down_until[worker.id] = max(
                self.network.down_until.get(worker.id, 0.0), now + outage_s
            )
            if worker.session is not None:
                worker.drop_connection(now, reconnect_after_s=outage_s)
        self.coordinator.notice_node_loss(now + self.config.registry_ttl_s, node_id)
        self.faults["node_losses"] += 1

    def notice_poison_crashes(self, worker: SimWorker) -> None:
        """A task took the worker down: it reboots later, and its connection closed."""
        for at, session in worker.poison_crashes:
            self.faults["poison_crashes"] += 1
            self.revive_at[worker.id] = at + self.rng.uniform(5.0, 60.0)
            if session is not None:
                self.coordinator.notice_disconnect(
                    at + self.rng.uniform(0.0, 2.0), worker.id, session
                )
        worker.poison_crashes.clear()

    def fault_name(self, draw: float) -> str:
        if draw < self.config.crash_rate:
            return "crashes"
        if draw < self.config.crash_rate + self.config.agent_restart_rate:
            return "agent_restarts"
        return "partitions"

    def revive(self, now: float) -> None:
        for worker_id, at in list(self.revive_at.items()):
            if now >= at or now >= self.config.fault_window_s:
                self.workers[worker_id].boot(now)
                del self.revive_at[worker_id]

    def restart_coordinator(self, now: float) -> None:
        self.network.lose_everything()
        self.coordinator.restart(now)
        for worker in self.workers.values():
            if worker.is_alive and worker.session is not None:
                worker.drop_connection(now, reconnect_after_s=self.rng.uniform(0.5, 3.0))

    # -- the client ------------------------------------------------------------

    def act_as_client(self, now: float) -> None:
        while self.next_action < len(self.plan) and self.plan[self.next_action].at <= now:
            action = self.plan[self.next_action]
            self.next_action += 1
            if action.kind == "cancel":
                self.cancel(now, action.pick)
                continue
            events = self.coordinator.execute(c.SubmitTasks(now, list(action.batch)))
            assert events is not None, f"the client's batch at {action.at} was refused"
            self.coordinator.route(events)
            self.submitted.update(dict.fromkeys(new.task_id for new in action.batch))

    def cancel(self, now: float, pick: int) -> None:
        tasks = self.coordinator.state.tasks
        unfinished = [t for t in self.submitted if not tasks[t].status.is_terminal]
        if unfinished:
            task_id = unfinished[pick % len(unfinished)]
            self.cancelled.add(task_id)
            self.coordinator.execute_and_route(
                c.CancelTask(now, task_id, "cancelled by the simulation")
            )

    # -- the end -------------------------------------------------------------

    def finish(self, steps: int) -> SimulationReport:
        state = self.coordinator.state
        produced = {f: o for w in self.workers.values() for f, o in w.produced.items()}
        check_end_state(
            state,
            submitted=self.submitted,
            cancelled=self.cancelled,
            counted=self.coordinator.counted,
            produced=produced,
            executions=self.log.history,
        )
        check_replay(state, self.coordinator.journal, self.coordinator.config)
        recovery = check_recovery(
            state,
            bad_workers=self.fault_model.bad_workers,
            breakers_opened=self.coordinator.breakers_opened,
        )
        return self.report(steps, recovery)

    def report(self, steps: int, recovery: RecoveryTally) -> SimulationReport:
        state = self.coordinator.state
        attempts = [a for t in state.tasks.values() for a in t.attempts]
        return SimulationReport(
            seed=self.config.seed,
            end_time=self.now,
            steps=steps,
            commands=len(self.coordinator.journal),
            statuses=dict(Counter(t.status.value for t in state.tasks.values())),
            attempts=len(attempts),
            lost_attempts=sum(1 for a in attempts if a.status is AttemptStatus.LOST),
            superseded_outcomes=sum(len(a.superseded_outcomes) for a in attempts),
            executions=len(self.log.history),
            self_fenced=sum(1 for e in self.log.history if e.ending == "self-fenced"),
            crashes=self.faults["crashes"],
            agent_restarts=self.faults["agent_restarts"],
            partitions=self.faults["partitions"],
            coordinator_restarts=self.coordinator.restarts,
            node_losses=self.faults["node_losses"],
            duplicated_messages=self.network.duplicated,
            poison_crashes=self.faults["poison_crashes"],
            bad_workers=sorted(self.fault_model.bad_workers),
            breakers_opened=dict(sorted(self.coordinator.breakers_opened.items())),
            quarantined_workers=sorted(
                w.id for w in state.workers.values() if w.health.quarantined
            ),
            recovery=recovery,
            final_snapshot=state.snapshot(),
            journal=list(self.coordinator.journal),
        )


def unsettled_message(state: State, now: float) -> str:
    waiting = [t for t in state.tasks.values() if not t.status.is_terminal]
    sample = "; ".join(
        f"{t.id} {t.status.value} ({t.status_reason}), lease={t.lease}" for t in waiting[:5]
    )
    return f"simulation did not settle by {now}: {len(waiting)} tasks unfinished, e.g. {sample}"
