"""Coordinator nodes and audited workers as real ``dtf`` processes, for HA integration
tests: each runs in its own session with its log under one directory, optionally inside
a network ``Namespace``; every worker keeps an audit log (``dtf worker --audit-log``).

    fleet = Fleet(tmp_path / "fleet")
    fleet.coordinator("n1", cluster="c", etcd=urls, port=port, admin_key=key)
    fleet.worker("w1", urls=[...], api_key=worker_key)
    ...
    fleet.stop_all()   # in a finally
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from dtf.local.processes import ManagedProcess, start_process, stop_all
from dtf.testing.netns import Namespace

STOP_TIMEOUT_S = 10.0
PROBE_TIMEOUT_S = 2.0


def dtf_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "dtf.cli", *args]


class Fleet:
    def __init__(self, directory: Path, *, lease_timeout_s: float = 10.0) -> None:
        self.directory = directory
        self.lease_timeout_s = lease_timeout_s
        self.coordinators: dict[str, ManagedProcess] = {}
        self.workers: dict[str, ManagedProcess] = {}
        self.base_env = {k: v for k, v in os.environ.items() if not k.startswith("DTF_")}

    def coordinator(
        self,
        node_id: str,
        *,
        cluster: str,
        etcd: Sequence[str],
        port: int,
        admin_key: str,
        namespace: Namespace | None = None,
    ) -> ManagedProcess:
        """Start (or start again, on its data dir) node ``node_id``; inside ``namespace`` it
        listens on all the namespace's addresses and advertises its veth address."""
        host = "127.0.0.1" if namespace is None else "0.0.0.0"
        advertised = "127.0.0.1" if namespace is None else namespace.address
        argv = dtf_argv(
            *("coordinator", "--cluster", cluster, "--etcd", ",".join(etcd)),
            *("--node-id", node_id, "--advertise", f"http://{advertised}:{port}"),
            *("--host", host, "--port", str(port), "--log-level", "info"),
            *("--data-dir", str(self.directory / node_id)),
            *("--lease-timeout", str(self.lease_timeout_s)),
        )
        env = {**self.base_env, "DTF_ADMIN_KEY": admin_key, "PYTHONUNBUFFERED": "1"}
        process = self._start(node_id, argv, env, namespace)
        self.coordinators[node_id] = process
        return process

    def worker(
        self,
        worker_id: str,
        *,
        urls: Sequence[str],
        api_key: str,
        slots: int = 2,
        namespace: Namespace | None = None,
    ) -> ManagedProcess:
        argv = dtf_argv(
            *("worker", "--coordinator", ",".join(urls), "--worker-id", worker_id),
            *("--slots", str(slots), "--work-dir", str(self.directory / worker_id)),
            *("--audit-log", str(self.audit_log(worker_id))),
        )
        env = {**self.base_env, "DTF_API_KEY": api_key, "PYTHONUNBUFFERED": "1"}
        process = self._start(f"worker-{worker_id}", argv, env, namespace)
        self.workers[worker_id] = process
        return process

    def audit_log(self, worker_id: str) -> Path:
        return self.directory / "audit" / f"{worker_id}.jsonl"

    def audit_logs(self) -> list[Path]:
        return [self.audit_log(w) for w in self.workers if self.audit_log(w).exists()]

    def dead(self) -> list[str]:
        """What exited although nobody stopped it, with its log's last lines."""
        processes = [*self.coordinators.values(), *self.workers.values()]
        return [f"{p.name}: {p.exit_code}\n{p.log_tail()}" for p in processes if not p.is_running]

    def stop_all(self) -> None:
        """Workers first (they release their leases), then the coordinators."""
        stop_all(list(self.workers.values()), STOP_TIMEOUT_S)
        stop_all(list(self.coordinators.values()), STOP_TIMEOUT_S)

    def _start(
        self, name: str, argv: list[str], env: dict[str, str], namespace: Namespace | None
    ) -> ManagedProcess:
        wrapped = argv if namespace is None else namespace.wrap(argv)
        return start_process(name, wrapped, self.directory / "logs" / f"{name}.log", env)


def get_json(url: str, admin_key: str) -> Any:
    """``GET url`` with the admin key; None when it does not answer 200 in time."""
    headers = {"Authorization": f"Bearer {admin_key}"}
    try:
        response = httpx.get(url, headers=headers, timeout=PROBE_TIMEOUT_S)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


def cluster_status(url: str, admin_key: str) -> dict[str, Any] | None:
    status: dict[str, Any] | None = get_json(f"{url}/api/cluster/status", admin_key)
    return status


def leader_id(url: str, admin_key: str) -> str | None:
    """The node ``url`` says leads (None: no answer or no leader)."""
    status = cluster_status(url, admin_key)
    leader = status.get("leader") if status else None
    return str(leader["node_id"]) if leader else None


def workers_summary(url: str, admin_key: str) -> str:
    """``w1 online holding 1/2 ['t1'], w2 suspect (why) ... takes no work (breaker
    open, health 40/50: why)``: the workers as node ``url`` shows them."""
    reply = get_json(f"{url}/api/workers", admin_key)
    if reply is None:
        return f"{url} does not answer"
    return ", ".join(_worker_summary(worker) for worker in reply["workers"])


def _worker_summary(worker: dict[str, Any]) -> str:
    leases = worker.get("leases", [])
    text = f"{worker['id']} {worker['status']} holding {len(leases)}/{worker.get('slots')} {leases}"
    if worker.get("status_reason"):
        text += f" ({worker['status_reason']})"
    breaker = worker.get("breaker", {})
    if breaker.get("state", "closed") != "closed":
        text += f", breaker {breaker['state']}"
    if not worker.get("takes_work", True):
        health = worker.get("health", {})
        text += (
            f", takes no work (health {health.get('score')}/{health.get('threshold')}: "
            f"{health.get('summary')})"
        )
    return text


def cluster_summary(nodes: Mapping[str, str], admin_key: str) -> str:
    """Each node's applied position, the log's tail, the leader it sees and its workers:
    what a failed wait on a cluster needs to say."""
    lines = []
    for node, url in nodes.items():
        status = cluster_status(url, admin_key)
        if status is None:
            lines.append(f"{node}: does not answer")
            continue
        leader = (status.get("leader") or {}).get("node_id")
        lines.append(
            f"{node}: applied {status['applied_seq']} of {status['log_seq']}, leader {leader}; "
            f"workers: {workers_summary(url, admin_key)}"
        )
    return "\n".join(lines)
