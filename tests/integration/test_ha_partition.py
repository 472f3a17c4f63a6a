"""A real network partition: one coordinator and its workers in a network namespace the
test makes, joined to this machine's own by a veth pair; three etcd members, two more
coordinators and two workers outside. The namespace reaches etcd only through relays on
the host side of the pair, so cutting the pair cuts it off from etcd.

Twice: with that coordinator leading (it starts first) and following (it starts last;
on a slow machine the leadership may have moved meanwhile). Cut off while its workers
run tasks, it must append nothing and not lead, its workers must kill their tasks before
the leases expire, and the rest must lead, keep accepting work and retry the killed
tasks. The leader sees the node's registration expire and journals its loss, so the
killed attempts end as lost with their coordinator: no task is charged for them (none is
quarantined as a poison task) and no worker either (no circuit breaker opens). Healed,
the node catches up and its workers take work again at once; the history (acknowledged
submits, every worker's audit log, every node's tasks) must show nothing acknowledged
lost and no task run twice at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
import pytest

from dtf.client import Client
from dtf.errors import DtfError
from dtf.testing.etcd import EtcdCluster, free_ports, require_etcd
from dtf.testing.fleet import Fleet, cluster_status, cluster_summary, leader_id
from dtf.testing.history import Recorder, Submitter, check, settle
from dtf.testing.netns import Namespace, TcpRelay, require_netns
from dtf.testing.waiting import wait_for
from dtf.worker.audit import AuditEvent, AuditRecord, read_audit_log

pytestmark = pytest.mark.integration
logger = logging.getLogger(__name__)

CLUSTER = "partition"
CUT_OFF = "cut-off"
ROOT_NODES = ("n1", "n2")
NS_WORKERS = ("ns-w1", "ns-w2")
ROOT_WORKERS = ("w1", "w2")
# Leases outlast the node registry's TTL (3 s) by a heartbeat interval and a margin, so
# the leader journals the node's loss before the leases of its workers expire.
LEASE_TIMEOUT_S = 8.0
TASK_S = 10.0  # longer than a lease, so a task running at the cut outlives its lease
SUBMIT_EVERY_S = 0.8
WAIT_S = 90.0  # bounds each wait; generous for a loaded machine


@dataclass
class Cluster:
    namespace: Namespace
    fleet: Fleet
    admin_key: str
    worker_key: str
    cut_off_port: int
    root_urls: dict[str, str]

    @property
    def cut_off_url(self) -> str:
        """The namespaced node, from the host (through the veth pair)."""
        return f"http://{self.namespace.address}:{self.cut_off_port}"

    @property
    def urls(self) -> dict[str, str]:
        return {CUT_OFF: self.cut_off_url, **self.root_urls}

    def audit(self, *workers: str) -> list[AuditRecord]:
        paths = [self.fleet.audit_log(w) for w in workers]
        return [record for path in paths if path.exists() for record in read_audit_log(path)]


@pytest.fixture(params=[True, False], ids=["cut-off-leader", "cut-off-follower"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """Torn down in reverse: processes, relays, etcd, then the namespace and veth pair."""
    require_etcd()
    require_netns()
    with contextlib.ExitStack() as stack:
        namespace = Namespace.create()
        stack.callback(namespace.delete)
        etcd = stack.enter_context(EtcdCluster(tmp_path / "etcd", size=3))
        etcd.wait_healthy(WAIT_S)
        ports = [urlsplit(url).port or 0 for url in etcd.client_urls]
        for port in ports:
            stack.callback(TcpRelay(namespace.host_address, port).close)
        fleet = Fleet(tmp_path / "fleet", lease_timeout_s=LEASE_TIMEOUT_S)
        stack.callback(fleet.stop_all)
        yield start_cluster(namespace, fleet, etcd.client_urls, request.param)


def start_cluster(
    namespace: Namespace, fleet: Fleet, etcd_urls: list[str], cut_off_leads: bool
) -> Cluster:
    """The node meant to lead first, then the other two (each preferring its own etcd
    member; the namespaced one reaches them through the relays), then the workers."""
    admin_key = secrets.token_urlsafe(16)
    ports = dict(zip((CUT_OFF, *ROOT_NODES), free_ports(3), strict=True))
    root_urls = {node: f"http://127.0.0.1:{ports[node]}" for node in ROOT_NODES}
    cluster = Cluster(namespace, fleet, admin_key, "", ports[CUT_OFF], root_urls)
    relayed = [url.replace("127.0.0.1", namespace.host_address) for url in etcd_urls]
    etcd = {node: etcd_urls[i:] + etcd_urls[:i] for i, node in enumerate(ROOT_NODES, start=1)}
    etcd[CUT_OFF] = relayed
    first, *others = [CUT_OFF, *ROOT_NODES] if cut_off_leads else [*ROOT_NODES, CUT_OFF]
    start_node(cluster, first, etcd[first], ports[first])
    wait_until(
        lambda: leader_id(cluster.urls[first], admin_key) == first, f"{first} to lead", fleet
    )
    for node in others:
        start_node(cluster, node, etcd[node], ports[node])
    wait_until(lambda: is_formed(cluster), "the cluster to form", fleet)
    start_workers(cluster)
    return cluster


def start_node(cluster: Cluster, node: str, etcd: list[str], port: int) -> None:
    inside = cluster.namespace if node == CUT_OFF else None
    cluster.fleet.coordinator(
        node, cluster=CLUSTER, etcd=etcd, port=port, admin_key=cluster.admin_key, namespace=inside
    )


def start_workers(cluster: Cluster) -> None:
    """Two workers in the namespace on the cut-off node, two outside on the others."""
    fleet, root_urls = cluster.fleet, list(cluster.root_urls.values())
    with Client(root_urls, cluster.admin_key) as client:
        cluster.worker_key = str(client.create_key("worker", "partition test")["key"])
        for worker in NS_WORKERS:
            inside = [f"http://127.0.0.1:{cluster.cut_off_port}"]
            fleet.worker(
                worker, urls=inside, api_key=cluster.worker_key, namespace=cluster.namespace
            )
        for worker in ROOT_WORKERS:
            fleet.worker(worker, urls=root_urls, api_key=cluster.worker_key)
        everyone = {*NS_WORKERS, *ROOT_WORKERS}
        wait_until(lambda: online(client) == everyone, "every worker to be online", fleet)


def is_formed(cluster: Cluster) -> bool:
    """Every node lists all three and they agree on a leader."""
    statuses = [cluster_status(url, cluster.admin_key) for url in cluster.urls.values()]
    leaders = {(status["leader"] or {}).get("node_id") for status in statuses if status}
    return all(s and len(s["nodes"]) == len(statuses) for s in statuses) and len(leaders) == 1


def online(client: Client) -> set[str]:
    return {w["id"] for w in client.workers() if w.get("status") == "online"}


def wait_until(
    condition: Callable[[], object],
    what: str,
    fleet: Fleet,
    explain: Callable[[], str] | None = None,
) -> None:
    """``wait_for`` that fails at once, with its log, when a fleet process died, and
    adds ``explain()`` to a timeout."""

    def check_alive() -> bool:
        assert not fleet.dead(), "\n".join(fleet.dead())
        return bool(condition())

    try:
        wait_for(check_alive, WAIT_S, what)
    except AssertionError as exc:
        if explain is None:
            raise
        raise AssertionError(f"{exc}; {explain()}") from None


def task_spec(task_id: str) -> dict[str, Any]:
    return {
        "id": task_id,
        "type": "command",
        "config": {"command": f"sleep {TASK_S:g}"},
        "timeout_seconds": 60,
        "retry_policy": {"max_retries": 10, "retry_delay_seconds": 0.1},
    }


def running(records: list[AuditRecord]) -> dict[tuple[str, int], AuditRecord]:
    """Processes started and not ended, by (task, attempt)."""
    started: dict[tuple[str, int], AuditRecord] = {}
    for record in records:
        key = (record.task_id, record.attempt)
        if record.event is AuditEvent.STARTED:
            started[key] = record
        else:
            started.pop(key, None)
    return started


def has_fresh_run(cluster: Cluster) -> bool:
    """Some namespaced worker started a task less than a second ago: it will still run
    when the workers' leases run out after the cut."""
    now = time.monotonic()
    return any(now - r.monotonic < 1.0 for r in running(cluster.audit(*NS_WORKERS)).values())


