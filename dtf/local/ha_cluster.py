"""A coordinator cluster on etcd with local workers, on this machine: ``dtf cluster local``.

How this works: ``HaCluster.start`` starts N etcd members (``EtcdCluster``), then
coordinators ``node-1``..``node-N`` on ports ``base_port``.., each joining the cluster
through its own etcd member first, all with one generated admin key. Once every node's
``/api/cluster/status`` lists all nodes and the same leader (a bounded wait) it creates
a worker key and starts the workers, each given every coordinator URL. Two supervisors
(``dtf.local.supervisor``) restart a coordinator or worker that dies, after a backoff.
With ``kill_every_s`` a ``LeaderKiller`` thread (``dtf.local.leader_killer``) SIGKILLs
the leader now and then and times how long until ``/api/cluster/leader`` shows a
successor; the supervisor brings the killed node back. Everything noteworthy goes to
``on_event(kind, fields)``.
``stop`` stops workers, then followers, then the leader (SIGTERM, so it resigns at
once), then etcd. Should this process die without stopping them (SIGKILL), an
``OrphanGuard`` (``dtf.local.orphan_guard``) kills every process the cluster started.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from dtf.client import Client
from dtf.coordinator.auth import new_key
from dtf.local.cluster import ClusterError
from dtf.local.ha_layout import (
    LOOPBACK,
    HaSettings,
    Node,
    coordinator_argv,
    plan_nodes,
    worker_argv,
)
from dtf.local.ha_status import Record, formation_problem, get_json, newest_leader
from dtf.local.leader_killer import LeaderKiller
from dtf.local.orphan_guard import OrphanGuard
from dtf.local.processes import ManagedProcess, is_port_free, start_process, stop_all
from dtf.local.supervisor import RestartBackoff, WorkerSupervisor, exit_text
from dtf.testing.etcd import EtcdCluster, free_ports

__all__ = [
    "HaCluster",
    "HaSettings",
    "Node",
    "Record",
    "coordinator_argv",
    "formation_problem",
    "newest_leader",
    "plan_nodes",
]

logger = logging.getLogger(__name__)

STARTUP_POLL_S = 0.2
PROBE_TIMEOUT_S = 1.0
COORDINATOR_BACKOFF = RestartBackoff(min_s=0.5, max_s=2.0)
CHILD_ENV_DROPPED = ("DTF_ADMIN_KEY", "DTF_API_KEY", "DTF_COORDINATOR")

EventSink = Callable[[str, Record], None]
"""Called with an event kind (started, leader_killed, leader_elected, node_restarted,
stopped, notice) and its JSON-ready fields, from whichever thread saw it happen."""


class HaCluster:
    """``HaCluster(HaSettings(tmp), on_event).start()``, then ``stop()`` in a ``finally``."""

    def __init__(self, settings: HaSettings, on_event: EventSink) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir.resolve()
        self.emit = on_event
        self.admin_key = new_key()[1]
        self.worker_key = ""
        self.worker_slots = settings.slots
        self.etcd: EtcdCluster | None = None
        self.guard: OrphanGuard | None = None
        self.nodes: list[Node] = []
        self.coordinators: dict[str, ManagedProcess] = {}
        self.workers: dict[str, ManagedProcess] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.supervisors = [
            WorkerSupervisor(
                self.coordinator_processes,
                self.restart_coordinator,
                self.notice,
                COORDINATOR_BACKOFF,
                kind="coordinator",
            ),
            WorkerSupervisor(self.worker_processes, self.restart_worker, self.notice),
        ]
        self.killer = self._leader_killer()

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def node_ids(self) -> list[str]:
        return [node.node_id for node in self.nodes]

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def admin_key_path(self) -> Path:
        return self.data_dir / "admin.key"

    def notice(self, text: str) -> None:
        self.emit("notice", {"text": text})

    def start(self) -> None:
        """Everything, in order; ``started`` is emitted once workers are online."""
        self.start_etcd()
        self.start_coordinators()
        self.wait_formed()
        self.start_workers()
        for supervisor in self.supervisors:
            supervisor.start()
        if self.killer is not None:
            self.killer.start()
        self.emit("started", self.started_fields())

    def start_etcd(self) -> None:
        """Check the data dir and ports, then start etcd and wait (bounded) until it is healthy."""
        _require_fresh(self.data_dir)
        ports = self._fixed_ports() if self.settings.base_port else []
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.guard = OrphanGuard(self.settings.python)
        self.etcd = EtcdCluster(
            self.data_dir / "etcd", size=self.settings.nodes, env=self.guard.environment()
        )
        self.etcd.start()
        self.etcd.wait_healthy(self.settings.startup_timeout_s)
        # Free ports are picked only now: etcd members starting meanwhile, here or in
        # another run, take theirs from the same range.
        ports = ports or free_ports(self.settings.nodes)
        self.nodes = plan_nodes(self.data_dir, ports, self.etcd.client_urls)

    def start_coordinators(self) -> None:
        descriptor = os.open(self.admin_key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(self.admin_key + "\n")
        for node in self.nodes:
            self.start_coordinator(node)

    def start_coordinator(self, node: Node) -> ManagedProcess:
        argv = coordinator_argv(self.settings, node)
        log_path = self.logs_dir / f"{node.node_id}.log"
        env = self._child_env(DTF_ADMIN_KEY=self.admin_key)
        process = start_process(f"coordinator {node.node_id}", argv, log_path, env)
        with self.lock:
            self.coordinators[node.node_id] = process
        return process

    def wait_formed(self) -> None:
        """Wait (bounded) until every node lists all nodes and they agree on one leader."""
        self._wait_for(
            lambda: formation_problem(self.statuses(), self.node_ids),
            f"{', '.join(self.node_ids)} to form one cluster with one leader",
        )

    def start_workers(self, slots: int | None = None) -> None:
        """Create a worker key, start the workers (with ``slots`` each from now on,
        restarts too, if given) and wait (bounded) until each is online in a new
        session: a worker stopped earlier under the same id stays listed online
        until its timeout."""
        if slots is not None:
            self.worker_slots = slots
        with Client(self.urls, self.admin_key) as client:
            earlier = {w["id"]: w.get("session") for w in client.workers()}
            self.worker_key = str(client.create_key("worker", "dtf cluster local")["key"])
            for number in range(1, self.settings.workers + 1):
                self.start_worker(f"local-{number}")

            def offline() -> str | None:
                online = {
                    w["id"]
                    for w in client.workers()
                    if w.get("status") == "online" and w.get("session") != earlier.get(w["id"])
                }
                missing = sorted(set(self.worker_processes()) - online)
                return f"{', '.join(missing)} not online" if missing else None

            self._wait_for(offline, "the workers to come online")

    def start_worker(self, worker_id: str) -> ManagedProcess:
        work_dir = self.data_dir / "workers" / worker_id
        argv = worker_argv(self.settings.python, worker_id, self.urls, self.worker_slots, work_dir)
        log_path = self.logs_dir / f"worker-{worker_id}.log"
        process = start_process(
            f"worker {worker_id}", argv, log_path, self._child_env(DTF_API_KEY=self.worker_key)
        )
        with self.lock:
            self.workers[worker_id] = process
        return process

    def coordinator_processes(self) -> dict[str, ManagedProcess]:
        with self.lock:
            return dict(self.coordinators)

    def worker_processes(self) -> dict[str, ManagedProcess]:
        with self.lock:
            return dict(self.workers)

    def restart_coordinator(self, node_id: str) -> ManagedProcess:
        [node] = [node for node in self.nodes if node.node_id == node_id]
        previous = self.coordinator_processes()[node_id]
        return self._restarted(
            previous, "coordinator", node_id, lambda: self.start_coordinator(node)
        )

    def restart_worker(self, worker_id: str) -> ManagedProcess:
        previous = self.worker_processes()[worker_id]
        return self._restarted(previous, "worker", worker_id, lambda: self.start_worker(worker_id))

    def statuses(self) -> dict[str, Record | None]:
        """Each node's ``/api/cluster/status`` (None where it does not answer)."""
        with self.http_client() as http:
            return {
                node.node_id: get_json(http, node.url, "/api/cluster/status") for node in self.nodes
            }

    def current_leader(self, http: httpx.Client) -> Record | None:
        """The leader of the latest epoch any node reports (None: no answer, no leader)."""
        return newest_leader([get_json(http, url, "/api/cluster/leader") for url in self.urls])

    def http_client(self) -> httpx.Client:
        """An HTTP client with the admin key and short timeouts, for probing the nodes."""
        headers = {"Authorization": f"Bearer {self.admin_key}"}
        return httpx.Client(headers=headers, timeout=PROBE_TIMEOUT_S)

    def started_fields(self) -> Record:
        statuses = self.statuses()
        roles = {n["node_id"]: n["role"] for s in statuses.values() if s for n in s["nodes"]}
        processes = self.coordinator_processes()
        nodes = [
            {
                "node_id": node.node_id,
                "url": node.url,
                "role": roles.get(node.node_id, "unknown"),
                "etcd_member": node.etcd_member,
                "etcd_url": node.etcd_endpoints[0],
                "data_dir": str(node.data_dir),
                "pid": processes[node.node_id].pid,
            }
            for node in self.nodes
        ]
        workers = [{"worker_id": wid, "pid": p.pid} for wid, p in self.worker_processes().items()]
        return {
            "cluster": self.settings.cluster_name,
            "urls": self.urls,
            "admin_key": self.admin_key,
            "admin_key_file": str(self.admin_key_path),
            "nodes": nodes,
            "workers": workers,
            "data_dir": str(self.data_dir),
            "logs_dir": str(self.logs_dir),
            "fault_injection_every_s": self.settings.kill_every_s,
        }

    def stop(self) -> None:
        """Stop the leader killer and supervisors, then workers, followers, the leader, etcd."""
        self.stopping.set()
        if self.killer is not None:
            self.killer.join()
        for supervisor in self.supervisors:
            supervisor.stop()
        workers = list(self.worker_processes().values())
        stop_all(workers, self.settings.stop_timeout_s)
        self._stop_coordinators()
        if self.etcd is not None:
            self.etcd.stop()
        if self.guard is not None:
            self.guard.close()
        children = [*workers, *self.coordinator_processes().values()]
        self.emit("stopped", {"exit_codes": {p.name: p.exit_code for p in children}})

    def _stop_coordinators(self) -> None:
        """Followers first, then the leader: no node campaigns while the cluster shuts down."""
        with self.http_client() as http:
            leader = self.current_leader(http)
        processes = self.coordinator_processes()
        last = processes.pop(leader["node_id"]) if leader else None
        stop_all(list(processes.values()), self.settings.stop_timeout_s)
        stop_all([last] if last else [], self.settings.stop_timeout_s)

    def _restarted(
        self, previous: ManagedProcess, kind: str, name: str, start: Callable[[], ManagedProcess]
    ) -> ManagedProcess:
        process = start()
        after = exit_text(previous.exit_code)
        self.emit(
            "node_restarted", {"node_id": name, "kind": kind, "pid": process.pid, "after": after}
        )
        return process

    def _leader_killer(self) -> LeaderKiller | None:
        every_s = self.settings.kill_every_s
        return LeaderKiller(self, every_s) if every_s else None

    def _fixed_ports(self) -> list[int]:
        base = self.settings.base_port
        ports = list(range(base, base + self.settings.nodes))
        for port in ports:
            if not is_port_free(LOOPBACK, port):
                raise ClusterError(
                    f"port {port} on {LOOPBACK} is in use (another coordinator?); coordinators "
                    f"need ports {ports[0]}-{ports[-1]}: pick others with --base-port"
                )
        return ports

    def _child_env(self, **extra: str) -> dict[str, str]:
        base = os.environ if self.settings.base_env is None else self.settings.base_env
        env = {name: value for name, value in base.items() if name not in CHILD_ENV_DROPPED}
        marker = self.guard.environment() if self.guard else {}
        return {**env, "PYTHONUNBUFFERED": "1", **marker, **extra}

    def _wait_for(self, problem: Callable[[], str | None], what: str) -> None:
        """Poll ``problem`` until it returns None; raise when a child dies, time runs out
        or ``stop`` is called meanwhile."""
        deadline = time.monotonic() + self.settings.startup_timeout_s
        while (last := problem()) is not None:
            children = [*self.coordinator_processes().values(), *self.worker_processes().values()]
            dead = next((process for process in children if not process.is_running), None)
            if dead is not None:
                raise ClusterError(
                    f"{dead.name} exited with code {dead.exit_code} while waiting for {what}; "
                    f"last lines of {dead.log_path}:\n{dead.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"gave up after {self.settings.startup_timeout_s:g}s waiting for {what} "
                    f"({last}); see the logs in {self.logs_dir}"
                )
            if self.stopping.wait(STARTUP_POLL_S):
                raise ClusterError(f"stopped while waiting for {what} ({last})")


def _require_fresh(data_dir: Path) -> None:
    if data_dir.exists() and any(data_dir.iterdir()):
        raise ClusterError(
            f"data dir {data_dir} is not empty (a previous local cluster?); each run starts "
            "new etcd members, so pass a new or empty --data-dir"
        )
