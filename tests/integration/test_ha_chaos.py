"""Chaos: a seeded schedule of faults while tasks are submitted and run, then the history
checker on what everyone saw.

The cluster is ``dtf cluster local``'s ``HaCluster`` (three etcd members, three
coordinators its supervisor restarts when they die) with no workers of its own; the test
adds two audited workers on those coordinators and, where network namespaces are
permitted, a fourth coordinator with two audited workers in a namespace reaching etcd
through relays on a veth pair. The faults, one after another: SIGKILL a coordinator or
the leader (restarted by the supervisor, or by the test for the namespaced node),
SIGKILL an etcd member and restart it, and cut the namespace off for longer than a lease.
A submitter keeps submitting throughout. Afterwards every acknowledged task must finish
on every node, and the history (acknowledged submits, every worker's audit log, every
node's tasks) must show nothing lost, no task run twice at once, no attempt recorded
twice.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest

from dtf.client import Client
from dtf.local.ha_cluster import HaCluster, HaSettings
from dtf.testing.etcd import free_ports, require_etcd
from dtf.testing.fleet import Fleet, cluster_summary, leader_id
from dtf.testing.history import Recorder, Submitter, check, settle
from dtf.testing.netns import Namespace, TcpRelay, netns_problem
from dtf.testing.waiting import wait_for

pytestmark = pytest.mark.integration
logger = logging.getLogger(__name__)

SEED = 20251124
FAULTS = 6
FAULT_GAP_S = 3.0
ETCD_DOWN_S = 3.0
LEASE_TIMEOUT_S = 3.0
PARTITION_S = 2 * LEASE_TIMEOUT_S
SUBMIT_EVERY_S = 0.3
NAMESPACED = "ns-node"
WAIT_S = 90.0


@dataclass(frozen=True)
class Fault:
    """``kind``: coordinator (node ``target``), leader, etcd (member ``target``), partition."""

    kind: str
    target: int


def fault_schedule(seed: int, count: int, *, with_partition: bool) -> list[Fault]:
    """``count`` faults in a seeded order: each kind at least once, one partition at most."""
    rng = random.Random(seed)
    kinds = ["coordinator", "leader", "etcd"]
    faults = [Fault(kind, rng.randrange(3)) for kind in kinds]
    faults += [Fault("partition", 0)] if with_partition else []
    faults += [Fault(rng.choice(kinds), rng.randrange(3)) for _ in range(count - len(faults))]
    rng.shuffle(faults)
    return faults


def task_spec(task_id: str) -> dict[str, Any]:
    """Mostly short tasks; one in six outlives a lease, to be running at a partition."""
    rng = random.Random(f"{SEED}-{task_id}")
    seconds = LEASE_TIMEOUT_S + 2 if rng.random() < 1 / 6 else rng.choice([0.2, 0.5, 1.0, 2.0])
    return {
        "id": task_id,
        "type": "command",
        "config": {"command": f"sleep {seconds:g}"},
        "timeout_seconds": 120,
        "retry_policy": {"max_retries": 10, "retry_delay_seconds": 0.1},
    }


@dataclass
class Chaos:
    cluster: HaCluster
    fleet: Fleet
    namespace: Namespace | None
    namespaced_port: int
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def nodes(self) -> dict[str, str]:
        """Every coordinator's id and URL (from this side of any veth pair)."""
        urls = dict(zip(self.cluster.node_ids, self.cluster.urls, strict=True))
        if self.namespace is not None:
            urls[NAMESPACED] = f"http://{self.namespace.address}:{self.namespaced_port}"
        return urls

    def note(self, kind: str, **fields: Any) -> None:
        logger.info("chaos: %s %s", kind, fields)
        self.events.append({"event": kind, **fields})


@pytest.fixture
def chaos(tmp_path: Path) -> Iterator[Chaos]:
    """Torn down in reverse: the test's workers and node, relays, namespace, HaCluster."""
    require_etcd()
    problem = netns_problem()
    if problem is not None:
        logger.warning("chaos without partitions: %s", problem)
    events: list[dict[str, Any]] = []
    settings = HaSettings(
        tmp_path / "ha",
        workers=0,
        base_port=0,
        cluster_name="chaos",
        coordinator_flags=("--lease-timeout", str(LEASE_TIMEOUT_S)),
    )
    cluster = HaCluster(settings, lambda kind, fields: events.append({"event": kind, **fields}))
    with contextlib.ExitStack() as stack:
        stack.callback(cluster.stop)
        cluster.start()
        namespace = None if problem else Namespace.create()
        if namespace is not None:
            stack.callback(namespace.delete)
        fleet = Fleet(tmp_path / "fleet", lease_timeout_s=LEASE_TIMEOUT_S)
        chaos = Chaos(cluster, fleet, namespace, free_ports(1)[0], events)
        if namespace is not None:
            assert cluster.etcd is not None
            for url in cluster.etcd.client_urls:
                port = int(url.rsplit(":", 1)[1])
                stack.callback(TcpRelay(namespace.host_address, port).close)
        stack.callback(wait_for_own_leader, cluster)
        stack.callback(fleet.stop_all)
        start_fleet(chaos)
        yield chaos
        (tmp_path / "events.json").write_bytes(msgspec.json.encode(chaos.events))


def wait_for_own_leader(cluster: HaCluster) -> None:
    """Once the namespaced node has stopped (and resigned), let one of HaCluster's own
    nodes take over before ``HaCluster.stop``, which stops the leader last and knows
    only its own nodes."""
    with cluster.http_client() as http:

        def own_leader() -> bool:
            leader = cluster.current_leader(http)
            return leader is not None and leader["node_id"] in cluster.node_ids

        wait_for(own_leader, WAIT_S, "one of HaCluster's nodes to lead")


