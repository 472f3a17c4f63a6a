"""The command bus of a coordinator cluster: check, append to etcd, apply from the watch.

How this works: ``enqueue`` checks a command against the local state (which may
be a little behind the log) and queues it. One writer task appends everything
queued so far to the etcd log as one batch, compare-and-swapping the tail it
knows (the highest seq seen in the log) and learning the new tail when another
coordinator appended first. One applier task follows the log's watch and applies
every entry, from every coordinator, in seq order, exactly as ``CommandBus``
does; a command's future resolves once its entry is applied here, with the
events or the rejection the state machine gave. Nothing is acknowledged before
it is in etcd and applied locally.

``Tick``, ``Configure`` and ``CoordinatorStarted`` are the leader's alone: they
are appended fenced by ``fence()`` (the leader's epoch, None on a follower).
When etcd fails the applier catches up from the log (or the newest snapshot)
with bounded backoff; futures whose command may or may not be applied then
resolve with ``CoordinatorUnavailable`` saying so: callers retry idempotently.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dtf.cluster.etcd import EtcdError, EtcdUnavailable
from dtf.cluster.log import EtcdLog, LogCompacted, NotLeader, TailMoved, check_entry
from dtf.core import commands as c
from dtf.core.events import Event
from dtf.core.state import State
from dtf.errors import CoordinatorUnavailable, DtfError

logger = logging.getLogger(__name__)

Subscriber = Callable[[list[Event]], None]
Fence = Callable[[], int | None]

LEADER_ONLY = (c.Tick, c.Configure, c.CoordinatorStarted)
MAX_TAIL_RETRIES = 20
RECOVER_TRIES = 3
CATCH_UP_BACKOFF_S = (0.05, 2.0)
STOP_WAIT_S = 5.0
MAYBE_APPLIED = "it may have been applied: retry it (commands are idempotent)"


@dataclass
class _Pending:
    command: c.Command
    entry: bytes
    future: asyncio.Future[list[Event]] = field(repr=False)
    seq: int = 0


class _Gap(DtfError):
    status_code = 503


def apply_entry(state: State, seq: int, command: c.Command) -> list[Event] | DtfError:
    """Apply like ``CommandBus``: a rejected command still takes its seq."""
    try:
        return state.apply(command, seq)
    except DtfError as exc:
        state.applied_seq = seq
        return exc


class ClusterBus:
    def __init__(
        self,
        log: EtcdLog,
        state: State,
        *,
        snapshot_every: int,
        fence: Fence,
        revision: int,
        snapshot_seq: int = 0,
    ) -> None:
        self.log = log
        self.state = state
        self.snapshot_every = snapshot_every
        self._fence = fence
        self._revision = revision
        self._known_tail = state.applied_seq
        self._snapshot_seq = snapshot_seq
        self._queue: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._by_seq: dict[int, _Pending] = {}
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._subscribers: list[Subscriber] = []
        self._writer: asyncio.Task[None] | None = None
        self._applier: asyncio.Task[None] | None = None
        self._snapshotting: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    async def recover(cls, log: EtcdLog, *, snapshot_every: int, fence: Fence) -> ClusterBus:
        """Start from the newest snapshot in etcd and replay the log after it."""
        for _ in range(RECOVER_TRIES):
            snapshot = await log.load_snapshot()
            state = State.restore(snapshot[1]) if snapshot else State()
            snapshot_seq = state.applied_seq
            try:
                entries, revision = await log.read(snapshot_seq)
            except LogCompacted:
                continue
            for seq, entry in entries:
                apply_entry(state, seq, c.decode(entry))
            logger.info(
                "recovered state at log seq %d (%d entries replayed, %d tasks)",
                state.applied_seq,
                len(entries),
                len(state.tasks),
                extra={"event": "recovered", "seq": state.applied_seq},
            )
            return cls(
                log,
                state,
                snapshot_every=snapshot_every,
                fence=fence,
                revision=revision,
                snapshot_seq=snapshot_seq,
            )
        raise CoordinatorUnavailable(
            f"the log of cluster {log.cluster} was compacted {RECOVER_TRIES} times while this "
            "coordinator loaded the snapshot; start it again"
        )

    @property
    def applied_seq(self) -> int:
        return self.state.applied_seq

    @property
    def log_seq(self) -> int:
        """The log's tail as last seen: the newest entry any coordinator appended."""
        return self._known_tail

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name="dtf-log-writer")
        self._applier = asyncio.create_task(self._run_applier(), name="dtf-log-applier")

    async def stop(self) -> None:
        """Append what is queued, wait (a bounded time) until it is applied, stop."""
        self._closed = True
        self._wakeup.set()
        if self._writer is not None:
            await self._writer
        if self._by_seq:
            with contextlib.suppress(CoordinatorUnavailable):
                await self.wait_applied(max(self._by_seq), STOP_WAIT_S)
        for task in (self._applier, self._snapshotting):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._fail_pending(
            CoordinatorUnavailable(
                f"this coordinator stopped before applying the command; {MAYBE_APPLIED}"
            )
        )

    def enqueue(self, command: c.Command) -> asyncio.Future[list[Event]]:
        """Check ``command`` against the local state and queue it; the future
        resolves once it is in the etcd log and applied here. Raises at once
        (``NotLeader`` for a leader-only command on a follower, or the check's
        ``DtfError``) before anything is written."""
        if self._closed:
            raise CoordinatorUnavailable("the coordinator is shutting down; retry shortly")
        if isinstance(command, LEADER_ONLY) and self._fence() is None:
            raise NotLeader(f"appending {type(command).__name__}")
        self.state.check(command)
        entry = c.encode(command)
        check_entry(entry)
        future: asyncio.Future[list[Event]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(command, entry, future))
        self._wakeup.set()
        return future

    async def execute(self, command: c.Command) -> list[Event]:
        return await self.enqueue(command)

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

    # -- the writer -----------------------------------------------------------

    async def _write_loop(self) -> None:
        while not (self._closed and not self._queue):
            await self._wakeup.wait()
            self._wakeup.clear()
            batch, self._queue = self._queue, []
            runs = itertools.groupby(batch, key=lambda p: isinstance(p.command, LEADER_ONLY))
            for is_fenced, run in runs:
                await self._write_run(list(run), is_fenced=is_fenced)

    async def _write_run(self, run: list[_Pending], *, is_fenced: bool) -> None:
        try:
            epoch = self._fence() if is_fenced else None
            if is_fenced and epoch is None:
                raise NotLeader(f"appending {len(run)} leader-only commands")
            await self._append(run, epoch)
        except EtcdUnavailable as exc:
            self._fail(run, _unavailable(exc))
        except DtfError as exc:
            self._fail(run, exc)
        except Exception as exc:
            logger.exception("appending %d commands to the etcd log failed", len(run))
            self._fail(run, CoordinatorUnavailable(f"could not append to the log: {exc}"))

    async def _append(self, run: Sequence[_Pending], epoch: int | None) -> None:
        """Append ``run`` after the known tail, learning the tail again when
        another coordinator appended first."""
        for _ in range(MAX_TAIL_RETRIES):
            expected_tail = self._known_tail
            self._register(run, expected_tail + 1)
            entries = [p.entry for p in run]
            try:
                last_seq = await self.log.append(
                    entries, expected_tail=expected_tail, fence_epoch=epoch
                )
            except TailMoved as moved:
                logger.debug("log tail moved to %d; appending again", moved.actual_tail)
                self._unregister(run[moved.appended :])
                run = [p for p in run[moved.appended :] if not p.future.done()]
                self._known_tail = max(self._known_tail, moved.actual_tail)
                if not run:
                    return
                continue
            self._known_tail = max(self._known_tail, last_seq)
            return
        raise CoordinatorUnavailable(
            f"other coordinators appended first {MAX_TAIL_RETRIES} times in a row; "
            "the command was not appended: retry"
        )

    def _register(self, run: Sequence[_Pending], first_seq: int) -> None:
        for seq, pending in enumerate(run, start=first_seq):
            pending.seq = seq
            self._by_seq[seq] = pending

    def _unregister(self, run: Sequence[_Pending]) -> None:
        for pending in run:
            if self._by_seq.get(pending.seq) is pending:
                del self._by_seq[pending.seq]

    def _fail(self, run: Sequence[_Pending], error: DtfError) -> None:
        self._unregister(run)
        for pending in run:
            if not pending.future.done():
                pending.future.set_exception(error)

    def _fail_pending(self, error: DtfError) -> None:
        """Fail every appended command still waiting to be applied here."""
        run, self._by_seq = list(self._by_seq.values()), {}
        self._fail(run, error)

    # -- the applier ----------------------------------------------------------

    async def _run_applier(self) -> None:
        try:
            await self._apply_forever()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise
            self._stop_applying()
        except Exception:
            self._stop_applying()

    def _stop_applying(self) -> None:
        logger.exception(
            "cannot apply the log of cluster %s after seq %d; this coordinator stops taking writes",
            self.log.cluster,
            self.state.applied_seq,
        )
        self._closed = True
        self._wakeup.set()
        self._fail_pending(
            CoordinatorUnavailable(f"this coordinator stopped applying the log; {MAYBE_APPLIED}")
        )

    async def _apply_forever(self) -> None:
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

    async def _follow_watch(self) -> int:
        """Apply what the watch delivers until it ends; return how many batches it delivered."""
        delivered = 0
        try:
            async with contextlib.aclosing(self.log.watch(self._revision)) as watch:
                async for entries in watch:
                    self._apply_entries(entries)
                    delivered += 1
            logger.warning("the log watch of cluster %s ended; catching up", self.log.cluster)
        except (EtcdError, _Gap) as exc:
            logger.warning(
                "the log watch of cluster %s failed (%s); catching up", self.log.cluster, exc
            )
        return delivered

    async def _catch_up(self) -> None:
        """Read the log after the applied seq (loading the snapshot if that part
        was compacted), retrying with bounded backoff until etcd answers."""
        delay_s, max_delay_s = CATCH_UP_BACKOFF_S
        while True:
            try:
                await self._read_after_applied()
                return
            except (EtcdError, LogCompacted) as exc:
                if self._by_seq:
                    logger.warning(
                        "etcd failed with %d commands unapplied: %s", len(self._by_seq), exc
                    )
                    self._fail_pending(
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
        self._apply_entries(entries)
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
        self._known_tail = max(self._known_tail, seq)
        skipped = [p for s, p in self._by_seq.items() if s <= seq]
        self._fail(skipped, CoordinatorUnavailable(f"its result was skipped here; {MAYBE_APPLIED}"))
        self._notify_waiters()

    def _apply_entries(self, entries: list[tuple[int, bytes]]) -> None:
        applied: list[Event] = []
        try:
            for seq, entry in entries:
                if seq <= self.state.applied_seq:
                    continue
                if seq != self.state.applied_seq + 1:
                    raise _Gap(f"the log jumped from seq {self.state.applied_seq} to {seq}")
                applied.extend(self._apply_one(seq, entry))
        finally:
            self._known_tail = max(self._known_tail, self.state.applied_seq)
            self._publish(applied)
            self._notify_waiters()
            self._snapshot_if_due()

    def _apply_one(self, seq: int, entry: bytes) -> list[Event]:
        result = apply_entry(self.state, seq, c.decode(entry))
        pending = self._by_seq.get(seq)
        if pending is not None and pending.entry == entry:
            del self._by_seq[seq]
            if not pending.future.done():
                if isinstance(result, DtfError):
                    pending.future.set_exception(result)
                else:
                    pending.future.set_result(result)
        return [] if isinstance(result, DtfError) else result

    def _publish(self, events: list[Event]) -> None:
        if not events:
            return
        for subscriber in self._subscribers:
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

    # -- snapshots --------------------------------------------------------------

    def _snapshot_if_due(self) -> None:
        if self.state.applied_seq - self._snapshot_seq < self.snapshot_every:
            return
        if self._snapshotting is not None and not self._snapshotting.done():
            return
        epoch = self._fence()
        if epoch is None:
            return
        seq, data = self.state.applied_seq, self.state.snapshot()
        self._snapshotting = asyncio.create_task(
            self._save_snapshot(seq, data, epoch), name="dtf-log-snapshot"
        )

    async def _save_snapshot(self, seq: int, data: bytes, epoch: int) -> None:
        try:
            published = await self.log.save_snapshot(seq, data, fence_epoch=epoch)
            self._snapshot_seq = max(self._snapshot_seq, published)
        except DtfError as exc:
            logger.warning("could not save the snapshot at seq %d: %s", seq, exc)


def _unavailable(exc: EtcdUnavailable) -> CoordinatorUnavailable:
    if exc.maybe_committed:
        return CoordinatorUnavailable(f"etcd failed while appending the command; {MAYBE_APPLIED}")
    return CoordinatorUnavailable(
        f"etcd is unavailable ({exc.message}); the command was not appended: retry"
    )
