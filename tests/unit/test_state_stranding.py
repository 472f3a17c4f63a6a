"""Workers stranded by a lost cluster node: no new work for them, and what they
lose meanwhile costs neither the task (no retry spent, no poison verdict) nor
the worker (no breaker, health or failure count). Each scenario that shows a
cost avoided runs once without ``CoordinatorNodeLost`` too, to show the cost."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dtf.core import commands as c
from dtf.core.events import AssignTask, BreakerChanged, Event, WorkerStatusChanged
from dtf.core.failures import FailureType
from dtf.core.model import Capabilities, FailureKind, LeaseRef, TaskSpec
from dtf.core.records import AttemptStatus, TaskStatus, WorkerRecord, WorkerStatus
from dtf.core.state import State, StateConfig
from dtf.core.stranding import nodes_to_declare_lost
from dtf.errors import InvalidRequest
from dtf.testing.factories import StateDriver, events_of, task_spec

MakeSpec = Callable[..., TaskSpec]
NO_DELAY = {"retry_delay_seconds": 0.0}


def register(
    driver: StateDriver,
    worker_id: str,
    node_id: str,
    *,
    session: str = "s1",
    slots: int = 1,
    held: Sequence[LeaseRef] = (),
    at: float | None = None,
) -> list[Event]:
    command = c.RegisterWorker(
        driver.at(at), worker_id, session, Capabilities(), slots, list(held), node_id=node_id
    )
    return driver.apply(command)


def lose_node(driver: StateDriver, node_id: str, *, at: float | None = None) -> list[Event]:
    return driver.apply(c.CoordinatorNodeLost(driver.at(at), node_id))


def beat(
    driver: StateDriver,
    worker_id: str,
    node_id: str,
    *,
    held: Sequence[LeaseRef] = (),
    max_fence_seen: int = 0,
    session: str = "s1",
    at: float | None = None,
) -> list[Event]:
    """A heartbeat journaled by ``node_id``."""
    command = c.Heartbeat(
        driver.at(at), worker_id, session, list(held), max_fence_seen, node_id=node_id
    )
    return driver.apply(command)


def assigned(events: list[Event]) -> list[tuple[str, str, int]]:
    return [(e.worker_id, e.task_id, e.attempt) for e in events_of(events, AssignTask)]


def test_a_lost_node_strands_only_the_workers_connected_through_it(driver: StateDriver) -> None:
    register(driver, "w1", "n1")
    register(driver, "w2", "n2")
    register(driver, "w3", "")  # registered with a standalone coordinator
    events = lose_node(driver, "n1", at=1.0)
    assert events == [
        WorkerStatusChanged(
            "w1", WorkerStatus.ONLINE, WorkerStatus.SUSPECT, "coordinator node n1 lost"
        )
    ]
    workers = driver.state.workers
    assert (workers["w1"].status, workers["w1"].lost_node) == (WorkerStatus.SUSPECT, "n1")
    assert [workers[w].status for w in ("w2", "w3")] == [WorkerStatus.ONLINE] * 2
    assert lose_node(driver, "n1", at=2.0) == []  # journaled twice: nothing more happens
    assert lose_node(driver, "n9", at=2.0) == []


def test_a_lost_node_needs_a_node_id(driver: StateDriver) -> None:
    with pytest.raises(InvalidRequest, match="node id"):
        lose_node(driver, "")


def test_a_stranded_worker_gets_no_new_work(driver: StateDriver, make_spec: MakeSpec) -> None:
    register(driver, "w1", "n1")
    lose_node(driver, "n1", at=1.0)
    assert assigned(driver.submit(("t", make_spec()))) == []
    assert assigned(register(driver, "w2", "n2")) == [("w2", "t", 1)]


def test_a_lease_lost_with_its_node_is_retried_without_charging_task_or_worker(
    driver: StateDriver, make_spec: MakeSpec
) -> None:
    register(driver, "w1", "n1")
    driver.submit(("t", make_spec(retry_policy={"max_retries": 0, **NO_DELAY})))
    driver.start("t", at=0.5)
    register(driver, "w2", "n2")
    lose_node(driver, "n1", at=1.0)
    events = driver.tick(10.5)
    task = driver.state.tasks["t"]
    first = task.attempts[0]
    assert (first.status, first.failure) == (AttemptStatus.LOST, FailureKind.COORDINATOR_LOST)
    assert first.failure_type is FailureType.COMMUNICATION_ERROR
    assert first.classified_by == "coordinator-lost"
    assert first.reason is not None and "connected through (n1) was lost" in first.reason
    assert assigned(events) == [("w2", "t", 2)]  # retried at once, though max_retries is 0
    assert events_of(events, BreakerChanged) == []
    w1 = driver.state.workers["w1"]
    assert (w1.tasks_failed, w1.health.samples, task.avoid_workers) == (0, [], [])
    assert driver.state.budgets.retrying == {}
    driver.fail("t", at=11.0)  # the task's own failure still counts: its only try is spent
    assert task.status is TaskStatus.FAILED
    assert task.status_reason is not None and "max_retries=0" in task.status_reason


def test_retries_count_only_the_attempts_the_task_is_charged_for(
    driver: StateDriver, make_spec: MakeSpec
) -> None:
    register(driver, "w1", "n1")
    driver.submit(("t", make_spec(retry_policy={"max_retries": 1, **NO_DELAY})))
    lose_node(driver, "n1", at=1.0)
    register(driver, "w2", "n2", at=2.0)
    driver.tick(10.0)  # attempt 1 lost with n1, attempt 2 on w2
    driver.fail("t", at=11.0)  # charged try 1 of 2: retried
    assert driver.status("t") in ("pending", "assigned")
    assert len(driver.state.tasks["t"].attempts) == 3
    driver.fail("t", at=12.0)  # charged try 2 of 2: no retry left
    assert driver.status("t") == "failed"


@pytest.mark.parametrize("nodes_lost", [True, False], ids=["nodes-lost", "unexplained-silence"])
def test_two_stranded_workers_do_not_make_a_poison_task(
    driver: StateDriver, make_spec: MakeSpec, nodes_lost: bool
) -> None:
    register(driver, "w1", "n1")
    driver.submit(("t", make_spec(retry_policy=NO_DELAY)))
    register(driver, "w2", "n2")
    if nodes_lost:
        lose_node(driver, "n1", at=1.0)
    assert assigned(driver.tick(10.0)) == [("w2", "t", 2)]
    if nodes_lost:
        lose_node(driver, "n2", at=11.0)
    driver.tick(20.0)
    task = driver.state.tasks["t"]
    if not nodes_lost:  # two workers went silent under it: it looks like a poison task
        assert task.status is TaskStatus.FAILED
        assert task.status_reason is not None and "poison" in task.status_reason
        return
    assert task.status is TaskStatus.PENDING
    assert assigned(register(driver, "w3", "n3", at=21.0)) == [("w3", "t", 3)]
    driver.succeed("t", at=22.0)
    assert task.status is TaskStatus.COMPLETED


@pytest.mark.parametrize("node_lost", [True, False], ids=["node-lost", "unexplained-silence"])
def test_leases_lost_with_a_node_open_no_breaker(
    driver: StateDriver, make_spec: MakeSpec, node_lost: bool
) -> None:
    register(driver, "w1", "n1", slots=3)
    driver.submit(*[(f"t{i}", make_spec(retry_policy=NO_DELAY)) for i in range(3)])
    if node_lost:
        lose_node(driver, "n1", at=1.0)
    events = driver.tick(10.0)
    opened = [e.breaker for e in events_of(events, BreakerChanged) if e.new == "open"]
    assert opened == ([] if node_lost else ["worker w1"])


def test_registering_through_another_node_ends_the_stranding_at_once(
    driver: StateDriver, make_spec: MakeSpec
) -> None:
    register(driver, "w1", "n1", slots=2)
    driver.submit(("kept", make_spec()), ("fenced", make_spec(retry_policy=NO_DELAY)))
    lose_node(driver, "n1", at=1.0)
    events = register(
        driver, "w1", "n2", session="s2", slots=2, held=[driver.lease("kept")], at=2.0
    )
    worker = driver.state.workers["w1"]
    assert (worker.status, worker.node_id, worker.lost_node) == (WorkerStatus.ONLINE, "n2", None)
    fenced = driver.state.tasks["fenced"].attempts[0]
    assert fenced.failure is FailureKind.COORDINATOR_LOST  # dropped while stranded
    assert driver.state.tasks["kept"].attempts[0].status is AttemptStatus.RUNNING
    assert assigned(events) == [("w1", "fenced", 2)]  # the worker is not avoided


def test_a_heartbeat_through_the_healed_node_brings_its_worker_back(
    driver: StateDriver, make_spec: MakeSpec
) -> None:
    register(driver, "w1", "n1")
    driver.submit(("t", make_spec(retry_policy=NO_DELAY)))
    lose_node(driver, "n1", at=1.0)
    driver.tick(31.0)  # lease expired, then the worker timed out
    worker = driver.state.workers["w1"]
    assert worker.status is WorkerStatus.OFFLINE
    assert worker.health.samples == []  # its silence was the lost node's
    events = beat(driver, "w1", "n1", max_fence_seen=1, at=40.0)
    assert (worker.status, worker.status_reason) == (
        WorkerStatus.ONLINE,
        "coordinator node n1 is back",
    )
    assert assigned(events) == [("w1", "t", 2)]


def test_a_heartbeat_after_the_channel_closed_does_not_bring_the_worker_online(
    driver: StateDriver,
) -> None:
    register(driver, "w1", "n1")
    lose_node(driver, "n1", at=1.0)
    driver.disconnect("w1", at=2.0)
    beat(driver, "w1", "n1", at=3.0)
    worker = driver.state.workers["w1"]
    assert (worker.status, worker.lost_node) == (WorkerStatus.SUSPECT, None)


def worker(worker_id: str, node_id: str, incarnation: str = "i1", **fields: Any) -> WorkerRecord:
    return WorkerRecord(
        worker_id,
        Capabilities(),
        1,
        0.0,
        0.0,
        "s1",
        node_id=node_id,
        node_incarnation=incarnation,
        **fields,
    )


ME = ("n0", "i0")


@pytest.mark.parametrize(
    ("workers", "registry", "expected"),
    [
        # a node gone from the registry with a live worker through it
        ([worker("w1", "n1")], {}, [("n1", "i1")]),
        # listed under the incarnation its worker registered through
        ([worker("w1", "n1")], {"n1": "i1"}, []),
        # restarted under the same id: only its old incarnation is lost
        ([worker("w1", "n1"), worker("w2", "n1", "i2")], {"n1": "i2"}, [("n1", "i1")]),
        # a record or a registration that names no incarnation matches any
        ([worker("w1", "n1", "")], {"n1": "i2"}, []),
        ([worker("w1", "n1")], {"n1": ""}, []),
        # registered before incarnations, and its node is gone
        ([worker("w1", "n1", "")], {}, [("n1", "")]),
        # its worker is stranded already: journaled once
        ([worker("w1", "n1", lost_node="n1", status=WorkerStatus.SUSPECT)], {}, []),
        # its worker went offline long ago: nothing to strand
        ([worker("w1", "n1", status=WorkerStatus.OFFLINE)], {}, []),
        # a suspect worker still connected through it (heard from after a silence)
        ([worker("w1", "n1", status=WorkerStatus.SUSPECT)], {}, [("n1", "i1")]),
        # standalone workers name no node
        ([worker("w1", "", "")], {}, []),
        # the leader's own node, missing from its registry for a moment: never lost
        ([worker("w1", "n0", "i0")], {}, []),
        # ... but an earlier incarnation of the leader's node is
        ([worker("w1", "n0", "i9")], {"n0": "i0"}, [("n0", "i9")]),
        # several, in order, each once
        (
            [worker("w2", "n2"), worker("w1", "n1"), worker("w3", "n2")],
            {"n3": "i1"},
            [("n1", "i1"), ("n2", "i1")],
        ),
    ],
)
def test_nodes_to_declare_lost(
    workers: list[WorkerRecord], registry: dict[str, str], expected: list[tuple[str, str]]
) -> None:
    assert nodes_to_declare_lost(workers, registry, ME) == expected


def test_a_lost_incarnation_strands_only_the_workers_registered_through_it(
    driver: StateDriver,
) -> None:
    """n1 restarted: w1 registered through its old process, w2 through the new one."""
    driver.apply(
        c.RegisterWorker(0.0, "w1", "s1", Capabilities(), 1, node_id="n1", node_incarnation="a")
    )
    driver.apply(
        c.RegisterWorker(0.0, "w2", "s1", Capabilities(), 1, node_id="n1", node_incarnation="b")
    )
    driver.apply(c.CoordinatorNodeLost(1.0, "n1", node_incarnation="a"))
    workers = driver.state.workers
    assert (workers["w1"].status, workers["w1"].lost_node) == (WorkerStatus.SUSPECT, "n1")
    assert (workers["w2"].status, workers["w2"].lost_node) == (WorkerStatus.ONLINE, None)
    driver.apply(c.Heartbeat(2.0, "w1", "s1", node_id="n1", node_incarnation="b"))
    assert workers["w1"].lost_node == "n1"  # journaled by the new process: not its channel
    driver.apply(c.Heartbeat(3.0, "w1", "s1", node_id="n1", node_incarnation="a"))
    assert (workers["w1"].status, workers["w1"].lost_node) == (WorkerStatus.ONLINE, None)


class OldRegisterWorker(msgspec.Struct, frozen=True, tag="register_worker"):
    """``RegisterWorker`` as journals written before node ids have it."""

    at: float
    worker_id: str
    session: str
    capabilities: Capabilities
    slots: int
    held: list[LeaseRef] = []
    incarnation: str = ""
    health_check: str | None = None


def test_an_old_journal_without_node_ids_replays() -> None:
    old = msgspec.msgpack.encode(OldRegisterWorker(1.0, "w1", "s1", Capabilities(), 1))
    command = c.decode(old)
    assert isinstance(command, c.RegisterWorker) and command.node_id == ""
    state = State()
    state.apply(command)
    assert (state.workers["w1"].node_id, state.workers["w1"].lost_node) == ("", None)


def test_a_snapshot_keeps_the_stranding(driver: StateDriver) -> None:
    register(driver, "w1", "n1")
    lose_node(driver, "n1", at=1.0)
    restored = State.restore(driver.state.snapshot())
    assert restored.workers["w1"].lost_node == "n1"
    assert restored.snapshot() == driver.state.snapshot()


# -- a property: losing nodes never costs the tasks or the workers anything ---------

NODES = ["n1", "n2", "n3"]
WORKERS = {"a": "n1", "b": "n1", "c": "n2", "d": "n3"}
# Any number of losses is forgiven here; the allowance per task is tested on its own.
CONFIG = StateConfig(lease_timeout_s=10.0, worker_timeout_s=30.0, max_coordinator_losses=10**6)

submits = st.tuples(st.just("submit"), st.integers(1, 3))
losses = st.tuples(st.just("lose"), st.sampled_from(NODES))
heals = st.tuples(st.just("heal"), st.sampled_from(NODES))
moves_to = st.tuples(st.just("move"), st.sampled_from(sorted(WORKERS)), st.sampled_from(NODES))
waits = st.tuples(st.just("wait"), st.sampled_from([1.0, 4.0, 9.0, 12.0, 31.0]))
finishes = st.tuples(st.just("finish"), st.integers(0, 20))
# Repeats weight the draw towards work being leased when nodes are lost and time runs.
moves = st.one_of(submits, submits, losses, losses, heals, moves_to, waits, waits, finishes)


@dataclass
class Cluster:
    """Workers connected through nodes; a node is cut off (journaled lost by the
    leader before any lease of its workers expires) and healed. Cut-off workers
    self-fence: they hold nothing when heard from again. Connected ones beat."""

    driver: StateDriver = field(default_factory=lambda: StateDriver(CONFIG))
    through: dict[str, str] = field(default_factory=lambda: dict(WORKERS))
    sessions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(WORKERS, 1))
    cut: set[str] = field(default_factory=set)
    tasks: int = 0
    events: list[Event] = field(default_factory=list)

    def start(self) -> None:
        for worker_id, node_id in WORKERS.items():
            self.events += register(self.driver, worker_id, node_id, slots=2)

    def is_cut_off(self, worker_id: str) -> bool:
        return self.through[worker_id] in self.cut

    def do_submit(self, count: int) -> None:
        new = [(f"t{self.tasks + i}", task_spec(retry_policy=NO_DELAY)) for i in range(count)]
        self.tasks += count
        self.events += self.driver.submit(*new)

    def do_lose(self, node_id: str) -> None:
        self.cut.add(node_id)
        self.events += lose_node(self.driver, node_id)

    def do_heal(self, node_id: str) -> None:
        if node_id not in self.cut:
            return
        self.cut.discard(node_id)
        stranded = [w for w, n in self.through.items() if n == node_id]
        for worker_id in stranded:
            seen = self.driver.state.next_fence - 1
            session = f"s{self.sessions[worker_id]}"
            self.events += beat(
                self.driver, worker_id, node_id, max_fence_seen=seen, session=session
            )

    def do_move(self, worker_id: str, node_id: str) -> None:
        if node_id in self.cut:
            return
        held = [] if self.is_cut_off(worker_id) else self.held(worker_id)
        self.through[worker_id] = node_id
        self.sessions[worker_id] += 1
        session = f"s{self.sessions[worker_id]}"
        self.events += register(
            self.driver, worker_id, node_id, session=session, slots=2, held=held
        )

    def do_wait(self, step_s: float) -> None:
        """Connected workers beat at least every 3 s while the clock runs."""
        until = self.driver.now + step_s
        while self.driver.now < until:
            self.driver.now = min(until, self.driver.now + 3.0)
            self.beat()
            self.events += self.driver.tick(self.driver.now)

    def do_finish(self, index: int) -> None:
        leased = [
            t.id
            for t in self.driver.state.tasks.values()
            if t.lease is not None and not self.is_cut_off(t.lease.worker_id)
        ]
        if leased:
            self.events += self.driver.succeed(leased[index % len(leased)])

    def beat(self) -> None:
        for worker_id in WORKERS:
            if not self.is_cut_off(worker_id):
                session = f"s{self.sessions[worker_id]}"
                held = self.held(worker_id)
                seen = max((ref.fence for ref in held), default=0)
                node_id = self.through[worker_id]
                self.events += beat(
                    self.driver, worker_id, node_id, held=held, max_fence_seen=seen, session=session
                )

    def held(self, worker_id: str) -> list[LeaseRef]:
        leases = self.driver.state.workers[worker_id].leases
        return [self.driver.lease(task_id) for task_id in leases]


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(moves, min_size=5, max_size=40))
def test_losing_nodes_costs_the_tasks_and_workers_nothing(steps: list[tuple[Any, ...]]) -> None:
    cluster = Cluster()
    cluster.start()
    for name, *args in steps:
        getattr(cluster, f"do_{name}")(*args)
    for node_id in list(cluster.cut):
        cluster.do_heal(node_id)
    for _ in range(cluster.tasks + 1):  # every round finishes at least one task
        cluster.do_finish(0)
    state = cluster.driver.state
    assert {t.id: t.status for t in state.tasks.values()} == dict.fromkeys(
        state.tasks, TaskStatus.COMPLETED
    )
    lost = [a for t in state.tasks.values() for a in t.attempts if a.status is AttemptStatus.LOST]
    assert {a.failure for a in lost} <= {FailureKind.COORDINATOR_LOST}
    assert events_of(cluster.events, BreakerChanged) == []
    assert [w.id for w in state.workers.values() if w.tasks_failed or w.health.quarantined] == []


# -- what a worker may not claim, and what losing nodes may not do forever ----------


def test_a_worker_cannot_report_its_attempt_lost_with_a_coordinator(
    driver: StateDriver, make_spec: MakeSpec
) -> None:
    register(driver, "w1", "n1")
    driver.submit(("t", make_spec(retry_policy={"max_retries": 2, **NO_DELAY})))
    with pytest.raises(InvalidRequest, match="coordinator_lost"):
        driver.fail("t", FailureKind.COORDINATOR_LOST, at=1.0)
    assert driver.state.tasks["t"].attempts[0].status is AttemptStatus.RUNNING


def test_only_attempts_the_state_machine_lost_with_a_node_go_uncharged(
    driver: StateDriver, make_spec: MakeSpec
) -> None:
    register(driver, "w1", "n1")
    driver.submit(("t", make_spec(retry_policy={"max_retries": 1, **NO_DELAY})))
    lose_node(driver, "n1", at=1.0)
    register(driver, "w2", "n2", at=2.0)
    driver.tick(10.0)  # attempt 1 lost with n1
    task = driver.state.tasks["t"]
    assert task.attempts[0].lost_with_node == "n1"
    task.attempts[0].lost_with_node = None  # as if a worker had claimed the failure
    driver.fail("t", at=11.0)
    assert driver.status("t") == "failed"  # both attempts charged: max_retries=1 spent


@pytest.mark.parametrize("allowance", [0, 1, 3])
def test_a_task_that_takes_down_host_after_host_is_charged_beyond_its_allowance(
    allowance: int, make_spec: MakeSpec
) -> None:
    """Worker and coordinator share each host, and the task kills the host (an OOM):
    the first ``max_coordinator_losses`` losses are free, the next ones are charged."""
    config = StateConfig(
        lease_timeout_s=10.0,
        worker_timeout_s=30.0,
        poison_after_worker_crashes=0,
        max_coordinator_losses=allowance,
    )
    driver = StateDriver(config)
    driver.submit(("t", make_spec(retry_policy={"max_retries": 1, **NO_DELAY})))
    task = driver.state.tasks["t"]
    for host in range(10):
        if task.status.is_terminal:
            break
        register(driver, f"w{host}", f"n{host}", at=driver.now + 1)
        lose_node(driver, f"n{host}", at=driver.now + 4)
        driver.tick(driver.now + 10)
    assert task.status is TaskStatus.FAILED
    assert len(task.attempts) == allowance + 2  # the free losses, then max_retries=1 charged
    free = [a.lost_with_node for a in task.attempts if a.lost_with_node is not None]
    assert free == [f"n{i}" for i in range(allowance)]
    charged = task.attempts[allowance]
    assert (charged.failure, charged.reason) == (FailureKind.WORKER_LOST, charged.reason)
    assert charged.reason is not None and "max_coordinator_losses" in charged.reason


def test_healing_restores_the_status_the_worker_had_when_stranded(driver: StateDriver) -> None:
    register(driver, "w1", "n1")
    driver.tick(31.0)  # silent: offline
    beat(driver, "w1", "n1", at=32.0)  # back after silence: suspect until it registers
    lose_node(driver, "n1", at=33.0)
    beat(driver, "w1", "n1", at=34.0)
    worker = driver.state.workers["w1"]
    assert (worker.status, worker.lost_node) == (WorkerStatus.SUSPECT, None)


def test_only_a_heartbeat_journaled_by_the_lost_node_ends_the_stranding(
    driver: StateDriver,
) -> None:
    register(driver, "w1", "n1")
    lose_node(driver, "n1", at=1.0)
    beat(driver, "w1", "n2", at=2.0)  # journaled by another node
    beat(driver, "w1", "", at=3.0)  # an old journal's heartbeat names no node
    worker = driver.state.workers["w1"]
    assert (worker.status, worker.lost_node) == (WorkerStatus.SUSPECT, "n1")
    beat(driver, "w1", "n1", at=4.0)
    assert (worker.status, worker.lost_node) == (WorkerStatus.ONLINE, None)
