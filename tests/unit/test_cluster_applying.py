"""The cluster bus's bookkeeping of appended commands, and applying log entries
on the coordinator that appended them (no decoding) as on the others."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import cast

import pytest

from dtf.cluster import log_applier
from dtf.cluster.etcd import Etcd, EtcdUnavailable
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


class _LogThatFailsFirst(EtcdLog):
    """A stand-in log: its first reads fail as etcd would, then it holds ``entries``."""

    def __init__(self, failures: int, entries: list[tuple[int, bytes]]) -> None:
        super().__init__(cast(Etcd, None), "unit")
        self.failures = failures
        self.entries = entries

    async def read(self, after_seq: int) -> tuple[list[tuple[int, bytes]], int]:
        if self.failures:
            self.failures -= 1
            raise EtcdUnavailable("no etcd endpoint answered")
        return [(seq, entry) for seq, entry in self.entries if seq > after_seq], 7


def test_a_catch_up_that_cannot_read_the_log_says_so(
    loop: asyncio.AbstractEventLoop,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(log_applier, "CATCH_UP_BACKOFF_S", (0.0, 0.0))
    entries = [(seq, c.encode(command)) for seq, command in enumerate(commands(), start=1)]
    follower = applier(PendingCommands())
    follower.log = _LogThatFailsFirst(3, entries)
    with caplog.at_level(logging.DEBUG, logger=log_applier.__name__):
        loop.run_until_complete(asyncio.wait_for(follower._catch_up(), 10))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # the first failure in a row, not one per retry
    assert "nothing is applied" in warnings[0].getMessage()
    assert "no etcd endpoint answered" in warnings[0].getMessage()
    assert any("after 3 failed reads" in r.getMessage() for r in caplog.records)
    assert follower.state.applied_seq == 3
