"""What the cluster API serves: this coordinator's view of the cluster it belongs to.

How this works: a ``ClusterView`` answers reads from what it has already
observed (the etcd-backed view keeps node records, the leader key and the
leadership history current through watches), so routes never wait on the
network to describe the cluster. Changes are pushed to listeners as
``cluster_status_update`` (membership, roles, health, applied positions) and
``leadership_update`` (a term began or ended), with the same JSON the REST
routes serve. A coordinator started without ``--cluster`` is a
``StandaloneCluster``: one node, leader of epoch 1 since it started.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

from dtf import __version__
from dtf.errors import Conflict, NotFound

NodeRole = Literal["leader", "follower"]
ClusterMode = Literal["standalone", "cluster"]
UpdateKind = Literal["cluster_status_update", "leadership_update"]
STATUS_UPDATE: UpdateKind = "cluster_status_update"
LEADERSHIP_UPDATE: UpdateKind = "leadership_update"
ClusterListener = Callable[[UpdateKind, dict[str, Any]], None]
"""Called on the event loop with an update kind and its JSON payload; must only queue work."""


@dataclass(frozen=True)
class NodeInfo:
    """One coordinator as the cluster knows it (in etcd: ``/nodes/<id>`` and ``/disabled/<id>``)."""

    node_id: str
    url: str
    role: NodeRole
    enabled: bool
    disabled_reason: str | None
    applied_seq: int
    lag: int  # log entries the node has yet to apply
    started_at: float
    updated_at: float  # when the node last reported its applied position
    healthy: bool
    version: str


@dataclass(frozen=True)
class LeaderTerm:
    """One leadership term (in etcd: ``/leaders/<epoch>``); ``ended_at`` is None while it lasts."""

    epoch: int
    node_id: str
    url: str
    started_at: float
    ended_at: float | None
    end_reason: str | None


@dataclass(frozen=True)
class ClusterStatus:
    """The cluster as seen from ``node_id``, the coordinator answering."""

    name: str
    mode: ClusterMode
    node_id: str
    leader: LeaderTerm | None
    is_leader: bool
    applied_seq: int
    log_seq: int  # the log's tail: the last entry any coordinator appended
    nodes: list[NodeInfo]
    healthy: bool
    detail: str


class ClusterView(Protocol):
    def status(self) -> ClusterStatus: ...

    def nodes(self) -> list[NodeInfo]: ...

    def leadership(self) -> list[LeaderTerm]:
        """Terms newest first: the current one (if any) first."""
        ...

    def health(self) -> tuple[bool, str]:
        """Whether this node should receive traffic, and why (or why not)."""
        ...

    async def set_node_enabled(self, node_id: str, enabled: bool, reason: str) -> NodeInfo:
        """Disable (take out of leadership and load balancing) or re-enable a node.

        Raises ``NotFound`` for an unknown node and ``Conflict`` when disabling
        would leave no enabled node.
        """
        ...

    def subscribe(self, listener: ClusterListener) -> None: ...


def find_node(nodes: list[NodeInfo], node_id: str) -> NodeInfo:
    for node in nodes:
        if node.node_id == node_id:
            return node
    known = ", ".join(sorted(node.node_id for node in nodes)) or "none"
    raise NotFound(
        f"node {node_id!r} is not in this cluster (nodes: {known}); "
        "list them with `dtf cluster nodes`"
    )


def status_json(status: ClusterStatus) -> dict[str, Any]:
    """The payload of ``GET /api/cluster/status`` and of ``cluster_status_update``."""
    return asdict(status)


def leadership_json(terms: list[LeaderTerm]) -> dict[str, Any]:
    """The payload of ``GET /api/cluster/leader`` and of ``leadership_update``."""
    current = terms[0] if terms and terms[0].ended_at is None else None
    return {
        "leader": None if current is None else asdict(current),
        "history": [asdict(term) for term in terms],
    }


class StandaloneCluster:
    """A coordinator without ``--cluster``: the only node, leader of epoch 1 since it started.

    Nothing about its membership or leadership changes while it runs, so its
    listeners are never called; a subscriber gets the state when it subscribes.
    """

    def __init__(
        self,
        node_id: str,
        url: str,
        applied_seq: Callable[[], int],
        started_at: float,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.node_id = node_id
        self.url = url
        self._applied_seq = applied_seq
        self.started_at = started_at
        self._clock = clock

    def status(self) -> ClusterStatus:
        seq = self._applied_seq()
        healthy, detail = self.health()
        return ClusterStatus(
            name="standalone",
            mode="standalone",
            node_id=self.node_id,
            leader=self.leadership()[0],
            is_leader=True,
            applied_seq=seq,
            log_seq=seq,
            nodes=self.nodes(),
            healthy=healthy,
            detail=detail,
        )

    def nodes(self) -> list[NodeInfo]:
        node = NodeInfo(
            node_id=self.node_id,
            url=self.url,
            role="leader",
            enabled=True,
            disabled_reason=None,
            applied_seq=self._applied_seq(),
            lag=0,
            started_at=self.started_at,
            updated_at=self._clock(),
            healthy=True,
            version=__version__,
        )
        return [node]

    def leadership(self) -> list[LeaderTerm]:
        return [LeaderTerm(1, self.node_id, self.url, self.started_at, None, None)]

    def health(self) -> tuple[bool, str]:
        return True, "standalone coordinator: the only node and always the leader"

    async def set_node_enabled(self, node_id: str, enabled: bool, reason: str) -> NodeInfo:
        node = find_node(self.nodes(), node_id)
        if not enabled:
            raise Conflict(
                f"a standalone coordinator cannot be disabled: {node_id!r} is the only node "
                "and no other could serve; run a cluster with `dtf coordinator --cluster NAME "
                "--etcd URL` to take nodes out of service one at a time"
            )
        return node

    def subscribe(self, listener: ClusterListener) -> None:
        """Nothing to report after the start (see the class docstring)."""
