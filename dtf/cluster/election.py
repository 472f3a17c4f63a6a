"""Leader election over an etcd lease, with self-fencing and a leadership history.

How this works: every node holds one lease (TTL ``ttl_s``), refreshed every
TTL/3, and watches ``P/leader``. When that key is absent, a node campaigns: one
transaction creates it, attached to the node's lease, only if it does not exist
and the node's ``P/disabled/<id>`` flag does not either. So two nodes never
hold the key at once and a disabled node never wins. The epoch is the key's
create revision. A node leads while etcd shows its key and its ``LeaseClock``
is sure the lease lives; when refreshes fail for that long, or etcd answers the
lease is gone, it steps down at once, before etcd can expire the lease and let
another node win. ``fence()`` gives the bus the epoch for leader-only appends,
which etcd checks again inside the append transaction. A leader that resigns
closes its term and deletes the key in one fenced transaction, so the others
(which campaign as soon as their watch shows the key gone) take over at once.

Three tasks share the state on one event loop: the lease keeper
(``CampaignLease``), the leader watcher, and the actor, which campaigns,
records terms and resigns when woken.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from dtf.cluster.campaign_lease import CampaignLease
from dtf.cluster.etcd import (
    Etcd,
    EtcdError,
    KeyValue,
    LeaseNotFound,
    WatchEvent,
    create_revision_equals,
    get_op,
    put_op,
    version_equals,
)
from dtf.cluster.history import (
    CorruptRecord,
    LeaderInfo,
    RecordsChanged,
    StoredTerms,
    backoff_s,
    closing_txn,
    cluster_prefix,
    decode_leader,
    disabled_key,
    encode_leader,
    leader_key,
    oldest_kept_epoch,
    opening_txn,
    read_terms,
    term_key,
    terms_prefix,
)
from dtf.cluster.loops import follow, level
from dtf.cluster.view import LeaderTerm

log = logging.getLogger(__name__)

ChangeCallback = Callable[[LeaderInfo | None, LeaderInfo | None], None]
"""Called with (previous, current) leader each time this node's view of it changes."""

SHUTDOWN = "resigned: shutdown"
DISABLED = "resigned: disabled"


@dataclass(frozen=True)
class _Observed:
    """The leader key as of etcd revision ``revision`` (lease 0 when absent)."""

    leader: LeaderInfo | None
    lease: int
    revision: int


