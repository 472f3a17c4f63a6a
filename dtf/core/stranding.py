"""Workers stranded by a lost cluster node.

How this works: in a cluster each worker is connected through one coordinator
node (``WorkerRecord.node_id``, set by the node that journals its
registration). When a node is cut off from etcd, its workers can renew
nothing; they kill their tasks before the leases expire (self-fencing), but
in the shared state they still look online, because only their heartbeats
stopped. So the leader watches the node registry and, when a node's record
expires while workers are still connected through it, journals
``CoordinatorNodeLost``: those workers become ``suspect`` (no new work) and
stranded (``lost_node``). Whatever a stranded worker loses until it registers
again, or a heartbeat journaled by that node shows it back, is lost with the coordinator
(``WorkerMixin.lose_with_coordinator``): queued again at once, not charged to
the task, its retries or the worker. Leases still end only when they expire,
as always, so a task never runs twice at once.

A standalone coordinator journals no node ids and never loses a node.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from dtf.core import commands as c
from dtf.core.records import WorkerRecord, WorkerStatus
from dtf.core.workers import WorkerMixin
from dtf.errors import InvalidRequest


def is_connected_through(worker: WorkerRecord, node_id: str) -> bool:
    """Whether losing ``node_id`` strands ``worker``: live, connected through it, not stranded yet."""
    return (
        worker.node_id == node_id != ""
        and worker.status is not WorkerStatus.OFFLINE
        and not worker.is_stranded
    )


def nodes_to_declare_lost(workers: Iterable[WorkerRecord], departed: Collection[str]) -> list[str]:
    """The departed nodes that workers are still connected through, in order:
    what the leader journals ``CoordinatorNodeLost`` for."""
    return sorted(
        {w.node_id for w in workers if w.node_id in departed and is_connected_through(w, w.node_id)}
    )


class StrandingMixin(WorkerMixin):
    def check_coordinator_node_lost(self, command: c.CoordinatorNodeLost) -> None:
        if not command.node_id:
            raise InvalidRequest(
                "a lost coordinator node needs its node id; a standalone coordinator has none",
                field="node_id",
            )

    def on_coordinator_node_lost(self, command: c.CoordinatorNodeLost, now: float) -> None:
        for worker in self.workers.values():
            if is_connected_through(worker, command.node_id):
                worker.lost_node, worker.status_when_stranded = command.node_id, worker.status
                self.set_worker_status(
                    worker, WorkerStatus.SUSPECT, f"coordinator node {command.node_id} lost"
                )
