"""A node applies the batches it appended as soon as the log takes them, without
waiting for its watch to bring them back, but never past a gap."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from typing import cast

import pytest

from dtf.cluster import bus as bus_module
from dtf.cluster.bus import ClusterBus
from dtf.cluster.etcd import Etcd
from dtf.cluster.log import EtcdLog, TailMoved
from dtf.core import commands as c
from dtf.core import state as state_module
from dtf.core.events import TaskAccepted
from dtf.core.records import TaskStatus
from dtf.core.state import State
from dtf.errors import CoordinatorUnavailable
from dtf.testing.factories import task_spec


class SilentWatchLog(EtcdLog):
    """A stand-in log that takes every append after ``last_seq`` and whose watch and
    reads bring nothing back: only the early apply can apply anything."""

    def __init__(self, last_seq: int) -> None:
        super().__init__(cast(Etcd, None), "unit")
        self.last_seq = last_seq

    async def append(
        self, entries: Sequence[bytes], *, expected_tail: int, fence_epoch: int | None
    ) -> int:
        if expected_tail != self.last_seq:
            raise TailMoved(expected_tail, self.last_seq, appended=0)
        self.last_seq = expected_tail + len(entries)
        return self.last_seq

    async def read(self, after_seq: int) -> tuple[list[tuple[int, bytes]], int]:
        return [], 1

    async def watch(self, after_revision: int) -> AsyncGenerator[list[tuple[int, bytes]], None]:
        await asyncio.Event().wait()
        yield []


def submit(task_id: str) -> c.SubmitTasks:
    return c.SubmitTasks(1.0, [c.NewTask(task_id, task_spec())])


async def run_bus(
    log: SilentWatchLog, state: State, command: c.Command, *, timeout_s: float = 5.0
) -> list[object]:
    bus = ClusterBus(log, state, snapshot_every=10_000, fence=lambda: None, revision=1)
    bus.start()
    try:
        return list(await asyncio.wait_for(bus.execute(command), timeout_s))
    finally:
        await bus.stop()


def test_a_command_this_node_appended_is_applied_without_its_watch() -> None:
    state = State()
    events = asyncio.run(run_bus(SilentWatchLog(last_seq=0), state, submit("t1")))
    assert [e for e in events if isinstance(e, TaskAccepted)] == [
        TaskAccepted("t1", TaskStatus.PENDING)
    ]
    assert state.applied_seq == 1


def test_a_batch_after_entries_not_yet_applied_here_waits_for_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bus_module, "STOP_WAIT_S", 0.1)
    # another node appended seq 1 and 2; this node has applied nothing yet
    with pytest.raises(TimeoutError):
        asyncio.run(run_bus(SilentWatchLog(last_seq=2), State(), submit("t1"), timeout_s=0.5))


def test_a_batch_that_breaks_the_state_stops_the_node_as_the_applier_would(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(self: State, command: c.SubmitTasks, now: float) -> None:
        raise RuntimeError("a state machine bug")

    monkeypatch.setitem(state_module._HANDLERS, c.SubmitTasks, broken)  # type: ignore[misc]

    async def run() -> ClusterBus:
        bus = ClusterBus(
            SilentWatchLog(last_seq=0),
            State(),
            snapshot_every=10_000,
            fence=lambda: None,
            revision=1,
        )
        bus.start()
        with pytest.raises(CoordinatorUnavailable, match="applying it failed"):
            await asyncio.wait_for(bus.execute(submit("t1")), 5.0)
        await bus.stop()
        return bus

    bus = asyncio.run(run())
    assert bus.applying_stopped is not None
    assert "restart this coordinator" in bus.applying_stopped
