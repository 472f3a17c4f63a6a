"""Kill rounds for bench/failover.py on an ``HaCluster`` (no workers, no supervisors).

One round: wait until the cluster is whole (every coordinator running and listing
all nodes, one leader they agree on, every writer acknowledged in the last half
second), SIGKILL the target, take for each writer the time from the kill to its
first acknowledged write after it, then restart what was killed and wait until
the restarted coordinator has applied the log as far as the others had it.

Targets by kind:

- ``serving``: the coordinator the any-coordinator writer talked to last.
- ``leader``: the leader coordinator (``/api/cluster/leader``).
- ``host``: the etcd member etcd's members follow as Raft leader together with the
  coordinator of the same index (which talks to that member first).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from _failover_load import Writer, is_flowing

from dtf.local.ha_cluster import HaCluster, Node, formation_problem
from dtf.local.supervisor import exit_text

Kind = Literal["serving", "leader", "host"]
KINDS: tuple[Kind, ...] = ("serving", "leader", "host")
POLL_S = 0.02
FLOWING_WITHIN_S = 0.5


class RoundFailed(Exception):
    """The cluster did not get back to a whole state in time."""


@dataclass(frozen=True)
class Round:
    kind: Kind
    node_id: str
    was_leader: bool
    serving: dict[str, str]  # writer -> URL it wrote to last before the kill
    gaps_s: dict[str, float | None]  # writer -> kill to next acknowledged write; None: none
    restart_s: float  # restart until caught up

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class KillRounds:
    def __init__(self, cluster: HaCluster, writers: Sequence[Writer], timeout_s: float) -> None:
        self.cluster = cluster
        self.writers = list(writers)
        self.timeout_s = timeout_s

    def run(self, kind: Kind) -> Round:
        self.wait_whole()
        with self.cluster.http_client() as http:
            leader = self.cluster.current_leader(http)
        leader_id = None if leader is None else str(leader["node_id"])
        node = self.target(kind, leader_id)
        serving = {writer.name: writer.serving for writer in self.writers}
        killed_at = self.kill(kind, node)
        gaps = self.gaps_after(killed_at, node.url)
        restarted_at = time.monotonic()
        self.restart(kind, node)
        return Round(
            kind=kind,
            node_id=node.node_id,
            was_leader=node.node_id == leader_id,
            serving=serving,
            gaps_s=gaps,
            restart_s=time.monotonic() - restarted_at,
        )

    def target(self, kind: Kind, leader_id: str | None) -> Node:
        if kind == "host":
            assert self.cluster.etcd is not None
            return self.cluster.nodes[asyncio.run(self.cluster.etcd.leader_index())]
        if kind == "leader":
            return self.node(lambda n: n.node_id == leader_id, f"leader {leader_id}")
        url = next(w.serving for w in self.writers if w.name == "any")
        return self.node(lambda n: n.url == url, f"the node at {url}")

    def node(self, matches: Callable[[Node], bool], what: str) -> Node:
        found = [node for node in self.cluster.nodes if matches(node)]
        if not found:
            raise RoundFailed(f"no coordinator is {what}")
        return found[0]

    def kill(self, kind: Kind, node: Node) -> float:
        """SIGKILL the coordinator (and for ``host`` its etcd member right after);
        returns the monotonic time just before the first signal."""
        process = self.cluster.coordinator_processes()[node.node_id]
        killed_at = time.monotonic()
        os.killpg(process.pid, signal.SIGKILL)
        if kind == "host":
            assert self.cluster.etcd is not None
            self.cluster.etcd.kill(self.cluster.nodes.index(node))
        process.kill_tree()
        return killed_at

    def gaps_after(self, killed_at: float, killed_url: str) -> dict[str, float | None]:
        """Per writer: from the kill to its first write acknowledged by another coordinator
        (a reply the killed one sent just before dying does not count)."""
        deadline = killed_at + self.timeout_s
        gaps: dict[str, float | None] = {}
        while len(gaps) < len(self.writers) and time.monotonic() < deadline:
            for writer in self.writers:
                acked = writer.first_ack_after(killed_at, killed_url)
                if writer.name not in gaps and acked is not None:
                    gaps[writer.name] = acked - killed_at
            time.sleep(POLL_S)
        return {writer.name: gaps.get(writer.name) for writer in self.writers}

    def restart(self, kind: Kind, node: Node) -> None:
        if kind == "host":
            assert self.cluster.etcd is not None
            self.cluster.etcd.restart(self.cluster.nodes.index(node))
            self.cluster.etcd.wait_healthy(self.timeout_s)
        self.cluster.restart_coordinator(node.node_id)
        self.wait_caught_up(node)

    def wait_caught_up(self, node: Node) -> None:
        """Until the restarted node has applied what the others had appended when it
        started, and every node lists every node and the same leader."""
        others = [s for n, s in self.cluster.statuses().items() if n != node.node_id and s]
        target_seq = max((int(status["log_seq"]) for status in others), default=0)

        def lagging() -> str | None:
            statuses = self.cluster.statuses()
            mine = statuses[node.node_id]
            if mine is None:
                return self.not_answering(node)
            if int(mine["applied_seq"]) < target_seq:
                return f"{node.node_id} has applied seq {mine['applied_seq']}, not {target_seq} yet"
            return formation_problem(statuses, [n.node_id for n in self.cluster.nodes])

        self.wait_for(lagging, f"{node.node_id} to catch up")

    def not_answering(self, node: Node) -> str:
        process = self.cluster.coordinator_processes()[node.node_id]
        if not process.is_running:
            return (
                f"{node.node_id} {exit_text(process.exit_code)} while starting; its log ends:\n"
                f"{process.log_tail()}"
            )
        return f"{node.node_id} does not answer /api/cluster/status"

    def wait_whole(self) -> None:
        node_ids = [n.node_id for n in self.cluster.nodes]

        def problem() -> str | None:
            down = [n for n, p in self.cluster.coordinator_processes().items() if not p.is_running]
            if down:
                return f"{', '.join(down)} not running"
            if not is_flowing(self.writers, FLOWING_WITHIN_S):
                return "a writer has no recent acknowledged write"
            return formation_problem(self.cluster.statuses(), node_ids) or self.off_leader()

        self.wait_for(problem, "the cluster to be whole")

    def off_leader(self) -> str | None:
        """Whether the leader-only writer last wrote to someone other than the leader."""
        with self.cluster.http_client() as http:
            leader = self.cluster.current_leader(http)
        url = None if leader is None else leader["url"]
        for writer in self.writers:
            if writer.name == "leader-only" and writer.serving != url:
                return f"the leader-only writer writes to {writer.serving}, the leader is {url}"
        return None

    def wait_for(self, problem: Callable[[], str | None], what: str) -> None:
        deadline = time.monotonic() + self.timeout_s
        while (last := problem()) is not None:
            if time.monotonic() > deadline:
                raise RoundFailed(f"gave up after {self.timeout_s:g} s waiting for {what}: {last}")
            time.sleep(POLL_S)
