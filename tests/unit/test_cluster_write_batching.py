"""Group commit under load: ``BatchLinger`` decides how long the log writer lets
commands gather before an append; the writer keeps order and fenced runs.

Times are passed in: the policy reads no clock. The writer tests give it a clock of
their own and end every wait by filling the batch, never by a timer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dtf.cluster.log import EtcdLog
from dtf.cluster.log_writer import BatchLinger, LogWriter
from dtf.cluster.pending import Pending, PendingCommands
from dtf.core import commands as c

MAX_LINGER_S = 0.002
WAIT_BOUND_S = 5.0


def arrivals(linger: BatchLinger, *, every_s: float, count: int, start: float = 0.0) -> float:
    """``count`` commands ``every_s`` apart from ``start``; the time of the last one."""
    now = start
    for number in range(count):
        now = start + number * every_s
        linger.arrived(now)
    return now


@pytest.mark.parametrize(
    ("every_s", "count", "lingers"),
    [
        (None, 1, False),  # one command on an idle coordinator
        (0.013, 200, False),  # a writer pausing 10 ms after each ~3 ms write: ~77/s
        (0.004, 200, False),  # 250/s: less than one more command expected within 2 ms
        (0.001, 200, True),  # 1000/s: two more expected within 2 ms
        (0.0005, 10, False),  # the first 10 of a burst: too few yet to tell a stream
        (0.0005, 40, True),  # a burst of 40 in 20 ms
    ],
)
def test_lingers_only_when_more_commands_are_expected_within_the_bound(
    every_s: float | None, count: int, lingers: bool
) -> None:
    linger = BatchLinger(max_linger_s=MAX_LINGER_S)
    now = arrivals(linger, every_s=every_s or 0.0, count=count, start=100.0)
    assert (linger.linger_s(now, queued=1) > 0) is lingers


def test_a_busy_stream_lingers_the_full_bound() -> None:
    linger = BatchLinger(max_linger_s=MAX_LINGER_S, full_batch=64)
    now = arrivals(linger, every_s=0.001, count=500)
    assert linger.linger_s(now, queued=3) == MAX_LINGER_S


def test_a_stream_fast_enough_to_fill_the_batch_sooner_lingers_less() -> None:
    linger = BatchLinger(max_linger_s=MAX_LINGER_S, full_batch=64)
    now = arrivals(linger, every_s=0.00001, count=20_000)  # 100,000/s
    assert 0 < linger.linger_s(now, queued=4) < MAX_LINGER_S


def test_a_full_queue_is_appended_at_once() -> None:
    linger = BatchLinger(max_linger_s=MAX_LINGER_S, full_batch=16)
    now = arrivals(linger, every_s=0.001, count=500)
    assert linger.linger_s(now, queued=16) == 0.0


def test_the_first_command_after_a_busy_spell_goes_at_once() -> None:
    linger = BatchLinger(max_linger_s=MAX_LINGER_S, window_s=0.05)
    last = arrivals(linger, every_s=0.001, count=500)
    linger.arrived(last + 0.5)  # half a second of quiet: ten windows
    assert linger.linger_s(last + 0.5, queued=1) == 0.0


@given(
    gaps=st.lists(st.floats(0.0, 0.1), min_size=1, max_size=50),
    queued=st.integers(0, 200),
)
def test_the_linger_is_never_negative_nor_past_the_bound(gaps: list[float], queued: int) -> None:
    linger = BatchLinger(max_linger_s=MAX_LINGER_S)
    now = 0.0
    for gap in gaps:
        now += gap
        linger.arrived(now)
    assert 0.0 <= linger.linger_s(now, queued) <= MAX_LINGER_S


class RecordingLog:
    """The one call the writer makes of ``EtcdLog``: appends land, and are recorded."""

    def __init__(self) -> None:
        self.appends: list[tuple[list[bytes], int | None]] = []
        self.tail = 0

    async def append(
        self, entries: Sequence[bytes], *, expected_tail: int, fence_epoch: int | None
    ) -> int:
        assert expected_tail == self.tail
        self.appends.append((list(entries), fence_epoch))
        self.tail += len(entries)
        return self.tail


class StepClock:
    """A clock from ``start`` that moves ``step_s`` on each reading."""

    def __init__(self, start: float, step_s: float) -> None:
        self.now, self.step_s = start, step_s

    def __call__(self) -> float:
        self.now += self.step_s
        return self.now


def pending(command: c.Command) -> Pending:
    future = asyncio.get_running_loop().create_future()
    return Pending(command, c.encode(command), future)


def writer_of(log: RecordingLog, *, is_busy: bool, full_batch: int) -> LogWriter:
    """A writer whose lingering, once begun, outlasts the tests' bounded waits: only a
    full batch (or closing) ends it in time. ``is_busy``: it counts arrivals over 100 s,
    so that a few commands make a stream worth waiting for; otherwise over 50 ms, with
    a clock that moves a second between readings."""
    window_s, step_s = (100.0, 0.001) if is_busy else (0.05, 1.0)
    return LogWriter(
        cast(EtcdLog, log),
        PendingCommands(),
        fence=lambda: 7,
        applied_seq=lambda: 0,
        linger=BatchLinger(max_linger_s=3600.0, full_batch=full_batch, window_s=window_s),
        clock=StepClock(1000.0, step_s),
    )


async def write(
    writer: LogWriter, log: RecordingLog, commands: list[c.Command], *, before_start: int
) -> None:
    """Queue ``before_start`` commands, start the writer, queue the rest, close, and
    wait (bounded) until the writer is done."""
    for command in commands[:before_start]:
        writer.add(pending(command))
    running = asyncio.create_task(writer.run())
    await asyncio.sleep(0)  # the writer takes the first commands and starts lingering
    assert log.appends == []
    for command in commands[before_start:]:
        writer.add(pending(command))
    async with asyncio.timeout(WAIT_BOUND_S):
        while not log.appends:
            await asyncio.sleep(0)
    writer.close()
    async with asyncio.timeout(WAIT_BOUND_S):
        await running


def ticks(count: int) -> list[c.Command]:
    return [c.Tick(at=float(number)) for number in range(count)]


def test_a_lone_command_on_an_idle_writer_is_appended_without_lingering() -> None:
    async def scenario() -> list[tuple[list[bytes], int | None]]:
        log = RecordingLog()
        writer = writer_of(log, is_busy=False, full_batch=64)
        writer.add(pending(c.Tick(at=1.0)))
        running = asyncio.create_task(writer.run())
        async with asyncio.timeout(WAIT_BOUND_S):
            while not log.appends:
                await asyncio.sleep(0)
        writer.close()
        await running
        return log.appends

    assert asyncio.run(scenario()) == [([c.encode(c.Tick(at=1.0))], 7)]


def test_commands_arriving_fast_gather_into_one_append_until_the_batch_is_full() -> None:
    async def scenario() -> list[tuple[list[bytes], int | None]]:
        log = RecordingLog()
        writer = writer_of(log, is_busy=True, full_batch=8)
        await write(writer, log, ticks(8), before_start=3)
        return log.appends

    assert asyncio.run(scenario()) == [([c.encode(tick) for tick in ticks(8)], 7)]


def test_leader_only_commands_keep_runs_of_their_own_in_order() -> None:
    node_lost = c.CoordinatorNodeLost(at=2.0, node_id="node-2")
    cancel = c.CancelTask(at=1.0, task_id="t1")
    commands: list[c.Command] = [cancel, node_lost, cancel, c.Tick(at=3.0)]

    async def scenario() -> list[tuple[list[bytes], int | None]]:
        log = RecordingLog()
        writer = writer_of(log, is_busy=True, full_batch=4)
        await write(writer, log, commands, before_start=1)
        return log.appends

    encoded = [c.encode(command) for command in commands]
    assert asyncio.run(scenario()) == [
        ([encoded[0]], None),
        ([encoded[1]], 7),
        ([encoded[2]], None),
        ([encoded[3]], 7),
    ]
