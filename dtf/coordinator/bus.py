"""The command bus: check, journal, apply, publish, in that order.

Callers enqueue a command and get a future. One writer task takes everything
queued so far, appends it to the journal in one durable transaction (group
commit: a busy coordinator pays one fsync per batch, not per command), then
applies each command to the state in journal order and resolves its future
with the events it produced. Nothing is acknowledged before it is on disk.

Subscribers receive every applied batch of events synchronously, in order;
they must only queue work (never block or await).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from dtf.core import commands as c
from dtf.core.events import Event
from dtf.core.state import State
from dtf.errors import CoordinatorUnavailable, DtfError
from dtf.journal.base import Journal

log = logging.getLogger(__name__)

Subscriber = Callable[[list[Event]], None]


@dataclass
class _Pending:
    command: c.Command
    future: asyncio.Future[list[Event]] = field(repr=False)


class Bus(Protocol):
    """What routes, the worker hub and the clock need of a bus: ``CommandBus``
    here, ``dtf.cluster.bus.ClusterBus`` in a cluster."""

    @property
    def state(self) -> State: ...

    def subscribe(self, subscriber: Subscriber) -> None: ...

    def start(self) -> None: ...

    async def stop(self) -> None: ...

    def enqueue(self, command: c.Command) -> asyncio.Future[list[Event]]: ...

    async def execute(self, command: c.Command) -> list[Event]: ...


class CommandBus:
    def __init__(self, journal: Journal, state: State, *, snapshot_every: int) -> None:
        self.journal = journal
        self.state = state
        self.snapshot_every = snapshot_every
        self._queue: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._subscribers: list[Subscriber] = []
        self._since_snapshot = 0
        self._writer: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    def recover(cls, journal: Journal, *, snapshot_every: int) -> CommandBus:
        """Rebuild the state from the newest snapshot plus the journal tail."""
        snapshot = journal.load_snapshot()
        state = State.restore(snapshot[1]) if snapshot else State()
        replayed = 0
        for seq, entry in journal.read(state.applied_seq):
            try:
                state.apply(c.decode(entry), seq)
            except DtfError as exc:
                state.applied_seq = seq
                log.debug("journal entry %d was rejected when first applied: %s", seq, exc)
            replayed += 1
        log.info(
            "recovered state at journal seq %d (%d entries replayed, %d tasks)",
            state.applied_seq,
            replayed,
            len(state.tasks),
            extra={"event": "recovered", "seq": state.applied_seq},
        )
        bus = cls(journal, state, snapshot_every=snapshot_every)
        bus._since_snapshot = replayed
        return bus

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name="dtf-journal-writer")

    async def stop(self) -> None:
        self._closed = True
        self._wakeup.set()
        if self._writer is not None:
            await self._writer

    def enqueue(self, command: c.Command) -> asyncio.Future[list[Event]]:
        """Check ``command`` now and queue it; the future resolves once it is
        journaled and applied. Raises the command's ``DtfError`` at once when
        the check fails, before anything is written."""
        if self._closed:
            raise CoordinatorUnavailable("the coordinator is shutting down; retry shortly")
        self.state.check(command)
        future: asyncio.Future[list[Event]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(command, future))
        self._wakeup.set()
        return future

    async def execute(self, command: c.Command) -> list[Event]:
        return await self.enqueue(command)

    async def _write_loop(self) -> None:
        while not (self._closed and not self._queue):
            await self._wakeup.wait()
            self._wakeup.clear()
            batch, self._queue = self._queue, []
            if batch:
                await self._write_batch(batch)

    async def _write_batch(self, batch: list[_Pending]) -> None:
        entries = [c.encode(p.command) for p in batch]
        try:
            last_seq = await asyncio.to_thread(self.journal.append, entries)
        except Exception as exc:
            log.exception("journal append failed; %d commands refused", len(batch))
            for pending in batch:
                pending.future.set_exception(
                    CoordinatorUnavailable(f"could not write the journal: {exc}")
                )
            return
        first_seq = last_seq - len(batch) + 1
        applied: list[Event] = []
        for offset, pending in enumerate(batch):
            applied.extend(self._apply_one(pending, first_seq + offset))
        self._publish(applied)
        self._since_snapshot += len(batch)
        if self._since_snapshot >= self.snapshot_every:
            await self._snapshot()

    def _apply_one(self, pending: _Pending, seq: int) -> list[Event]:
        try:
            events = self.state.apply(pending.command, seq)
        except DtfError as exc:
            self.state.applied_seq = seq
            if not pending.future.done():
                pending.future.set_exception(exc)
            return []
        if not pending.future.done():
            pending.future.set_result(events)
        return events

    def _publish(self, events: list[Event]) -> None:
        if not events:
            return
        for subscriber in self._subscribers:
            try:
                subscriber(events)
            except Exception:
                log.exception("event subscriber %r failed", subscriber)

    async def _snapshot(self) -> None:
        seq, data = self.state.applied_seq, self.state.snapshot()
        self._since_snapshot = 0
        await asyncio.to_thread(self._save_snapshot, seq, data)

    def _save_snapshot(self, seq: int, data: bytes) -> None:
        self.journal.save_snapshot(seq, data)
        self.journal.compact(seq)
        log.info("snapshot at seq %d (%d bytes)", seq, len(data), extra={"event": "snapshot"})
