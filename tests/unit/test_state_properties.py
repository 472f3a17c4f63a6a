"""Property tests: random command sequences keep every invariant and replay identically.

Hypothesis draws a list of abstract moves (indices, masks, time steps); ``Interpreter``
turns each into a concrete command against the current state, so every sequence is
meaningful and shrinks well. After every command the invariants are checked; a refused
command must leave the state byte-for-byte unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dtf.core import commands as c
from dtf.core.events import Event
from dtf.core.model import Capabilities, FailureKind, LeaseRef, Outcome
from dtf.core.state import State, StateConfig
from dtf.errors import DtfError
from dtf.testing.factories import StateDriver, capabilities, task_spec
from dtf.testing.invariants import check_invariants

CONFIG = StateConfig(lease_timeout_s=10.0, worker_timeout_s=30.0)
# worker id -> (capabilities, slots); capabilities never change for an id, so the
# "assigned worker satisfies the requirements" invariant is meaningful.
WORKERS: dict[str, tuple[Capabilities, int]] = {
    "cpu-a": (capabilities(memory_gb=8), 2),
    "cpu-b": (capabilities(memory_gb=64, labels={"pool": "big"}), 1),
    "gpu": (
        capabilities(
            hardware=["cpu", "cuda"],
            memory_gb=32,
            gpus=[{"vendor": "nvidia", "model": "A100", "compute_capability": 8.0}],
        ),
        2,
    ),
}
WORKER_IDS = list(WORKERS)
REQUIREMENTS: list[dict[str, Any]] = [
    {},
    {"hardware": ["cuda"]},
    {"min_memory_gb": 32},
    {"labels": {"pool": "big"}},
    {"worker_ids": ["cpu-a"]},
    {"hardware": ["tpu"]},
    {"hardware": ["tpu"], "fallbacks": [{"min_memory_gb": 16}], "fallback_after_seconds": 5},
    {"hardware": ["cuda"], "fallbacks": [{}], "fallback_after_seconds": 4},
]
RETRY_POLICIES: list[dict[str, Any]] = [
    {},
    {"max_retries": 0},
    {"max_retries": 1, "retry_delay_seconds": 0},
    {"max_retries": 2, "retry_delay_seconds": 3, "retry_on_nonzero_exit": True},
]
OUTCOMES = [
    Outcome(),
    Outcome(duration_s=2.0),
    Outcome(failure=FailureKind.CRASHED),
    Outcome(failure=FailureKind.EXIT_NONZERO, exit_code=2),
    Outcome(failure=FailureKind.WORKER_LOST),
]

time_steps = st.sampled_from([0.0, 0.0, 0.5, 1.0, 3.0, 6.0, 12.0])
new_tasks = st.tuples(
    st.integers(-2, 2),  # priority
    st.integers(0, len(REQUIREMENTS) - 1),
    st.integers(0, len(RETRY_POLICIES) - 1),
    st.lists(st.integers(0, 50), max_size=3),  # dependency picks among all known tasks
    st.booleans(),  # with an idempotency key
)
submits = st.tuples(st.just("submit"), st.lists(new_tasks, min_size=1, max_size=4), st.booleans())
# the node a worker registers through: n0, n1, or none (a standalone coordinator)
registers = st.tuples(st.just("register"), st.integers(0, 2), st.integers(0, 15), st.integers(0, 2))
NODES = ["n0", "n1", ""]
node_losses = st.tuples(st.just("node_lost"), st.integers(0, 2))
heartbeats = st.tuples(
    st.just("heartbeat"), st.integers(0, 2), st.integers(0, 15), st.integers(-1, 1)
)
starts = st.tuples(st.just("started"), st.integers(0, 50))
outcomes = st.tuples(st.just("outcome"), st.integers(0, 50), st.integers(0, len(OUTCOMES) - 1))
old_outcomes = st.tuples(
    st.just("old_outcome"), st.integers(0, 50), st.integers(0, 5), st.integers(0, 1)
)
disconnects = st.tuples(st.just("disconnect"), st.integers(0, 2), st.booleans())
cancels = st.tuples(st.just("cancel"), st.integers(0, 50))
ticks = st.tuples(st.just("tick"), time_steps)
restarts = st.tuples(st.just("restart"), time_steps)
# Repeats weight the draw towards the moves that make progress.
moves = st.one_of(
    submits, submits, registers, heartbeats, heartbeats, starts, outcomes, outcomes, outcomes,
    old_outcomes, disconnects, cancels, ticks, ticks, restarts, node_losses,
)  # fmt: skip
move_lists = st.lists(st.tuples(time_steps, moves), min_size=15, max_size=60)
EVERY_WORKER_REGISTERS = [(0.0, ("register", n, 0, n)) for n in range(len(WORKER_IDS))]


@dataclass
class Interpreter:
    """Turns abstract moves into commands and applies them through a ``StateDriver``."""

    driver: StateDriver = field(default_factory=lambda: StateDriver(CONFIG))
    sessions: dict[str, int] = field(default_factory=dict)
    nodes: dict[str, str] = field(default_factory=dict)
    task_ids: list[str] = field(default_factory=list)
    events: list[list[Event]] = field(default_factory=list)

    @property
    def state(self) -> State:
        return self.driver.state

    def run(self, steps: list[tuple[float, tuple[Any, ...]]]) -> None:
        if not self.sessions:
            steps = EVERY_WORKER_REGISTERS + steps
        for step, (name, *args) in steps:
            self.driver.now += step
            command = getattr(self, f"make_{name}")(*args)
            if command is not None:
                self.apply(command)

    def apply(self, command: c.Command) -> None:
        """A command that passes ``check`` is journaled, so applying it must not fail;
        one that fails ``check`` must be refused by ``apply`` without any change."""
        try:
            self.state.check(command)
        except DtfError:
            before = self.state.snapshot()
            with pytest.raises(DtfError):
                self.driver.apply(command)
            assert self.state.snapshot() == before, f"refused {command!r} changed the state"
            return
        self.events.append(self.driver.apply(command))
        # The live clock loop asks this after every command; a replay never does, so the
        # replay tests below also show that asking changes nothing.
        self.state.next_deadline()

    def pick(self, items: list[Any], index: int) -> Any:
        return items[index % len(items)] if items else None

    def leases(self) -> list[tuple[str, LeaseRef]]:
        return [
            (t.lease.worker_id, LeaseRef(t.id, t.lease.attempt, t.lease.fence))
            for t in self.state.tasks.values()
            if t.lease is not None
        ]

    def held(self, worker_id: str, mask: int) -> list[LeaseRef]:
        mine = [ref for holder, ref in self.leases() if holder == worker_id]
        return [ref for bit, ref in enumerate(mine) if mask & (1 << bit)]

    def make_submit(self, tasks: list[tuple[Any, ...]], reject: bool) -> c.Command:
        first = len(self.task_ids)
        batch: list[c.NewTask] = []
        in_batch = [f"t{first + index}" for index in range(len(tasks))]
        for index, (priority, requirement, policy, picks, keyed) in enumerate(tasks):
            # Dependencies may name tasks later in the same batch, repeat, or form
            # cycles (refused whole); idempotency keys repeat within a batch too.
            candidates = self.task_ids + in_batch
            dependencies = [self.pick(candidates, p) for p in picks]
            spec = task_spec(
                priority=priority,
                requirements=REQUIREMENTS[requirement],
                retry_policy=RETRY_POLICIES[policy],
                dependencies=dependencies,
                **({"idempotency_key": f"key-{(first + index) % 3}"} if keyed else {}),
            )
            batch.append(c.NewTask(f"t{first + index}", spec))
        self.task_ids.extend(new.task_id for new in batch)
        return c.SubmitTasks(self.driver.now, batch, reject)

    def make_register(self, worker: int, held_mask: int, node: int) -> c.Command:
        worker_id = WORKER_IDS[worker]
        self.sessions[worker_id] = self.sessions.get(worker_id, 0) + 1
        caps, slots = WORKERS[worker_id]
        held = self.held(worker_id, held_mask)
        session = f"s{self.sessions[worker_id]}"
        self.nodes[worker_id] = NODES[node]
        return c.RegisterWorker(
            self.driver.now, worker_id, session, caps, slots, held, node_id=NODES[node]
        )

    def make_node_lost(self, node: int) -> c.Command:
        """The leader journals a node's loss (refused for the standalone "" node)."""
        return c.CoordinatorNodeLost(self.driver.now, NODES[node])

    def make_heartbeat(self, worker: int, held_mask: int, seen_offset: int) -> c.Command:
        worker_id = WORKER_IDS[worker]
        fences = [ref.fence for holder, ref in self.leases() if holder == worker_id]
        session = f"s{self.sessions.get(worker_id, 0)}"
        return c.Heartbeat(
            self.driver.now,
            worker_id,
            session,
            self.held(worker_id, held_mask),
            max(0, max(fences, default=0) + seen_offset),
            node_id=self.nodes.get(worker_id, ""),
        )

    def make_started(self, index: int) -> c.Command | None:
        found = self.pick(self.leases(), index)
        return c.TaskStarted(self.driver.now, *found) if found else None

    def make_outcome(self, index: int, outcome: int) -> c.Command | None:
        found = self.pick(self.leases(), index)
        if found is None:
            return None
        return c.ReportOutcome(self.driver.now, found[0], found[1], OUTCOMES[outcome])

    def make_old_outcome(self, task: int, attempt: int, outcome: int) -> c.Command | None:
        tried = [t for t in self.state.tasks.values() if t.attempts]
        found = self.pick(tried, task)
        if found is None:
            return None
        record = found.attempts[attempt % len(found.attempts)]
        ref = LeaseRef(found.id, record.number, record.fence)
        return c.ReportOutcome(self.driver.now, record.worker_id, ref, OUTCOMES[outcome])

    def make_disconnect(self, worker: int, stale: bool) -> c.Command:
        worker_id = WORKER_IDS[worker]
        session = self.sessions.get(worker_id, 0) - (1 if stale else 0)
        return c.WorkerDisconnected(self.driver.now, worker_id, f"s{session}")

    def make_cancel(self, index: int) -> c.Command | None:
        task_id = self.pick(self.task_ids, index)
        return c.CancelTask(self.driver.now, task_id) if task_id else None

    def make_tick(self, step: float) -> c.Command:
        self.driver.now += step
        return c.Tick(self.driver.now)

    def make_restart(self, step: float) -> c.Command:
        """The coordinator restarts from a snapshot of what it had."""
        self.driver.state = State.restore(self.state.snapshot())
        check_invariants(self.state)
        self.driver.now += step
        return c.CoordinatorStarted(self.driver.now)


