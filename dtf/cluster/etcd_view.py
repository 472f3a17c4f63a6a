"""The cluster as one node sees it, kept current from etcd for the cluster API.

How this works: a refresher task reads the node records (``Members.nodes``)
every ``refresh_s`` and the leadership history whenever the election reports a
change, and keeps the last answers. Routes read those answers and never wait on
etcd. Each change is pushed to listeners: ``cluster_status_update`` when
membership, roles, health or enabled flags change (applied positions alone are
not news), ``leadership_update`` when a term began or ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from dtf.cluster.election import Election
from dtf.cluster.etcd import EtcdError
from dtf.cluster.history import LeaderInfo
from dtf.cluster.members import Members
from dtf.cluster.view import (
    LEADERSHIP_UPDATE,
    STATUS_UPDATE,
    ClusterListener,
    ClusterStatus,
    LeaderTerm,
    NodeInfo,
    UpdateKind,
    find_node,
    leadership_json,
    status_json,
)
from dtf.errors import Conflict

log = logging.getLogger(__name__)

REFRESH_S = 0.5
MAX_HEALTHY_LAG = 1000


class EtcdClusterView:
    """A ``dtf.cluster.view.ClusterView`` over the election, the members registry and the bus."""

    def __init__(
        self,
        name: str,
        election: Election,
        members: Members,
        *,
        applied_seq: Callable[[], int],
        log_seq: Callable[[], int],
        applying_stopped: Callable[[], str | None] = lambda: None,
        refresh_s: float = REFRESH_S,
    ) -> None:
        self.name = name
        self.election = election
        self.members = members
        self._applied_seq = applied_seq
        self._log_seq = log_seq
        self._applying_stopped = applying_stopped
        self.refresh_s = refresh_s
        self._nodes: list[NodeInfo] = []
        self._terms: list[LeaderTerm] = []
        self._etcd_error: str | None = "not read from etcd yet"
        self._listeners: list[ClusterListener] = []
        self._leadership_changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def node_id(self) -> str:
        return self.election.node_id

    def start(self) -> None:
        self._task = asyncio.create_task(self._refresh_forever(), name="dtf-cluster-view")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def on_leader_change(self, _previous: LeaderInfo | None, _current: LeaderInfo | None) -> None:
        """The election's callback: read the history again soon."""
        self._leadership_changed.set()

    def status(self) -> ClusterStatus:
        healthy, detail = self.health()
        current = self.election.leader
        return ClusterStatus(
            name=self.name,
            mode="cluster",
            node_id=self.node_id,
            leader=None if current is None else self._term_of(current),
            is_leader=self.election.is_leader,
            applied_seq=self._applied_seq(),
            log_seq=self._log_seq(),
            nodes=self.nodes(),
            healthy=healthy,
            detail=detail,
        )

    def nodes(self) -> list[NodeInfo]:
        leader = self.election.leader
        leader_id = None if leader is None else leader.node_id
        return [
            replace(node, role="leader" if node.node_id == leader_id else "follower")
            for node in self._nodes
        ]

    def leadership(self) -> list[LeaderTerm]:
        return list(self._terms)

    def health(self) -> tuple[bool, str]:
        reason = self.members.disabled_reason
        if reason is not None:
            return False, f"disabled: {reason}"
        stopped = self._applying_stopped()
        if stopped is not None:
            return False, stopped
        if self._etcd_error is not None:
            return False, f"cannot read the cluster from etcd: {self._etcd_error}"
        if self.election.leader is None:
            return False, "no leader: an election is under way"
        lag = self._log_seq() - self._applied_seq()
        if lag > MAX_HEALTHY_LAG:
            return False, f"{lag} log entries behind the tail (more than {MAX_HEALTHY_LAG})"
        role = "leader" if self.election.is_leader else "follower"
        return True, f"{role}, {lag} entries behind the log tail"

    async def set_node_enabled(self, node_id: str, enabled: bool, reason: str) -> NodeInfo:
        nodes = await self.members.nodes(log_seq=self._log_seq())
        node = find_node(nodes, node_id)
        if not enabled and not any(n.enabled for n in nodes if n.node_id != node_id):
            raise Conflict(
                f"disabling {node_id!r} would leave no enabled coordinator to lead; "
                "enable or start another node first"
            )
        await self.members.set_enabled(node_id, enabled, reason)
        await self._refresh_nodes()
        return find_node(self.nodes(), node.node_id)

    def subscribe(self, listener: ClusterListener) -> None:
        self._listeners.append(listener)

    def _term_of(self, leader: LeaderInfo) -> LeaderTerm:
        for term in self._terms:
            if term.epoch == leader.epoch:
                return term
        return leader.as_term()

    async def _refresh_forever(self) -> None:
        while True:
            if self._leadership_changed.is_set() or not self._history_agrees():
                self._leadership_changed.clear()
                await self._refresh_terms()
            await self._refresh_nodes()
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow the
            # cancellation from stop() when the event is set at the same moment.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.refresh_s):
                    await self._leadership_changed.wait()

    async def _refresh_nodes(self) -> None:
        before = self._shape()
        try:
            self._nodes = await self.members.nodes(log_seq=self._log_seq())
            self._etcd_error = None
        except EtcdError as exc:
            self._etcd_error = exc.message
        if self._shape() != before:
            self._push(STATUS_UPDATE, status_json(self.status()))

    async def _refresh_terms(self) -> None:
        try:
            terms = await self.election.history()
        except EtcdError as exc:
            self._etcd_error = exc.message
            self._leadership_changed.set()
            return
        if terms != self._terms:
            self._terms = terms
            self._push(LEADERSHIP_UPDATE, leadership_json(terms))
            self._push(STATUS_UPDATE, status_json(self.status()))

    def _history_agrees(self) -> bool:
        """Whether the history read last shows the term the election sees (a new
        leader records its term just after winning, so a read can come too early)."""
        leader = self.election.leader
        current = self._terms[0] if self._terms and self._terms[0].ended_at is None else None
        if leader is None:
            return current is None
        return current is not None and current.epoch == leader.epoch

    def _shape(self) -> tuple[object, ...]:
        """What a status update is about: who is up, their role, flags, health."""
        nodes = tuple((n.node_id, n.url, n.enabled, n.healthy) for n in self.nodes())
        return nodes, self.health()[0], self.election.is_leader

    def _push(self, kind: UpdateKind, payload: dict[str, Any]) -> None:
        for listener in self._listeners:
            try:
                listener(kind, payload)
            except Exception:
                log.exception("cluster listener %r failed", listener)
