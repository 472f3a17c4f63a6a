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
once), then etcd.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from dtf.client import Client
from dtf.coordinator.auth import new_key
from dtf.local.cluster import ClusterError
from dtf.local.processes import ManagedProcess, is_port_free, start_process, stop_all
from dtf.local.supervisor import RestartBackoff, WorkerSupervisor, exit_text
from dtf.testing.etcd import EtcdCluster, free_ports

if TYPE_CHECKING:
    from dtf.local.leader_killer import LeaderKiller

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
STARTUP_POLL_S = 0.2
PROBE_TIMEOUT_S = 1.0
COORDINATOR_BACKOFF = RestartBackoff(min_s=0.5, max_s=2.0)
CHILD_ENV_DROPPED = ("DTF_ADMIN_KEY", "DTF_API_KEY", "DTF_COORDINATOR")

Record = dict[str, Any]
EventSink = Callable[[str, Record], None]
"""Called with an event kind (started, leader_killed, leader_elected, node_restarted,
stopped, notice) and its JSON-ready fields, from whichever thread saw it happen."""


@dataclass(frozen=True)
class HaSettings:
    data_dir: Path
    nodes: int = 3
    workers: int = 2
    base_port: int = 8090  # 0: free ports chosen outside the ephemeral range
    slots: int = 2
    cluster_name: str = "local"
    kill_every_s: float | None = None  # fault injection: kill the leader this often
    log_level: str = "info"
    startup_timeout_s: float = 60.0
    failover_timeout_s: float = 30.0
    stop_timeout_s: float = 10.0
    python: str = sys.executable
    base_env: Mapping[str, str] | None = None  # None: inherit this process's environment
    coordinator_flags: tuple[str, ...] = ()  # appended to every coordinator's command line


@dataclass(frozen=True)
class Node:
    """One coordinator of the local cluster and the etcd member it talks to first."""

    node_id: str
    port: int
    data_dir: Path
    etcd_member: str
    etcd_endpoints: tuple[str, ...]  # its own member first

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


def plan_nodes(data_dir: Path, ports: list[int], etcd_urls: list[str]) -> list[Node]:
    """Node ``i`` (1-based) listens on ``ports[i-1]`` and prefers etcd member ``m<i-1>``."""
    return [
        Node(
            node_id=f"node-{index + 1}",
            port=port,
            data_dir=data_dir / f"node-{index + 1}",
            etcd_member=f"m{index}",
            etcd_endpoints=(etcd_urls[index], *etcd_urls[:index], *etcd_urls[index + 1 :]),
        )
        for index, port in enumerate(ports)
    ]


def coordinator_argv(settings: HaSettings, node: Node) -> list[str]:
    """Coordinator ``node``'s command line, ``settings.coordinator_flags`` last."""
    return [
        *(settings.python, "-m", "dtf.cli", "coordinator"),
        *("--cluster", settings.cluster_name, "--etcd", ",".join(node.etcd_endpoints)),
        *("--advertise", node.url, "--node-id", node.node_id),
        *("--host", LOOPBACK, "--port", str(node.port)),
        *("--data-dir", str(node.data_dir), "--log-level", settings.log_level),
        *settings.coordinator_flags,
    ]


def worker_argv(
    python: str, worker_id: str, urls: list[str], slots: int, work_dir: Path
) -> list[str]:
    return [
        *(python, "-m", "dtf.cli", "worker"),
        *("--coordinator", ",".join(urls), "--worker-id", worker_id),
        *("--slots", str(slots), "--work-dir", str(work_dir)),
    ]


def formation_problem(statuses: Mapping[str, Record | None], node_ids: list[str]) -> str | None:
    """Why the nodes' ``/api/cluster/status`` answers do not yet show one cluster of
    ``node_ids`` with one leader they all agree on; None once they do."""
    leaders: set[str | None] = set()
    for node_id, status in statuses.items():
        if status is None:
            return f"{node_id} does not answer /api/cluster/status yet"
        seen = sorted(node["node_id"] for node in status["nodes"])
        if seen != sorted(node_ids):
            return f"{node_id} sees nodes {', '.join(seen) or 'none'}"
        leaders.add(status["leader"]["node_id"] if status["leader"] else None)
    if None in leaders or len(leaders) != 1:
        return f"the nodes see leaders {', '.join(sorted(str(leader) for leader in leaders))}"
    return None


def newest_leader(leadership_replies: list[Record | None]) -> Record | None:
    """Of several nodes' ``/api/cluster/leader`` replies, the current leader of the latest
    epoch any of them knows (None: no node answers or none knows a leader)."""
    leaders = [reply["leader"] for reply in leadership_replies if reply and reply["leader"]]
    return max(leaders, key=lambda leader: int(leader["epoch"]), default=None)


class HaCluster:
    """``HaCluster(HaSettings(tmp), on_event).start()``, then ``stop()`` in a ``finally``."""

    def __init__(self, settings: HaSettings, on_event: EventSink) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir.resolve()
        self.emit = on_event
        self.admin_key = new_key()[1]
        self.worker_key = ""
        self.etcd: EtcdCluster | None = None
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
        self.etcd = EtcdCluster(self.data_dir / "etcd", size=self.settings.nodes)
        self.data_dir.mkdir(parents=True, exist_ok=True)
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

    def start_workers(self) -> None:
        """Create a worker key, start the workers and wait (bounded) until all are online."""
        with Client(self.urls, self.admin_key) as client:
            self.worker_key = str(client.create_key("worker", "dtf cluster local")["key"])
            for number in range(1, self.settings.workers + 1):
                self.start_worker(f"local-{number}")

            def offline() -> str | None:
                online = {w["id"] for w in client.workers() if w.get("status") == "online"}
                missing = sorted(set(self.worker_processes()) - online)
                return f"{', '.join(missing)} not online" if missing else None

            self._wait_for(offline, "the workers to come online")

    def start_worker(self, worker_id: str) -> ManagedProcess:
        work_dir = self.data_dir / "workers" / worker_id
        argv = worker_argv(
            self.settings.python, worker_id, self.urls, self.settings.slots, work_dir
        )
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
                node.node_id: _get_json(http, node.url, "/api/cluster/status")
                for node in self.nodes
            }

    def current_leader(self, http: httpx.Client) -> Record | None:
        """The leader of the latest epoch any node reports (None: no answer, no leader)."""
        return newest_leader([_get_json(http, url, "/api/cluster/leader") for url in self.urls])

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
        from dtf.local.leader_killer import LeaderKiller  # it imports this module

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
        return {**env, "PYTHONUNBUFFERED": "1", **extra}

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


def _get_json(http: httpx.Client, url: str, path: str) -> Record | None:
    try:
        response = http.get(url + path)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    reply: Record = response.json()
    return reply
