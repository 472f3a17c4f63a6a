"""Builders for specs and capabilities, and a driver that feeds the real ``State``.

``task_spec(**fields)`` goes through ``msgspec.convert`` like a submitted
document, so a test cannot build a spec the API would refuse.
``StateDriver`` names the usual moves (register, submit, start, succeed, fail,
heartbeat, tick), keeps the clock, and checks the state's invariants after
every command it applies.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import msgspec

from dtf.core import commands as c
from dtf.core.events import Event
from dtf.core.model import Capabilities, FailureKind, LeaseRef, Outcome, TaskSpec
from dtf.core.state import State, StateConfig
from dtf.testing.invariants import check_invariants

E = TypeVar("E")


def task_spec(**fields: Any) -> TaskSpec:
    """A command task spec; ``fields`` are the submitted document's top-level keys."""
    document: dict[str, Any] = {"type": "command", "config": {"command": "true"}}
    document.update(fields)
    return msgspec.convert(document, TaskSpec)


def capabilities(**fields: Any) -> Capabilities:
    return msgspec.convert(fields, Capabilities)


class StateDriver:
    """A ``State`` plus a clock; every method applies one command and returns its events."""

    def __init__(self, config: StateConfig | None = None) -> None:
        self.state = State(config or StateConfig())
        self.now = 0.0
        self.journal: list[bytes] = []

    def apply(self, command: c.Command) -> list[Event]:
        events = self.state.apply(command)
        self.journal.append(c.encode(command))
        check_invariants(self.state)
        return events

    def at(self, at: float | None) -> float:
        if at is not None:
            self.now = at
        return self.now

    def register(
        self,
        worker_id: str,
        caps: Capabilities | None = None,
        *,
        slots: int = 1,
        held: Sequence[LeaseRef] = (),
        session: str = "s1",
        incarnation: str = "",
        max_fence_seen: int | None = None,
        node_id: str = "",
        at: float | None = None,
    ) -> list[Event]:
        return self.apply(
            c.RegisterWorker(
                self.at(at),
                worker_id,
                session,
                caps or Capabilities(),
                slots,
                list(held),
                incarnation,
                node_id=node_id,
                max_fence_seen=max_fence_seen,
            )
        )

    def submit(
        self,
        *tasks: tuple[str, TaskSpec],
        reject_unsatisfiable: bool = False,
        at: float | None = None,
    ) -> list[Event]:
        new = [c.NewTask(task_id, spec) for task_id, spec in tasks]
        return self.apply(c.SubmitTasks(self.at(at), new, reject_unsatisfiable))

    def lease(self, task_id: str) -> LeaseRef:
        """The task's current lease as the worker holding it would name it."""
        lease = self.state.tasks[task_id].lease
        assert lease is not None, f"task {task_id} holds no lease"
        return LeaseRef(task_id, lease.attempt, lease.fence)

    def worker_of(self, task_id: str) -> str:
        lease = self.state.tasks[task_id].lease
        assert lease is not None, f"task {task_id} holds no lease"
        return lease.worker_id

    def start(self, task_id: str, *, at: float | None = None) -> list[Event]:
        return self.apply(c.TaskStarted(self.at(at), self.worker_of(task_id), self.lease(task_id)))

    def report(
        self,
        task_id: str,
        outcome: Outcome,
        *,
        lease: LeaseRef | None = None,
        worker_id: str | None = None,
        at: float | None = None,
    ) -> list[Event]:
        ref = lease or self.lease(task_id)
        holder = worker_id or self.state.tasks[task_id].attempts[ref.attempt - 1].worker_id
        return self.apply(c.ReportOutcome(self.at(at), holder, ref, outcome))

    def succeed(self, task_id: str, *, at: float | None = None) -> list[Event]:
        return self.report(task_id, Outcome(), at=at)

    def fail(
        self, task_id: str, failure: FailureKind = FailureKind.CRASHED, *, at: float | None = None
    ) -> list[Event]:
        outcome = Outcome(
            failure=failure, exit_code=1 if failure is FailureKind.EXIT_NONZERO else None
        )
        return self.report(task_id, outcome, at=at)

    def heartbeat(
        self,
        worker_id: str,
        held: Iterable[LeaseRef] | None = None,
        *,
        max_fence_seen: int | None = None,
        session: str = "s1",
        at: float | None = None,
    ) -> list[Event]:
        """By default the worker holds and has seen everything the state leased to it."""
        if held is None:
            held = [self.lease(t) for t in self.state.workers[worker_id].leases]
        refs = list(held)
        if max_fence_seen is None:
            max_fence_seen = max((r.fence for r in refs), default=0)
        return self.apply(c.Heartbeat(self.at(at), worker_id, session, refs, max_fence_seen))

    def disconnect(
        self, worker_id: str, *, session: str = "s1", at: float | None = None
    ) -> list[Event]:
        return self.apply(c.WorkerDisconnected(self.at(at), worker_id, session))

    def tick(self, at: float) -> list[Event]:
        return self.apply(c.Tick(self.at(at)))

    def cancel(self, task_id: str, *, at: float | None = None) -> list[Event]:
        return self.apply(c.CancelTask(self.at(at), task_id))

    def status(self, task_id: str) -> str:
        return self.state.tasks[task_id].status.value


def events_of(events: Iterable[Event], kind: type[E]) -> list[E]:
    """The events of one type, in order."""
    return [e for e in events if isinstance(e, kind)]
