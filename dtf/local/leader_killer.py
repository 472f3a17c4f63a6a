"""Fault injection for ``dtf cluster local --fault-injection``: kill the leader now and then.

How this works: every ``every_s`` the ``LeaderKiller`` thread reads each node's
``/api/cluster/status``; only when every node sees every node and one leader does it
SIGKILL that leader's process tree (so one node at most is ever down), emit
``leader_killed``, and poll ``/api/cluster/leader`` on every node until a leader of a
later epoch shows up, emitting ``leader_elected`` with the seconds it took. The
cluster's supervisor brings the killed node back; a round that cannot kill or sees
no successor in time says why in a ``notice``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

import httpx

from dtf.local.ha_status import Record, formation_problem, newest_leader

if TYPE_CHECKING:
    from dtf.local.ha_cluster import HaCluster

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.05


class LeaderKiller:
    """Every ``every_s``: SIGKILL the leader coordinator (when all nodes are up), then time
    how long until ``/api/cluster/leader`` on any node shows a leader of a later epoch."""

    def __init__(self, cluster: HaCluster, every_s: float) -> None:
        self.cluster = cluster
        self.every_s = every_s
        self.thread = threading.Thread(target=self._run, name="leader-killer", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def join(self) -> None:
        if self.thread.is_alive():
            self.thread.join()

    def kill_leader(self, http: httpx.Client) -> None:
        """Kill only a cluster that is whole again, so one node at most is ever down."""
        statuses = self.cluster.statuses()
        problem = formation_problem(statuses, self.cluster.node_ids)
        leader = newest_leader(list(statuses.values()))
        if problem is not None or leader is None:
            self.cluster.notice(f"fault injection: skipped a kill ({problem or 'no leader'})")
            return
        process = self.cluster.coordinator_processes()[leader["node_id"]]
        killed_at = time.monotonic()
        self.cluster.emit(
            "leader_killed",
            {"node_id": leader["node_id"], "epoch": leader["epoch"], "pid": process.pid},
        )
        process.kill_tree()
        successor = self._wait_for_successor(http, leader["epoch"])
        if successor is None:
            return
        self.cluster.emit(
            "leader_elected",
            {
                "node_id": successor["node_id"],
                "epoch": successor["epoch"],
                "previous_node_id": leader["node_id"],
                "previous_epoch": leader["epoch"],
                "failover_s": round(time.monotonic() - killed_at, 3),
            },
        )

    def _wait_for_successor(self, http: httpx.Client, epoch: int) -> Record | None:
        timeout_s = self.cluster.settings.failover_timeout_s
        deadline = time.monotonic() + timeout_s
        while not self.cluster.stopping.wait(POLL_INTERVAL_S):
            leader = self.cluster.current_leader(http)
            if leader is not None and leader["epoch"] > epoch:
                return leader
            if time.monotonic() > deadline:
                self.cluster.notice(f"fault injection: no new leader {timeout_s:g}s after the kill")
                return None
        return None

    def _run(self) -> None:
        with self.cluster.http_client() as http:
            while not self.cluster.stopping.wait(self.every_s):
                try:
                    self.kill_leader(http)
                except Exception:  # fault injection must outlive any one failed round
                    logger.exception("leader kill round failed")
