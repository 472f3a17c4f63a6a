"""Applying the etcd log, in seq order, to this coordinator's state.

The applier follows the log's watch and applies every entry, from every
coordinator, exactly as ``CommandBus`` does, then publishes the events and
resolves the futures of the commands this coordinator appended (see
``pending.py``). When the watch ends it catches up by reading the log after
the applied seq (or adopts the newest snapshot when that part was compacted)
with bounded backoff, and watches again. The leader saves a snapshot every
``snapshot_every`` entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from dtf.cluster.etcd import EtcdError
from dtf.cluster.log import EtcdLog, LogCompacted
from dtf.cluster.loops import level
from dtf.cluster.pending import MAYBE_APPLIED, PendingCommands, resolve
from dtf.core import commands as c
from dtf.core.events import Event
from dtf.core.state import State
from dtf.errors import CoordinatorUnavailable, DtfError

logger = logging.getLogger(__name__)

Subscriber = Callable[[list[Event]], None]
Fence = Callable[[], int | None]

CATCH_UP_BACKOFF_S = (0.05, 2.0)


class _Gap(DtfError):
    status_code = 503


def apply_entry(state: State, seq: int, command: c.Command) -> list[Event] | DtfError:
    """Apply like ``CommandBus``: a rejected command still takes its seq."""
    try:
        return state.apply(command, seq)
    except DtfError as exc:
        state.applied_seq = seq
        return exc


class LogApplier:
    def __init__(
        self,
        log: EtcdLog,
        state: State,
        pending: PendingCommands,
        *,
        revision: int,
        snapshot_seq: int,
        snapshot_every: int,
        fence: Fence,
    ) -> None:
        self.log = log
        self.state = state
        self.pending = pending
        self.snapshot_every = snapshot_every
        self.subscribers: list[Subscriber] = []
        self._fence = fence
        self._revision = revision
        self._snapshot_seq = snapshot_seq
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._snapshotting: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Follow the watch; when it ends, catch up from the log and watch again
        (after a growing pause while watches keep ending with nothing delivered)."""
        min_delay_s, max_delay_s = CATCH_UP_BACKOFF_S
        delay_s = min_delay_s
        while True:
            delivered = await self._follow_watch()
            await self._catch_up()
            if delivered:
                delay_s = min_delay_s
                continue
            await asyncio.sleep(delay_s)
            delay_s = min(2 * delay_s, max_delay_s)

    async def stop_snapshotting(self) -> None:
        if self._snapshotting is not None:
            self._snapshotting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._snapshotting

    async def wait_applied(self, seq: int, timeout_s: float) -> None:
        """Return once entries up to ``seq`` are applied here; ``CoordinatorUnavailable``
        after ``timeout_s``."""
        if self.state.applied_seq >= seq:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((seq, waiter))
        try:
            await asyncio.wait_for(waiter, timeout_s)
        except TimeoutError:
            raise CoordinatorUnavailable(
                f"this coordinator has applied the log up to seq {self.state.applied_seq}, "
                f"not yet {seq}, after {timeout_s}s; retry, or ask another coordinator"
            ) from None

    async def _follow_watch(self) -> int:
        """Apply what the watch delivers until it ends; return how many batches it delivered."""
        delivered = 0
        try:
            async with contextlib.aclosing(self.log.watch(self._revision)) as watch:
                async for entries in watch:
                    self.apply_entries(entries)
                    delivered += 1
            logger.warning("the log watch of cluster %s ended; catching up", self.log.cluster)
        except (EtcdError, _Gap) as exc:
            logger.warning(
                "the log watch of cluster %s failed (%s); catching up", self.log.cluster, exc
            )
        return delivered

    async def _catch_up(self) -> None:
        """Read the log after the applied seq (loading the snapshot if that part
        was compacted), retrying with bounded backoff until etcd answers. The first
        failure in a row is a warning: meanwhile this node applies nothing."""
        delay_s, max_delay_s = CATCH_UP_BACKOFF_S
        failures = 0
        while True:
            try:
                await self._read_after_applied()
                if failures:
                    logger.info(
                        "caught up with the log of cluster %s at seq %d after %d failed reads",
                        self.log.cluster,
                        self.state.applied_seq,
                        failures,
                    )
                return
            except (EtcdError, LogCompacted) as exc:
                logger.log(
                    level(failures),
                    "cannot read the log of cluster %s after seq %d, so nothing is applied "
                    "here until it can (retrying): %s",
                    self.log.cluster,
                    self.state.applied_seq,
                    exc,
                )
                failures += 1
                self.pending.fail_all(
                    CoordinatorUnavailable(
                        f"etcd failed before the command was applied here; {MAYBE_APPLIED}"
                    )
                )
            await asyncio.sleep(delay_s)
            delay_s = min(2 * delay_s, max_delay_s)

    async def _read_after_applied(self) -> None:
        try:
            entries, revision = await self.log.read(self.state.applied_seq)
        except LogCompacted:
            await self._adopt_snapshot()
            entries, revision = await self.log.read(self.state.applied_seq)
        self.apply_entries(entries)
        self._revision = revision

    async def _adopt_snapshot(self) -> None:
        snapshot = await self.log.load_snapshot()
        if snapshot is None or snapshot[0] <= self.state.applied_seq:
            return
        seq, data = snapshot
        logger.warning(
            "this coordinator fell behind the compacted log; jumping from seq %d to the "
            "snapshot at seq %d (events in between are not published here)",
            self.state.applied_seq,
            seq,
        )
        restored = State.restore(data)
        # The API and the results ingester hold this State object: fill it, do not replace it.
        vars(self.state).clear()
        vars(self.state).update(vars(restored))
        self._snapshot_seq = seq
        self.pending.fail_through(
            seq, CoordinatorUnavailable(f"its result was skipped here; {MAYBE_APPLIED}")
        )
        self._notify_waiters()

    def apply_entries(self, entries: list[tuple[int, bytes]]) -> None:
        applied: list[Event] = []
        try:
            for seq, entry in entries:
                if seq <= self.state.applied_seq:
                    continue
                if seq != self.state.applied_seq + 1:
                    raise _Gap(f"the log jumped from seq {self.state.applied_seq} to {seq}")
                applied.extend(self._apply_one(seq, entry))
        finally:
            self._publish(applied)
            self._notify_waiters()
            self._snapshot_if_due()

    def _apply_one(self, seq: int, entry: bytes) -> list[Event]:
        pending = self.pending.take(seq, entry)
        command = c.decode(entry) if pending is None else pending.command
        try:
            result = apply_entry(self.state, seq, command)
        except Exception:
            if pending is not None:
                resolve(pending, CoordinatorUnavailable(f"applying it failed; {MAYBE_APPLIED}"))
            raise
        if pending is not None:
            resolve(pending, result)
        return [] if isinstance(result, DtfError) else result

    def _publish(self, events: list[Event]) -> None:
        if not events:
            return
        for subscriber in self.subscribers:
            try:
                subscriber(events)
            except Exception:
                logger.exception("event subscriber %r failed", subscriber)

    def _notify_waiters(self) -> None:
        waiting = []
        for seq, waiter in self._waiters:
            if waiter.done():
                continue
            if seq <= self.state.applied_seq:
                waiter.set_result(None)
            else:
                waiting.append((seq, waiter))
        self._waiters = waiting

    def _snapshot_if_due(self) -> None:
        if self.state.applied_seq - self._snapshot_seq < self.snapshot_every:
            return
        if self._snapshotting is not None and not self._snapshotting.done():
            return
        epoch = self._fence()
        if epoch is None:
            return
        self._snapshotting = asyncio.create_task(self._snapshot(epoch), name="dtf-log-snapshot")

    async def _snapshot(self, epoch: int) -> None:
        """Save a snapshot unless a recent one is published: a follower knows only
        the snapshot it started from, so a new leader asks before it snapshots."""
        seq = self.state.applied_seq
        try:
            self._snapshot_seq = max(self._snapshot_seq, await self.log.published_snapshot_seq())
            if self.state.applied_seq - self._snapshot_seq < self.snapshot_every:
                return
            seq, data = self.state.applied_seq, self.state.snapshot()
            published = await self.log.save_snapshot(seq, data, fence_epoch=epoch)
            self._snapshot_seq = max(self._snapshot_seq, published)
        except DtfError as exc:
            logger.warning("could not save the snapshot at seq %d: %s", seq, exc)
