"""Failover tests on a real coordinator cluster: nodes killed and restarted by the test,
and what the tasks themselves saw.

How this works: ``FailoverCluster`` is ``dtf cluster local``'s ``HaCluster`` with no
supervisor restarting a node by itself, so a test decides when a killed node returns
(``running_cluster`` starts one for a fixture and stops it however the test ends);
extra coordinator flags (``--snapshot-every 200``) go in ``HaSettings.coordinator_flags``.
``recording_command`` is a shell command that appends ``start``, ``end`` (or
``stopped`` on SIGTERM) lines with its task id, attempt, pid and wall time to one
file opened with O_APPEND; ``read_runs`` and ``run_problems`` check from those lines,
independently of any coordinator, that no task ran to completion twice and no two
runs of one task overlapped. ``log_position`` reads the cluster's log from etcd.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import shlex
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from dtf.client import Client
from dtf.cluster.etcd import Etcd, EtcdSettings
from dtf.cluster.log import EtcdLog
from dtf.local.ha_cluster import HaCluster, HaSettings
from dtf.local.processes import ManagedProcess
from dtf.testing.etcd import require_etcd

log = logging.getLogger(__name__)

Record = dict[str, Any]
T = TypeVar("T")

POLL_S = 0.05
ADMISSION_REASON = "failover test: hand leadership to {node_id}"


def poll(probe: Callable[[], T | None], timeout_s: float, what: str) -> T:
    """The first value other than None ``probe`` returns; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while (value := probe()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(POLL_S)
    return value


class FailoverCluster(HaCluster):
    """``FailoverCluster(HaSettings(tmp, base_port=0))``: ``start()`` runs etcd members,
    coordinators (``node-1`` leading when the workers start) and workers given every
    coordinator URL in node order; ``stop()`` (in a ``finally``) ends them all. What the
    cluster reports is logged."""

    def __init__(self, settings: HaSettings) -> None:
        super().__init__(settings, lambda kind, fields: log.info("%s: %s", kind, fields))

    def start(self) -> None:
        """As ``HaCluster.start`` without supervisors, and with ``node-1`` leading, so the
        workers (which try the URLs in node order) start out connected to the leader."""
        self.start_etcd()
        self.start_coordinators()
        self.wait_formed()
        self.hand_leadership_to(self.nodes[0].node_id)
        self.start_workers()

    def url_of(self, node_id: str) -> str:
        return next(node.url for node in self.nodes if node.node_id == node_id)

    def kill(self, node_id: str) -> None:
        """SIGKILL coordinator ``node_id`` and everything it started."""
        self.coordinator_processes()[node_id].kill_tree()

    def terminate(self, node_id: str) -> ManagedProcess:
        """Send SIGTERM to coordinator ``node_id`` (a clean stop); returns at once."""
        process = self.coordinator_processes()[node_id]
        process.terminate()
        return process

    def restore(self) -> None:
        """Start every coordinator that is not running and wait until all form one cluster;
        then start again every worker that is not online and wait until all are."""
        for node_id, process in self.coordinator_processes().items():
            if not process.is_running:
                self.restart_coordinator(node_id)
        self.wait_formed()
        self.restart_workers(self.workers_not_online())

    def workers_not_online(self) -> list[str]:
        with Client(self.urls, self.admin_key) as client:
            online = {w["id"] for w in client.workers() if w["status"] == "online"}
        return sorted(set(self.worker_processes()) - online)

    def restart_workers(self, worker_ids: Sequence[str]) -> None:
        """Stop (SIGTERM) and start again ``worker_ids``; each connects to ``node-1`` first.
        Returns once every worker is online."""
        for worker_id in worker_ids:
            self.worker_processes()[worker_id].stop(self.settings.stop_timeout_s)
            self.restart_worker(worker_id)
        poll(
            lambda: not self.workers_not_online() or None,
            self.settings.startup_timeout_s,
            f"workers {', '.join(worker_ids)} to come online",
        )

    def leader_now(self) -> Record | None:
        """The leader of the latest epoch in any node's ``/api/cluster/status`` (which
        names the leader its election saw; the leadership history may lag behind)."""
        terms = [status["leader"] for status in self.statuses().values() if status]
        return max((t for t in terms if t), key=lambda term: int(term["epoch"]), default=None)

    def is_led_by(self, node_id: str) -> bool:
        leader = self.leader_now()
        return leader is not None and leader["node_id"] == node_id

    def leader(self, timeout_s: float) -> Record:
        """The current leader's term record (``node_id``, ``epoch``, ...), waiting for one."""
        return poll(self.leader_now, timeout_s, "a leader")

    def successor(self, epoch: int, timeout_s: float) -> Record:
        """The first leader of an epoch after ``epoch`` that any node reports."""

        def later() -> Record | None:
            leader = self.leader_now()
            return leader if leader is not None and leader["epoch"] > epoch else None

        return poll(later, timeout_s, f"a leader after epoch {epoch}")

    def get(self, node_id: str, path: str, **params: Any) -> Record:
        """``GET path`` on coordinator ``node_id`` with the admin key; fails on an error."""
        with self.http_client() as http:
            response = http.get(self.url_of(node_id) + path, params=params, timeout=10.0)
        response.raise_for_status()
        reply: Record = response.json()
        return reply

    def log_position(self) -> LogPosition:
        assert self.etcd is not None, "the cluster is not started"
        return log_position(self.etcd.settings(), self.settings.cluster_name)

    def hand_leadership_to(self, node_id: str) -> None:
        """Disable every other node until ``node_id`` leads, then enable them again."""
        timeout_s = self.settings.failover_timeout_s
        if self.leader(timeout_s)["node_id"] == node_id:
            return
        others = [node.node_id for node in self.nodes if node.node_id != node_id]
        reason = ADMISSION_REASON.format(node_id=node_id)
        self._set_enabled(node_id, others, "disable", reason)
        poll(lambda: self.is_led_by(node_id) or None, timeout_s, f"{node_id} to lead")
        self._set_enabled(node_id, others, "enable", reason)
        self.wait_formed()

    def _set_enabled(self, via: str, node_ids: list[str], action: str, reason: str) -> None:
        with self.http_client() as http:
            for node_id in node_ids:
                url = f"{self.url_of(via)}/api/cluster/node/{node_id}/{action}"
                http.post(url, json={"reason": reason}, timeout=10.0).raise_for_status()


# -- what the tasks saw ----------------------------------------------------------------


@contextlib.contextmanager
def running_cluster(settings: HaSettings) -> Iterator[FailoverCluster]:
    """A started ``FailoverCluster`` (the test is skipped where etcd is missing),
    stopped however the block ends."""
    require_etcd()
    cluster = FailoverCluster(settings)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def recording_command(log_file: Path, sleep_s: float) -> str:
    """A shell command that sleeps ``sleep_s`` between a ``start`` and an ``end`` line
    appended to ``log_file`` (``stopped`` instead of ``end`` when it gets SIGTERM)."""
    path = shlex.quote(str(log_file))
    return (
        f'note() {{ echo "$1 $DTF_TASK_ID $DTF_ATTEMPT $$ $(date +%s.%N)" >> {path}; }}; '
        "trap 'note stopped; exit 143' TERM; "
        f"note start; sleep {sleep_s}; note end"
    )


@dataclass(frozen=True)
class TaskRun:
    """One process of one task, as its own lines tell it; ``ended_at`` is None while it
    runs or when it died without a word (SIGKILL)."""

    task_id: str
    attempt: int
    pid: int
    started_at: float
    ended_at: float | None = None
    completed: bool = False


def read_runs(log_file: Path) -> dict[str, list[TaskRun]]:
    """Every run recorded in ``log_file``, per task id, in the order they started."""
    runs: dict[tuple[str, int], TaskRun] = {}
    text = log_file.read_text(encoding="utf-8") if log_file.exists() else ""
    for line in text.split("\n")[:-1]:  # the last part is empty or still being written
        kind, task_id, attempt, pid, at = line.split()
        key = (task_id, int(pid))
        if kind == "start":
            runs[key] = TaskRun(task_id, int(attempt), int(pid), float(at))
        else:
            run = runs[key]
            runs[key] = TaskRun(
                task_id, run.attempt, run.pid, run.started_at, float(at), kind == "end"
            )
    by_task: dict[str, list[TaskRun]] = {}
    for run in sorted(runs.values(), key=lambda run: run.started_at):
        by_task.setdefault(run.task_id, []).append(run)
    return by_task


def run_problems(runs_by_task: dict[str, list[TaskRun]]) -> list[str]:
    """Tasks that ran to completion more than once, and runs of one task that overlapped
    (a run that never ended overlaps every later run of its task)."""
    problems: list[str] = []
    for task_id, runs in runs_by_task.items():
        completed = [run for run in runs if run.completed]
        if len(completed) > 1:
            problems.append(f"{task_id} ran to completion {len(completed)} times: {completed}")
        for earlier, later in itertools.pairwise(runs):
            if earlier.ended_at is None or earlier.ended_at > later.started_at:
                problems.append(f"{task_id}: run {later} started before run {earlier} ended")
    return problems


# -- the log in etcd ---------------------------------------------------------------------


@dataclass(frozen=True)
class LogPosition:
    snapshot_seq: int  # 0: no snapshot yet
    first_seq: int  # the oldest entry still in the log (tail + 1 when none is)
    tail: int


def log_position(etcd: EtcdSettings, cluster_name: str) -> LogPosition:
    """Where cluster ``cluster_name``'s snapshot and log stand in etcd now."""
    return asyncio.run(_log_position(etcd, cluster_name))


async def _log_position(settings: EtcdSettings, cluster_name: str) -> LogPosition:
    etcd = await Etcd.connect(settings)
    try:
        journal = EtcdLog(etcd, cluster_name)
        snapshot = await journal.load_snapshot()
        keys, _ = await etcd.get_prefix(journal.keys.log_prefix)
        tail = await journal.tail()
    finally:
        await etcd.close()
    first_seq = journal.keys.seq_of(keys[0].key) if keys else tail + 1
    return LogPosition(snapshot[0] if snapshot else 0, first_seq, tail)
