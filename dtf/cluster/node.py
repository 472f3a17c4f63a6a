"""One coordinator's membership of a cluster: its etcd connection, the shared log,
the election, the node registry and the cluster view, opened and closed in order.

How this works: ``open`` connects to etcd and rebuilds the state from the
cluster's snapshot and log (so the coordinator serves nothing until it has
caught up); ``start`` registers the node and joins the election. Each time this
node becomes leader, ``on_elected`` runs (the coordinator journals its settings
and a fresh lease period there). While it leads, it also journals
``CoordinatorNodeLost`` for each node incarnation that live workers are still
connected through but the registry no longer lists (``dtf.core.stranding``):
its watch of the registry says which to suspect, a fresh read of the registry
confirms them, since the watch may lag behind the log. ``stop`` resigns first,
so another node takes over at once instead of after the lease TTL, then stops
the bus and closes etcd.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from dtf.cluster.bus import ClusterBus
from dtf.cluster.election import ChangeCallback, Election
from dtf.cluster.etcd import Etcd
from dtf.cluster.etcd_view import EtcdClusterView
from dtf.cluster.history import LeaderInfo
from dtf.cluster.log import EtcdLog
from dtf.cluster.loops import level
from dtf.cluster.members import Members
from dtf.cluster.settings import ClusterSettings
from dtf.core import commands as c
from dtf.core.stranding import nodes_to_declare_lost
from dtf.errors import DtfError

log = logging.getLogger(__name__)

OnElected = Callable[[], Awaitable[None]]
REGISTRY_TTL_FACTOR = 3
"""A node's registry record outlives an etcd stall that costs it leadership."""
LOST_NODES_CHECK_S = 1.0
"""How often the leader looks for lost nodes when the registry does not change."""


@dataclass
class ClusterNode:
    settings: ClusterSettings
    etcd: Etcd
    bus: ClusterBus
    election: Election
    members: Members
    view: EtcdClusterView
    _on_elected: OnElected | None = None
    _leading: asyncio.Task[None] | None = None
    _lost_nodes: asyncio.Task[None] | None = None

    @property
    def registry_ttl_s(self) -> int:
        """How long a node's record outlives the node: the longest a node loss goes unnoticed."""
        return REGISTRY_TTL_FACTOR * self.settings.lease_ttl_s

    @property
    def incarnation(self) -> str:
        """This node process's id in the registry; journaled with each worker registration."""
        return self.members.incarnation

    @classmethod
    async def open(cls, settings: ClusterSettings, *, snapshot_every: int) -> ClusterNode:
        """Connect to etcd and catch up with the cluster's state."""
        etcd = await Etcd.connect(settings.etcd)
        try:
            return await cls._build(settings, etcd, snapshot_every)
        except BaseException:
            await etcd.close()
            raise

    @classmethod
    async def _build(
        cls, settings: ClusterSettings, etcd: Etcd, snapshot_every: int
    ) -> ClusterNode:
        name, node_id, url = settings.name, settings.node_id, settings.advertise_url
        listeners: list[ChangeCallback] = []

        def on_change(previous: LeaderInfo | None, current: LeaderInfo | None) -> None:
            for listener in listeners:
                listener(previous, current)

        election = Election(
            etcd, name, node_id, url, ttl_s=settings.lease_ttl_s, on_change=on_change
        )
        bus = await ClusterBus.recover(
            EtcdLog(etcd, name), snapshot_every=snapshot_every, fence=election.fence
        )
        members = Members(
            etcd,
            name,
            node_id,
            url,
            ttl_s=REGISTRY_TTL_FACTOR * settings.lease_ttl_s,
            applied_seq=lambda: bus.applied_seq,
            on_disabled=election.set_disabled,
        )
        view = EtcdClusterView(
            name,
            election,
            members,
            applied_seq=lambda: bus.applied_seq,
            log_seq=lambda: bus.log_seq,
            applying_stopped=lambda: bus.applying_stopped,
        )
        node = cls(settings, etcd, bus, election, members, view)
        listeners.append(node._leader_changed)
        return node

    async def start(self, on_elected: OnElected) -> None:
        """Register this node, start the view and join the election (the bus runs already)."""
        self._on_elected = on_elected
        await self.members.start()
        self.view.start()
        await self.election.start()
        self._lost_nodes = asyncio.create_task(self._declare_lost_nodes(), name="dtf-lost-nodes")
        self._lost_nodes.add_done_callback(_log_unexpected_end)
        log.info(
            "node %s joined cluster %s through etcd %s",
            self.settings.node_id,
            self.settings.name,
            self.etcd.endpoint,
            extra={"event": "cluster_joined"},
        )

    async def stop(self) -> None:
        """Resign (instant hand-over), stop the bus, leave the registry, close etcd."""
        await self.election.stop(resign=True)
        tasks = [task for task in (self._leading, self._lost_nodes) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.bus.stop()
        await self.view.stop()
        await self.members.stop()
        await self.etcd.close()

    def _leader_changed(self, previous: LeaderInfo | None, current: LeaderInfo | None) -> None:
        self.view.on_leader_change(previous, current)
        me = self.settings.node_id
        gained = current is not None and current.node_id == me
        if gained and (previous is None or previous.node_id != me) and self._on_elected:
            self._leading = asyncio.create_task(self._lead(current), name="dtf-leader-start")

    async def _lead(self, term: LeaderInfo | None) -> None:
        assert self._on_elected is not None and term is not None
        log.info(
            "%s leads cluster %s (epoch %d)",
            self.settings.node_id,
            self.settings.name,
            term.epoch,
            extra={"event": "leader_elected", "epoch": term.epoch},
        )
        try:
            await self._on_elected()
        except DtfError as exc:
            log.warning("could not journal the start of epoch %d: %s", term.epoch, exc)

    async def _declare_lost_nodes(self) -> None:
        """While this node leads, journal the loss of every node incarnation that
        live workers are connected through and the registry no longer lists
        (looked at whenever the registry changes, and every ``LOST_NODES_CHECK_S``).
        A failure is logged (once in a row as a warning) and the checks go on."""
        failures = 0
        while True:
            await self.members.wait_nodes_changed(LOST_NODES_CHECK_S)
            try:
                await self._check_lost_nodes()
                failures = 0
            except DtfError as exc:
                log.log(level(failures), "could not journal a lost coordinator node: %s", exc)
                failures += 1
            except Exception:
                log.exception("checking for lost coordinator nodes failed; trying again")

    async def _check_lost_nodes(self) -> None:
        listed = self.members.listed
        if not self.election.is_leader or listed is None:
            return
        own = (self.settings.node_id, self.incarnation)
        suspects = nodes_to_declare_lost(self.bus.state.workers.values(), listed, own)
        if not suspects:
            return
        # The suspects' registrations were applied before this read was sent, so
        # their nodes' records, written before those nodes served, are in it if alive.
        registry = await self.members.registry()
        lost = nodes_to_declare_lost(self.bus.state.workers.values(), registry, own)
        for node_id, incarnation in suspects:
            if (node_id, incarnation) in lost:
                await self._declare_lost(node_id, incarnation)

    async def _declare_lost(self, node_id: str, incarnation: str) -> None:
        log.warning(
            "coordinator node %s (incarnation %s) left the registry while workers were "
            "connected through it",
            node_id,
            incarnation or "unknown",
            extra={"event": "coordinator_node_lost", "node_id": node_id},
        )
        await self.bus.execute(c.CoordinatorNodeLost(time.time(), node_id, incarnation))


def _log_unexpected_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the lost-node check stopped", exc_info=task.exception())
