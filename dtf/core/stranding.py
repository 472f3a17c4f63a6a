"""Workers stranded by a lost cluster node.

How this works: in a cluster each worker is connected through one coordinator
node (``WorkerRecord.node_id`` and ``node_incarnation``, the node's process,
set by the node that journals its registration). When a node is cut off from
etcd, or dies, its workers can renew nothing; they kill their tasks before
the leases expire (self-fencing), but in the shared state they still look
online, because only their heartbeats stopped. So the leader checks the node
registry and, when workers are still connected through a node incarnation it
no longer lists (the record expired, or a restarted node replaced it),
journals ``CoordinatorNodeLost``: those workers become ``suspect`` (no new
work) and stranded (``lost_node``). Whatever a stranded worker loses until it
registers again, or a heartbeat journaled by that node incarnation shows it
back, is lost with the coordinator (``WorkerMixin.lose_with_coordinator``):
queued again at once, not charged to the task (up to
``max_coordinator_losses`` per task), its retries or the worker. Leases
still end only when they expire, as always, so a task never runs twice at once.

A standalone coordinator journals no node ids and never loses a node.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from dtf.core import commands as c
from dtf.core.records import WorkerRecord, WorkerStatus
from dtf.core.workers import WorkerMixin
from dtf.errors import InvalidRequest


def is_connected_through(worker: WorkerRecord, node_id: str, incarnation: str = "") -> bool:
    """Whether losing ``node_id`` (its ``incarnation``; "": any) strands ``worker``:
    live, connected through it, not stranded yet."""
    return (
        worker.node_id == node_id != ""
        and incarnation in ("", worker.node_incarnation)
        and worker.status is not WorkerStatus.OFFLINE
        and not worker.is_stranded
    )


def nodes_to_declare_lost(
    workers: Iterable[WorkerRecord], registry: Mapping[str, str], own: tuple[str, str]
) -> list[tuple[str, str]]:
    """The (node id, incarnation) pairs that live, unstranded workers are
    connected through but the node ``registry`` (node id -> incarnation, ""
    when a record does not say) does not list, in order: what the leader
    journals ``CoordinatorNodeLost`` for. A node listed under another
    incarnation was restarted; its workers of the old one are stranded. The
    leader's ``own`` (node id, incarnation) is never lost to itself."""
    lost = set()
    for worker in workers:
        node_id, incarnation = worker.node_id, worker.node_incarnation
        if _is_listed(dict([own]), node_id, incarnation):
            continue
        if not is_connected_through(worker, node_id):
            continue
        if not _is_listed(registry, node_id, incarnation):
            lost.add((node_id, incarnation))
    return sorted(lost)


def _is_listed(registry: Mapping[str, str], node_id: str, incarnation: str) -> bool:
    """Listed, and under the same incarnation where both sides name one."""
    listed = registry.get(node_id)
    if listed is None:
        return False
    return "" in (listed, incarnation) or listed == incarnation


class StrandingMixin(WorkerMixin):
    def check_coordinator_node_lost(self, command: c.CoordinatorNodeLost) -> None:
        if not command.node_id:
            raise InvalidRequest(
                "a lost coordinator node needs its node id; a standalone coordinator has none",
                field="node_id",
            )

    def on_coordinator_node_lost(self, command: c.CoordinatorNodeLost, now: float) -> None:
        for worker in self.workers.values():
            if is_connected_through(worker, command.node_id, command.node_incarnation):
                worker.lost_node, worker.status_when_stranded = command.node_id, worker.status
                self.set_worker_status(
                    worker, WorkerStatus.SUSPECT, f"coordinator node {command.node_id} lost"
                )