class Election:
    def __init__(
        self,
        etcd: Etcd,
        cluster: str,
        node_id: str,
        url: str,
        *,
        ttl_s: int = 1,
        on_change: ChangeCallback | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.etcd = etcd
        self.node_id = node_id
        self.url = url
        self.ttl_s = ttl_s
        self._on_change = on_change
        self._clock = clock
        self._wall_clock = wall_clock
        self._prefix = cluster_prefix(cluster)
        self._leader_key = leader_key(self._prefix)
        self._disabled_key = disabled_key(self._prefix, node_id)
        self._lease = CampaignLease(
            etcd, node_id, ttl_s, clock=clock, on_granted=self._wake, on_lost=self._lost_lease
        )
        self._observed = _Observed(None, 0, 0)
        self._term: LeaderInfo | None = None
        self._last_seen: LeaderInfo | None = None
        self._predecessor: LeaderInfo | None = None
        self._recorded_epoch = 0
        self._reported: LeaderInfo | None = None
        self._is_disabled = False
        self._is_stopping = False
        self._hold_until = -math.inf
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def is_leader(self) -> bool:
        return self._term is not None and self._lease.is_live()

    @property
    def leader(self) -> LeaderInfo | None:
        """The leader as this node knows it; None while there is none or it is unsure."""
        if self.is_leader:
            return self._term
        seen = self._observed.leader
        return None if seen is None or seen.node_id == self.node_id else seen

    def fence(self) -> int | None:
        """The epoch while this node leads and its lease surely lives, else None."""
        term = self._term
        return term.epoch if term is not None and self.is_leader else None

    def set_disabled(self, is_disabled: bool) -> None:
        """Take this node out of elections (it resigns if it leads) or put it back."""
        self._is_disabled = is_disabled
        if not is_disabled:
            self._hold_until = -math.inf
        self._wake()

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._lease.keep(), name="dtf-election-lease"),
            asyncio.create_task(self._follow_leader(), name="dtf-election-watch"),
            asyncio.create_task(self._act_when_woken(), name="dtf-election-actor"),
        ]

    async def stop(self, *, resign: bool = True) -> None:
        """Resign and give the lease back; ``resign=False`` stops as a crash would."""
        self._is_stopping = True
        if resign:
            await self.resign(SHUTDOWN)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if resign:
            await self._lease.give_back()
        self._lease.forget()
        self._term = None
        self._report()

    async def resign(self, reason: str) -> None:
        """Close this node's term with ``reason`` and hand leadership over at once."""
        term = self._term
        if term is None:
            return
        self._term = None
        self._hold_until = self._clock() + self.ttl_s
        self._report()
        compare, ops = closing_txn(self._prefix, term, self._wall_clock(), reason)
        try:
            result = await self.etcd.txn(compare, ops)
        except EtcdError as exc:
            if self._lease.id is not None:
                self._lease.lose(self._lease.id, f"its resignation did not reach etcd ({exc})")
            return
        if result.succeeded:
            self._log_term(logging.INFO, "leader_resigned", term.epoch, reason)

    async def history(self) -> list[LeaderTerm]:
        """The recorded terms, newest first."""
        terms = await self._read_terms()
        return [term for term, _ in reversed(terms.values())]

    async def _read_terms(self) -> StoredTerms:
        kvs, _ = await self.etcd.get_prefix(terms_prefix(self._prefix))
        stored, skipped = read_terms(kv.value for kv in kvs)
        for why in skipped:
            log.warning("skipping a leadership record: %s", why)
        return stored

    # the lease

    def _lost_lease(self, why: str) -> None:
        term, self._term = self._term, None
        if term is not None:
            self._log_term(logging.WARNING, "leader_fenced", term.epoch, f"steps down: {why}")
        self._report()
        self._wake()

    # the leader watcher

    async def _follow_leader(self) -> None:
        await follow(
            self.etcd,
            self._leader_key,
            self._read_leader,
            self._take_leader_events,
            what=f"{self.node_id}'s election",
            errors=(EtcdError, CorruptRecord),
        )

    def _take_leader_events(self, events: list[WatchEvent]) -> None:
        for event in events:
            if event.kv.key == self._leader_key:
                self._see(event.kv if event.kind == "put" else None, event.kv.mod_revision)

    async def _read_leader(self) -> int:
        result = await self.etcd.txn([], [get_op(self._leader_key)])
        self._see(result.gets[0], result.revision)
        return result.revision

    def _see(self, kv: KeyValue | None, revision: int) -> None:
        """Take in the leader key as of ``revision``: adopt it, step down, or just note it."""
        if revision < self._observed.revision:
            return
        leader = None if kv is None else decode_leader(kv.value, kv.create_revision)
        lease = 0 if kv is None else kv.lease
        is_first = self._observed.revision == 0
        is_news = is_first or (leader, lease) != (self._observed.leader, self._observed.lease)
        self._observed = _Observed(leader, lease, revision)
        term = self._term
        if term is not None and (leader is None or leader.epoch != term.epoch):
            self._log_term(logging.WARNING, "leader_deposed", term.epoch, "was deposed")
            self._term = None
        elif term is None and is_news and leader is not None and self._holds(leader, lease):
            self._log_term(logging.INFO, "leader_elected", leader.epoch, "leads")
            self._term = leader
            self._predecessor = self._last_seen
        if leader is not None:
            self._last_seen = leader
        self._report()
        if is_news or term != self._term:
            self._wake()

    def _holds(self, leader: LeaderInfo, lease: int) -> bool:
        is_ours = leader.node_id == self.node_id and lease == self._lease.id
        return is_ours and self._lease.is_live() and not self._is_stopping

    def _log_term(self, level: int, event: str, epoch: int, what: str) -> None:
        extra = {"event": event, "epoch": epoch}
        log.log(level, "%s (epoch %d) %s", self.node_id, epoch, what, extra=extra)

    def _report(self) -> None:
        current = self.leader
        if current == self._reported:
            return
        previous, self._reported = self._reported, current
        if self._on_change is None:
            return
        try:
            self._on_change(previous, current)
        except Exception:
            # a listener's bug must not stop the lease keeper or the watcher
            log.exception("leadership listener failed on %s -> %s", previous, current)

    # the actor

    def _wake(self) -> None:
        self._wakeup.set()

    async def _act_when_woken(self) -> None:
        failures = 0
        while True:
            await self._wait_for_wakeup()
            try:
                await self._act()
                failures = 0
            except (EtcdError, CorruptRecord, RecordsChanged) as exc:
                log.log(level(failures), "%s could not act on the election: %s", self.node_id, exc)
                await asyncio.sleep(backoff_s(failures))
                failures += 1
                self._wake()

    async def _wait_for_wakeup(self) -> None:
        hold_s = self._hold_until - self._clock()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(hold_s if hold_s > 0 else None):
                await self._wakeup.wait()
        self._wakeup.clear()

    async def _act(self) -> None:
        term = self._term
        if term is not None:
            if self._is_disabled:
                await self.resign(DISABLED)
            elif self._recorded_epoch != term.epoch:
                await self._record_term(term)
        elif self._may_campaign():
            await self._campaign()

    def _may_campaign(self) -> bool:
        now = self._clock()
        return (
            not self._is_disabled
            and not self._is_stopping
            and self._observed.revision > 0
            and self._observed.leader is None
            and self._lease.is_live()
            and now >= self._hold_until
        )

    async def _campaign(self) -> None:
        lease = self._lease.id or 0
        value = encode_leader(self.node_id, self.url, self._wall_clock())
        try:
            result = await self.etcd.txn(
                [
                    create_revision_equals(self._leader_key, 0),
                    version_equals(self._disabled_key, 0),
                ],
                [put_op(self._leader_key, value, lease)],
                [get_op(self._leader_key), get_op(self._disabled_key)],
            )
        except LeaseNotFound:
            self._lease.lose(lease, "etcd says its lease is gone")
            return
        if result.succeeded:
            won = KeyValue(self._leader_key, value, result.revision, result.revision, 1, lease)
            self._see(won, result.revision)
            return
        self._see(result.gets[0], result.revision)
        if result.gets[1] is not None:
            # a flag may come and go unseen by Members: look again after a while
            self._hold_until = self._clock() + self.ttl_s
            log.debug("%s is disabled and does not campaign", self.node_id)

    async def _record_term(self, term: LeaderInfo) -> None:
        """Write this term's record and close the expired ones before it."""
        stored = await self._read_terms()
        compare, puts = opening_txn(self._prefix, term, stored, self._predecessor)
        result = await self.etcd.txn(compare, puts, [get_op(self._leader_key)])
        if not result.succeeded:
            self._see(result.gets[0], result.revision)
            if self._term == term:
                raise RecordsChanged(f"leadership records changed while epoch {term.epoch} wrote")
            return
        self._recorded_epoch = term.epoch
        oldest = oldest_kept_epoch([*stored, term.epoch])
        if oldest is not None:
            await self.etcd.delete_range(terms_prefix(self._prefix), term_key(self._prefix, oldest))