def start_fleet(chaos: Chaos) -> None:
    """The namespaced node (if any), then two workers on each side."""
    cluster, fleet, namespace = chaos.cluster, chaos.fleet, chaos.namespace
    if namespace is not None:
        start_namespaced_node(chaos)
        url = chaos.nodes[NAMESPACED]
        wait_for(lambda: leader_id(url, cluster.admin_key) is not None, WAIT_S, "ns-node")
        inside = [f"http://127.0.0.1:{chaos.namespaced_port}"]
        for worker in ("ns-w1", "ns-w2"):
            fleet.worker(worker, urls=inside, api_key=cluster.worker_key, namespace=namespace)
    for worker in ("w1", "w2"):
        fleet.worker(worker, urls=cluster.urls, api_key=cluster.worker_key)
    with Client(cluster.urls, cluster.admin_key) as client:
        expected = set(fleet.workers)
        wait_for(lambda: online(client) == expected, WAIT_S, "every worker to be online")


def start_namespaced_node(chaos: Chaos) -> None:
    assert chaos.namespace is not None and chaos.cluster.etcd is not None
    host = chaos.namespace.host_address
    relayed = [url.replace("127.0.0.1", host) for url in chaos.cluster.etcd.client_urls]
    chaos.fleet.coordinator(
        NAMESPACED,
        cluster=chaos.cluster.settings.cluster_name,
        etcd=relayed,
        port=chaos.namespaced_port,
        admin_key=chaos.cluster.admin_key,
        namespace=chaos.namespace,
    )


def online(client: Client) -> set[str]:
    return {w["id"] for w in client.workers() if w.get("status") == "online"}


def inject(chaos: Chaos, fault: Fault, stopping: threading.Event) -> None:
    match fault.kind:
        case "coordinator":
            kill_coordinator(chaos, chaos.cluster.node_ids[fault.target])
        case "leader":
            leader = leader_id(chaos.cluster.urls[fault.target], chaos.cluster.admin_key)
            kill_coordinator(chaos, leader or chaos.cluster.node_ids[fault.target])
        case "etcd":
            etcd = chaos.cluster.etcd
            assert etcd is not None
            chaos.note("etcd_killed", member=fault.target)
            etcd.kill(fault.target)
            stopping.wait(ETCD_DOWN_S)
            etcd.restart(fault.target)
            etcd.wait_healthy(WAIT_S)
        case "partition":
            assert chaos.namespace is not None
            chaos.note("partitioned")
            chaos.namespace.cut()
            stopping.wait(PARTITION_S)
            chaos.namespace.heal()
    restart_namespaced_node(chaos)
    chaos.note("recovered", fault=fault.kind)


def restart_namespaced_node(chaos: Chaos) -> None:
    """Start the namespaced node again if it died (killed, or it could not reach etcd
    when it started) and wait until it serves; HaCluster's supervisor does this for
    the others."""
    process = chaos.fleet.coordinators.get(NAMESPACED)
    if process is None or process.is_running:
        return
    chaos.note("coordinator_restarted", node_id=NAMESPACED, after=process.exit_code)
    start_namespaced_node(chaos)
    url, key = chaos.nodes[NAMESPACED], chaos.cluster.admin_key
    wait_for(lambda: leader_id(url, key) is not None, WAIT_S, f"{NAMESPACED} to serve")


def kill_coordinator(chaos: Chaos, node_id: str) -> None:
    """SIGKILL ``node_id``; HaCluster's supervisor restarts its own (``inject`` restarts
    the namespaced one)."""
    chaos.note("coordinator_killed", node_id=node_id)
    if node_id == NAMESPACED:
        chaos.fleet.coordinators[NAMESPACED].kill_tree()
        return
    chaos.cluster.coordinator_processes()[node_id].kill_tree()
    wait_for(
        lambda: chaos.cluster.coordinator_processes()[node_id].is_running,
        WAIT_S,
        f"the supervisor to restart {node_id}",
    )


@pytest.mark.timeout(400)
def test_chaos_run_keeps_every_acknowledged_task_and_never_runs_one_twice_at_once(
    chaos: Chaos, tmp_path: Path
) -> None:
    faults = fault_schedule(SEED, FAULTS, with_partition=chaos.namespace is not None)
    recorder = Recorder()
    client = Client(list(chaos.nodes.values()), chaos.cluster.admin_key, timeout_s=3.0)
    submitter = Submitter(client, recorder, task_spec, prefix="c", interval_s=SUBMIT_EVERY_S)
    submitter.start()
    try:
        for fault in faults:
            submitter.stopping.wait(FAULT_GAP_S)
            inject(chaos, fault, submitter.stopping)
    finally:
        submitter.stop(WAIT_S)
        client.close()
    assert submitter.error is None
    assert recorder.acknowledged_ids, "nothing was acknowledged"
    key = chaos.cluster.admin_key
    unsettled = settle(chaos.nodes, key, recorder.acknowledged_ids, WAIT_S)
    history = recorder.history(chaos.nodes, key, chaos.fleet.audit_logs())
    (tmp_path / "history.json").write_bytes(msgspec.json.encode(history))
    assert unsettled is None, f"{unsettled}\n{cluster_summary(chaos.nodes, key)}"
    assert check(history) == []


def test_the_schedule_is_seeded_and_has_every_kind_of_fault() -> None:
    faults = fault_schedule(SEED, FAULTS, with_partition=True)
    assert faults == fault_schedule(SEED, FAULTS, with_partition=True)
    assert len(faults) == FAULTS
    assert {f.kind for f in faults} == {"coordinator", "leader", "etcd", "partition"}
    assert [f.kind for f in faults].count("partition") == 1
    without = fault_schedule(SEED, FAULTS, with_partition=False)
    assert "partition" not in {f.kind for f in without}
