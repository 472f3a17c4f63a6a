"""The etcd lease a node campaigns and leads with.

How this works: the lease is granted, then refreshed every TTL/3. Its
``LeaseClock`` says until when the node is sure it lives: the time the last
successful refresh was *sent* plus the TTL less a margin, by the node's own
monotonic clock. A refresh that does not answer within that time, or etcd
saying the lease is gone, loses it at once (``on_lost``), before etcd can
expire it and let another node win; a new one is granted on the next round
(``on_granted``). A lost or given-up lease is revoked as soon as etcd
answers, so the leader key it may still carry goes with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from dtf.cluster.etcd import Etcd, EtcdError
from dtf.cluster.history import LeaseClock, backoff_s
from dtf.cluster.loops import keep_doing

log = logging.getLogger(__name__)


class CampaignLease:
    def __init__(
        self,
        etcd: Etcd,
        node_id: str,
        ttl_s: int,
        *,
        clock: Callable[[], float],
        on_granted: Callable[[], None],
        on_lost: Callable[[str], None],
    ) -> None:
        self.etcd = etcd
        self.node_id = node_id
        self.ttl_s = ttl_s
        self.id: int | None = None
        self._clock = clock
        self._lease_clock = LeaseClock(ttl_s)
        self._abandoned: set[int] = set()
        self._on_granted = on_granted
        self._on_lost = on_lost

    def is_live(self) -> bool:
        """Whether this node holds a lease it is sure still lives."""
        return self.id is not None and self._lease_clock.is_valid(self._clock())

    async def keep(self) -> None:
        """Hold a lease until cancelled."""
        await keep_doing(
            self._renew,
            what=f"{self.node_id}'s election lease",
            retry_s=lambda failures: backoff_s(failures, max_s=self.ttl_s / 3),
        )

    def lose(self, lease: int, why: str) -> None:
        """Give ``lease`` up (if it is still the one held) and say why."""
        if self.id != lease:
            return
        self._abandoned.add(lease)
        self.id = None
        self._lease_clock.lost()
        self._on_lost(why)

    async def give_back(self) -> None:
        """Revoke the lease held (a clean stop), as far as etcd answers."""
        if self.id is not None:
            self._abandoned.add(self.id)
        self.forget()
        await self._revoke_abandoned()

    def forget(self) -> None:
        self.id = None
        self._lease_clock.lost()

    async def _renew(self) -> float:
        if self._abandoned:
            await self._revoke_abandoned()
        if self.id is None:
            await self._grant()
        else:
            await self._refresh(self.id)
        return self.ttl_s / 3

    async def _grant(self) -> None:
        sent_at = self._clock()
        self.id = await self.etcd.grant_lease(self.ttl_s)
        self._lease_clock.lost()
        self._lease_clock.renewed(sent_at, self.ttl_s)
        self._on_granted()

    async def _refresh(self, lease: int) -> None:
        sent_at = self._clock()
        try:
            async with asyncio.timeout(self._lease_clock.time_left_s(sent_at)):
                remaining_s = await self.etcd.refresh_lease(lease)
        except TimeoutError:
            self.lose(lease, f"its lease was not renewed within {self.ttl_s} s")
            return
        if remaining_s <= 0:
            self.lose(lease, "etcd says its lease is gone")
        else:
            self._lease_clock.renewed(sent_at, remaining_s)

    async def _revoke_abandoned(self) -> None:
        for lease in sorted(self._abandoned):
            try:
                await self.etcd.revoke_lease(lease)
            except EtcdError as exc:
                log.debug("lease %x not revoked yet: %s", lease, exc)
                return
            self._abandoned.discard(lease)
