"""What a local coordinator cluster is made of: its settings, which port and etcd member
each node gets, and the command lines of its coordinators and workers."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"


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