PROPERTY_SETTINGS = settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(move_lists)
def test_invariants_hold_after_every_command(steps: list[tuple[float, tuple[Any, ...]]]) -> None:
    Interpreter().run(steps)


@PROPERTY_SETTINGS
@given(move_lists)
def test_replaying_the_journal_rebuilds_the_same_state(
    steps: list[tuple[float, tuple[Any, ...]]],
) -> None:
    interpreter = Interpreter()
    interpreter.run(steps)
    replayed = State(CONFIG)
    for data in interpreter.driver.journal:
        replayed.apply(c.decode(data))
    assert replayed.snapshot() == interpreter.state.snapshot()


# The leader's clock dropped a fallback timer as moot while its task was assigned; the
# task was queued again, and a restored state (which never drops timers) fired the old
# timer ahead of a lease expiry, so the two emitted events in different orders.
LATE_FALLBACK: tuple[list[tuple[float, tuple[Any, ...]]], ...] = (
    [
        (0.0, ("register", 0, 0, 0)),
        (6.0, ("register", 0, 0, 0)),
        (0.0, ("submit", [(0, 7, 0, [], False), (1, 0, 0, [], True)], False)),
        (0.0, ("submit", [(0, 0, 0, [0], False), (0, 0, 0, [0], False)], False)),
        (0.0, ("started", 0)),
        (0.0, ("submit", [(0, 0, 0, [0], True), (1, 7, 2, [0], False)], True)),
        (0.0, ("register", 0, 0, 0)),
        (0.0, ("register", 0, 0, 0)),
        (0.0, ("register", 0, 0, 0)),
        (12.0, ("register", 0, 0, 0)),
        (0.0, ("submit", [(0, 0, 0, [], True)], False)),
        (0.0, ("cancel", 3)),
        (3.0, ("register", 0, 0, 0)),
        (0.0, ("submit", [(0, 0, 0, [], True)], False)),
        (0.0, ("submit", [(2, 0, 0, [], True)], False)),
    ],
    [
        (0.0, ("started", 49)),
        (0.0, ("old_outcome", 7, 0, 0)),
        (6.0, ("outcome", 0, 0)),
        (3.0, ("tick", 0.0)),
        (3.0, ("outcome", 19, 2)),
        (0.0, ("node_lost", 0)),
        (0.0, ("submit", [(0, 0, 0, [], False), (0, 0, 0, [49], True)], False)),
        (0.0, ("node_lost", 0)),
        (0.0, ("submit", [(0, 0, 0, [], False)], False)),
        (0.0, ("outcome", 45, 0)),
        (0.0, ("disconnect", 0, False)),
        (0.0, ("disconnect", 0, False)),
        (0.0, ("cancel", 0)),
        (0.0, ("disconnect", 0, False)),
        (0.0, ("tick", 12.0)),
    ],
)


@PROPERTY_SETTINGS
@given(move_lists, move_lists)
@example(*LATE_FALLBACK)
def test_restored_state_behaves_like_the_original(
    before: list[tuple[float, tuple[Any, ...]]], after: list[tuple[float, tuple[Any, ...]]]
) -> None:
    interpreter = Interpreter()
    interpreter.run(before)
    restored = State.restore(interpreter.state.snapshot())
    mark = len(interpreter.driver.journal)
    interpreter.run(after)
    journal, events = interpreter.driver.journal[mark:], interpreter.events[mark:]
    for data, expected in zip(journal, events, strict=True):
        assert restored.apply(c.decode(data)) == expected
    assert restored.snapshot() == interpreter.state.snapshot()
