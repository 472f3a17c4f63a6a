"""The cluster bus's bookkeeping of appended commands, and applying log entries
on the coordinator that appended them (no decoding) as on the others."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import cast

import pytest

from dtf.cluster.etcd import Etcd
from dtf.cluster.log import EtcdLog
from dtf.cluster.log_applier import LogApplier
from dtf.cluster.pending import Pending, PendingCommands, resolve
from dtf.core import commands as c
from dtf.core.events import AssignTask, Event, TaskAccepted
from dtf.core.state import State
from dtf.errors import CoordinatorUnavailable, NotFound
from dtf.testing.factories import capabilities, task_spec


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def pending(loop: asyncio.AbstractEventLoop, command: c.Command) -> Pending:
    return Pending(command, c.encode(command), loop.create_future())


def applier(pending_commands: PendingCommands) -> LogApplier:
    # apply_entries never touches etcd: the log is only named in its messages
    log = EtcdLog(cast(Etcd, None), "unit")
    return LogApplier(
        log,
        State(),
        pending_commands,
        revision=0,
        snapshot_seq=0,
        snapshot_every=10_000,
        fence=lambda: None,
    )


def commands() -> list[c.Command]:
    return [
        c.RegisterWorker(1.0, "w1", "s1", capabilities(), 2),
        c.SubmitTasks(2.0, [c.NewTask("t1", task_spec()), c.NewTask("t2", task_spec())]),
        c.CancelTask(3.0, "missing"),
    ]


def test_an_entry_is_ours_only_at_its_seq_with_its_bytes(loop: asyncio.AbstractEventLoop) -> None:
    table = PendingCommands()
    first, second = pending(loop, commands()[0]), pending(loop, commands()[1])
    table.register([first, second], 5)
    assert table.take(5, second.entry) is None  # another coordinator's entry won seq 5
    assert table.take(5, first.entry) is first
    assert table.take(5, first.entry) is None  # taken once
    assert len(table) == 1 and table.highest_seq == 6


def test_registering_again_after_the_tail_moved_keeps_only_the_new_seq(
    loop: asyncio.AbstractEventLoop,
) -> None:
    table = PendingCommands()
    mine, theirs = pending(loop, commands()[0]), pending(loop, commands()[1])
    table.register([mine], 3)
    table.register([theirs], 3)
    table.unregister([mine])  # seq 3 now names another command: left alone
    table.register([mine], 4)
    assert table.take(3, theirs.entry) is theirs
    assert table.take(4, mine.entry) is mine


def test_failing_through_a_seq_leaves_later_commands_waiting(
    loop: asyncio.AbstractEventLoop,
) -> None:
    table = PendingCommands()
    run = [pending(loop, command) for command in commands()]
    table.register(run, 1)
    table.fail_through(2, CoordinatorUnavailable("skipped"))
    assert [p.future.done() for p in run] == [True, True, False]
    assert isinstance(run[0].future.exception(), CoordinatorUnavailable)
    assert len(table) == 1


def test_a_rejection_resolves_the_future_with_the_error(loop: asyncio.AbstractEventLoop) -> None:
    waiting = pending(loop, commands()[2])
    resolve(waiting, NotFound("task 'missing' is not known"))
    assert isinstance(waiting.future.exception(), NotFound)


def test_the_appending_coordinator_reaches_the_state_the_others_reach(
    loop: asyncio.AbstractEventLoop,
) -> None:
    appended = [pending(loop, command) for command in commands()]
    ours = PendingCommands()
    ours.register(appended, 1)
    writer, follower = applier(ours), applier(PendingCommands())
    published: list[Event] = []
    writer.subscribers.append(published.extend)
    entries = [(seq, p.entry) for seq, p in enumerate(appended, start=1)]
    writer.apply_entries(entries)
    follower.apply_entries(entries)
    assert writer.state.snapshot() == follower.state.snapshot()
    assert writer.state.applied_seq == 3 and not ours
    accepted = appended[1].future.result()
    assert [e.task_id for e in accepted if isinstance(e, TaskAccepted)] == ["t1", "t2"]
    assert any(isinstance(e, AssignTask) for e in published)
    assert isinstance(appended[2].future.exception(), NotFound)
