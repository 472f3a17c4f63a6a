"""The command bus of a coordinator cluster: check, append to etcd, apply from the watch.

How this works: ``enqueue`` checks a command against the local state (which may
be a little behind the log) and queues it. The writer (``log_writer.py``)
appends everything queued so far to the etcd log as one batch, compare-and-
swapping the tail it knows and learning the new tail when another coordinator
appended first. The applier (``log_applier.py``) follows the log's watch and
applies every entry, from every coordinator, in seq order, exactly as
``CommandBus`` does; a command's future resolves once its entry is applied
here, with the events or the rejection the state machine gave
(``pending.py``). Nothing is acknowledged before it is in etcd and applied
locally.

``Tick``, ``Configure`` and ``CoordinatorStarted`` are the leader's alone: they
are appended fenced by ``fence()`` (the leader's epoch, None on a follower).
When etcd fails the applier catches up from the log (or the newest snapshot)
with bounded backoff; futures whose command may or may not be applied then
resolve with ``CoordinatorUnavailable`` saying so: callers retry idempotently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from dtf.cluster.log import EtcdLog, LogCompacted, NotLeader, check_entry
from dtf.cluster.log_applier import LogApplier, Subscriber, apply_entry
from dtf.cluster.log_writer import LEADER_ONLY, Fence, LogWriter
from dtf.cluster.pending import MAYBE_APPLIED, Pending, PendingCommands
from dtf.core import commands as c
from dtf.core.events import Event
from dtf.core.state import State
from dtf.errors import CoordinatorUnavailable

logger = logging.getLogger(__name__)

RECOVER_TRIES = 3
STOP_WAIT_S = 5.0


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
        self._fence = fence
        self._pending = PendingCommands()
        self._writer = LogWriter(
            log,
            self._pending,
            fence=fence,
            applied_seq=lambda: state.applied_seq,
            on_appended=self._apply_appended,
        )
        self._applier = LogApplier(
            log,
            state,
            self._pending,
            revision=revision,
            snapshot_seq=snapshot_seq,
            snapshot_every=snapshot_every,
            fence=fence,
        )
        self._writing: asyncio.Task[None] | None = None
        self._applying: asyncio.Task[None] | None = None
        self.applying_stopped: str | None = None  # why this node no longer applies the log

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

    def _apply_appended(self, first_seq: int, entries: list[bytes]) -> None:
        """Apply a batch this node just appended without waiting for the watch to
        bring it back, when every entry before it is applied here already; the
        watch's copies are then skipped. A round trip less per command."""
        if self.applying_stopped is not None or self.state.applied_seq != first_seq - 1:
            return
        try:
            self._applier.apply_entries(list(enumerate(entries, start=first_seq)))
        except Exception:
            # as when the applier fails: this state can no longer be trusted
            self._stop_applying()
            if self._applying is not None:
                self._applying.cancel()

    @property
    def applied_seq(self) -> int:
        return self.state.applied_seq

    @property
    def log_seq(self) -> int:
        """The log's tail as last seen: the newest entry any coordinator appended."""
        return self._writer.known_tail

    def subscribe(self, subscriber: Subscriber) -> None:
        self._applier.subscribers.append(subscriber)

    def start(self) -> None:
        self._writing = asyncio.create_task(self._writer.run(), name="dtf-log-writer")
        self._applying = asyncio.create_task(self._run_applier(), name="dtf-log-applier")

    async def stop(self) -> None:
        """Append what is queued, wait (a bounded time) until it is applied, stop."""
        self._writer.close()
        if self._writing is not None:
            await self._writing
        if self._pending:
            with contextlib.suppress(CoordinatorUnavailable):
                await self.wait_applied(self._pending.highest_seq, STOP_WAIT_S)
        if self._applying is not None:
            self._applying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._applying
        await self._applier.stop_snapshotting()
        self._pending.fail_all(
            CoordinatorUnavailable(
                f"this coordinator stopped before applying the command; {MAYBE_APPLIED}"
            )
        )

    def enqueue(self, command: c.Command) -> asyncio.Future[list[Event]]:
        """Check ``command`` against the local state and queue it; the future
        resolves once it is in the etcd log and applied here. Raises at once
        (``NotLeader`` for a leader-only command on a follower, or the check's
        ``DtfError``) before anything is written."""
        if self._writer.is_closed:
            raise CoordinatorUnavailable("the coordinator is shutting down; retry shortly")
        if isinstance(command, LEADER_ONLY) and self._fence() is None:
            raise NotLeader(f"appending {type(command).__name__}")
        self.state.check(command)
        entry = c.encode(command)
        check_entry(entry)
        future: asyncio.Future[list[Event]] = asyncio.get_running_loop().create_future()
        self._writer.add(Pending(command, entry, future))
        return future

    async def execute(self, command: c.Command) -> list[Event]:
        return await self.enqueue(command)

    async def wait_applied(self, seq: int, timeout_s: float) -> None:
        """Return once entries up to ``seq`` are applied here; ``CoordinatorUnavailable``
        after ``timeout_s``."""
        await self._applier.wait_applied(seq, timeout_s)

    async def _run_applier(self) -> None:
        try:
            await self._applier.run()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise
            self._stop_applying()
        except Exception:
            self._stop_applying()

    def _stop_applying(self) -> None:
        self.applying_stopped = (
            f"stopped applying the log after seq {self.state.applied_seq}; restart this coordinator"
        )
        logger.exception(
            "cannot apply the log of cluster %s after seq %d; this coordinator stops taking writes",
            self.log.cluster,
            self.state.applied_seq,
        )
        self._writer.close()
        self._pending.fail_all(
            CoordinatorUnavailable(f"this coordinator stopped applying the log; {MAYBE_APPLIED}")
        )