class LeaseWatch(threading.Thread):
    """The latest lease expiry (wall time) the host side nodes show for each leased
    (task, attempt), assigned or running, polled until stopped."""

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(name="lease-watch", daemon=True)
        self.client = Client(list(cluster.root_urls.values()), cluster.admin_key, timeout_s=2)
        self.expires_at: dict[tuple[str, int], float] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        with self.client:
            while not self.stopping.wait(0.1):
                try:
                    tasks = self.client.list(limit=10_000)
                except (DtfError, httpx.HTTPError):  # a node busy or electing: poll again
                    continue
                for task in tasks:
                    lease = task.get("lease")
                    if lease:  # [worker_id, attempt, fence, expires_at]
                        key = (task["id"], lease[1])
                        self.expires_at[key] = max(self.expires_at.get(key, 0.0), lease[3])


def probe_inside(cluster: Cluster, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
    """GET (or POST ``body``) ``path`` on the cut-off node from inside its namespace:
    ``{"status": code, "body": ...}`` or ``{"error": text}``."""
    script = (
        "import httpx, json, sys\n"
        "url, key, body = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])\n"
        "headers = {'Authorization': f'Bearer {key}'}\n"
        "try:\n"
        "    r = (httpx.post(url, json=body, headers=headers, timeout=10) if body\n"
        "         else httpx.get(url, headers=headers, timeout=10))\n"
        "    print(json.dumps({'status': r.status_code, 'body': r.json()}))\n"
        "except httpx.HTTPError as exc:\n"
        "    print(json.dumps({'error': repr(exc)}))\n"
    )
    url = f"http://127.0.0.1:{cluster.cut_off_port}{path}"
    argv = [sys.executable, "-c", script, url, cluster.admin_key, json.dumps(body)]
    result = subprocess.run(
        cluster.namespace.wrap(argv), capture_output=True, text=True, timeout=30, check=True
    )
    reply: dict[str, Any] = json.loads(result.stdout)
    return reply


@pytest.mark.timeout(300)
def test_a_cut_off_coordinator_and_its_workers_fence_themselves_and_nothing_is_lost(
    cluster: Cluster, tmp_path: Path
) -> None:
    recorder = Recorder()
    client = Client(list(cluster.urls.values()), cluster.admin_key, timeout_s=3.0)
    submitter = Submitter(client, recorder, task_spec, prefix="p", interval_s=SUBMIT_EVERY_S)
    lease_watch = LeaseWatch(cluster)
    submitter.start()
    lease_watch.start()
    try:
        wait_until(lambda: has_fresh_run(cluster), "a fresh task in the namespace", cluster.fleet)
        at_cut = running(cluster.audit(*NS_WORKERS))
        acked_before_cut = len(recorder.acknowledged_ids)
        logger.info(
            "cutting off %s; leader: %s", CUT_OFF, leader_id(cluster.cut_off_url, cluster.admin_key)
        )
        cluster.namespace.cut()
        partitioned(cluster, at_cut, recorder, acked_before_cut)
        cluster.namespace.heal()
        healed(cluster, recorder)
    finally:
        submitter.stop(WAIT_S)
        lease_watch.stopping.set()
        client.close()
    assert submitter.error is None
    unsettled = settle(cluster.urls, cluster.admin_key, recorder.acknowledged_ids, WAIT_S)
    history = recorder.history(cluster.urls, cluster.admin_key, cluster.fleet.audit_logs())
    (tmp_path / "history.json").write_bytes(msgspec.json.encode(history))
    assert unsettled is None, f"{unsettled}\n{cluster_summary(cluster.urls, cluster.admin_key)}"
    assert check(history) == []
    killed_in_namespace(cluster, at_cut, lease_watch.expires_at)
    nothing_charged(cluster)


def partitioned(
    cluster: Cluster,
    at_cut: dict[tuple[str, int], AuditRecord],
    recorder: Recorder,
    acked_before_cut: int,
) -> None:
    """While cut off: a new leader outside, the running tasks fenced and re-run outside,
    new work accepted and finished outside, nothing appended by the cut-off node."""
    fleet, root_urls = cluster.fleet, list(cluster.root_urls.values())
    wait_until(
        lambda: {leader_id(url, cluster.admin_key) for url in root_urls} <= set(ROOT_NODES),
        "a leader among the nodes outside",
        fleet,
    )
    wait_until(
        lambda: not set(at_cut) & set(running(cluster.audit(*NS_WORKERS))),
        "the namespaced workers to stop every task they ran at the cut",
        fleet,
    )
    ns_records = cluster.audit(*NS_WORKERS)
    killed = {(r.task_id, r.attempt) for r in ns_records if r.event is AuditEvent.KILLED}
    assert killed & set(at_cut), "no task running at the cut was killed"
    refused = probe_inside(cluster, "/api/tasks", task_spec("probe-in-partition"))
    assert refused.get("status") != 201, refused
    status = probe_inside(cluster, "/api/cluster/status", None)
    assert "body" not in status or not status["body"]["is_leader"], status
    with Client(root_urls, cluster.admin_key) as client:
        wait_until(
            lambda: all(is_retried(client, *lease) for lease in killed),
            "the outside nodes to give the killed tasks another attempt",
            fleet,
        )
        wait_until(
            lambda: finished_since(client, recorder, acked_before_cut) >= 2,
            "work acknowledged after the cut to finish outside",
            fleet,
        )


def is_retried(client: Client, task_id: str, attempt: int) -> bool:
    """The task has an attempt after ``attempt``, or has ended."""
    task = client.get(task_id)
    return len(task["attempts"]) > attempt or task["status"] in ("completed", "failed")


def finished_since(client: Client, recorder: Recorder, index: int) -> int:
    later = recorder.acknowledged_ids[index:]
    return sum(client.get(task_id)["status"] == "completed" for task_id in later)


def healed(cluster: Cluster, recorder: Recorder) -> None:
    """After healing: the cut-off node catches up and accepts work again (``settle``
    then waits for that work to finish), and its workers, online again, start tasks.
    Nothing held them out for a breaker's reset time (300 s, far beyond the wait)."""
    healed_at = time.monotonic()
    wait_until(lambda: is_caught_up(cluster), f"{CUT_OFF} to catch up", cluster.fleet)
    with Client(cluster.cut_off_url, cluster.admin_key, timeout_s=10) as client:
        recorder.acknowledged(client.submit(task_spec("after-heal")))
        wait_until(
            lambda: set(NS_WORKERS) <= online(client),
            "the namespaced workers to be online again",
            cluster.fleet,
            lambda: cluster_summary(cluster.urls, cluster.admin_key),
        )
    wait_until(
        lambda: started_since(cluster, healed_at),
        "a namespaced worker to start a task after healing",
        cluster.fleet,
        lambda: cluster_summary(cluster.urls, cluster.admin_key),
    )


def started_since(cluster: Cluster, since: float) -> bool:
    records = cluster.audit(*NS_WORKERS)
    return any(r.event is AuditEvent.STARTED and r.monotonic > since for r in records)


def is_caught_up(cluster: Cluster) -> bool:
    theirs = cluster_status(next(iter(cluster.root_urls.values())), cluster.admin_key)
    mine = cluster_status(cluster.cut_off_url, cluster.admin_key)
    return bool(mine and theirs and mine["applied_seq"] >= theirs["applied_seq"])


def killed_in_namespace(
    cluster: Cluster,
    at_cut: dict[tuple[str, int], AuditRecord],
    expires_at: dict[tuple[str, int], float],
) -> None:
    """Every task killed in the namespace after the cut was self-fenced for want of
    renewals, before its lease expired, and its attempt ended lost (no outcome)."""
    ends = {
        (r.task_id, r.attempt): r
        for r in cluster.audit(*NS_WORKERS)
        if r.event is not AuditEvent.STARTED and (r.task_id, r.attempt) in at_cut
    }
    kills = [end for end in ends.values() if end.event is AuditEvent.KILLED]
    with Client(list(cluster.root_urls.values()), cluster.admin_key) as client:
        for kill in kills:
            assert kill.reason and kill.reason.startswith("self-fenced: lease not renewed"), kill
            expiry = expires_at.get((kill.task_id, kill.attempt))
            assert expiry is not None and kill.time < expiry, (kill, expiry)
            attempt = client.get(kill.task_id)["attempts"][kill.attempt - 1]
            lost = (attempt["status"], attempt["failure"])
            assert lost == ("lost", "coordinator_lost"), attempt


def nothing_charged(cluster: Cluster) -> None:
    """The partition cost no task (none failed: no poison verdict, no retries spent)
    and no worker (every breaker closed, none quarantined)."""
    with Client(list(cluster.root_urls.values()), cluster.admin_key) as client:
        failed = [t for t in client.list(limit=10_000) if t["status"] == "failed"]
        assert failed == [], [(t["id"], t["status_reason"]) for t in failed]
        assert client.status()["breakers"] == []
        workers = client.workers()
        assert [w["id"] for w in workers if w["breaker"]["state"] != "closed"] == []
        assert [w["id"] for w in workers if w["health"]["quarantined"]] == []
