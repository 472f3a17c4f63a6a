"""A coordinator stopped and started again does not hold its own downtime against its
workers: their connections close because it stops, not because they failed, so no
'connection dropped' health sample is kept, and a running task keeps its lease.
Standalone, and in a cluster where the worker moves to another node each time."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

from dtf.client import Client
from dtf.local.cluster import ClusterSettings, LocalCluster
from dtf.local.ha_layout import HaSettings
from dtf.testing.ha import FailoverCluster, poll, running_cluster
from dtf.testing.waiting import wait_for

pytestmark = pytest.mark.integration

RESTARTS = 3
QUICK_RESTARTS = 8
WAIT_S = 60.0
STOP_TIMEOUT_S = 30.0


SLEEPER = {"type": "command", "config": {"command": "sleep 300"}, "timeout_seconds": 600}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster(ClusterSettings(tmp_path / "data", workers=1, slots=1)) as running:
        yield running


def test_restarts_of_the_coordinator_leave_a_busy_workers_health_alone(
    cluster: LocalCluster,
) -> None:
    with cluster.client() as client:
        task_id = client.submit(SLEEPER)
        wait_for(lambda: client.get(task_id)["status"] == "running", WAIT_S, "the task to run")
        attempt = client.get(task_id)["attempts"][-1]["number"]
    restart(cluster, RESTARTS)
    with cluster.client() as client:
        worker = client.worker("local-1")
        task = client.get(task_id)
    assert worker["health"]["summary"] == "no recent results", worker["health"]
    assert worker["health"]["score"] == 100.0
    assert (task["status"], task["attempts"][-1]["number"]) == ("running", attempt)


def test_a_running_task_outlives_a_coordinator_restarting_again_and_again(
    cluster: LocalCluster,
) -> None:
    """Each restart is stopped again as soon as the worker has registered: too soon,
    often, for a heartbeat to land, so the registrations themselves must renew the
    worker's lease on the running task (or it fences the task itself)."""
    with cluster.client() as client:
        task_id = client.submit(SLEEPER)
        wait_for(lambda: client.get(task_id)["status"] == "running", WAIT_S, "the task to run")
    restart(cluster, QUICK_RESTARTS)
    with cluster.client() as client:
        task = client.get(task_id)
    assert (task["status"], len(task["attempts"])) == ("running", 1), task["attempts"]


def restart(cluster: LocalCluster, times: int) -> None:
    """Stop the coordinator gracefully and start it again, each time as soon as the
    worker has registered with it."""
    for _ in range(times):
        assert cluster.coordinator is not None
        assert cluster.coordinator.stop(STOP_TIMEOUT_S) == 0
        cluster.start_coordinator()
        cluster.wait_for_workers(["local-1"])


@pytest.fixture
def ha_cluster(tmp_path: Path) -> Iterator[FailoverCluster]:
    settings = HaSettings(tmp_path / "cluster", workers=1, slots=1, base_port=0)
    with running_cluster(settings) as cluster:
        yield cluster


@pytest.mark.timeout(300)
def test_stopping_the_node_a_busy_worker_is_connected_through_leaves_its_health_alone(
    ha_cluster: FailoverCluster,
) -> None:
    [worker_id] = ha_cluster.worker_processes()
    with Client(ha_cluster.urls, ha_cluster.admin_key) as client:
        task_id = client.submit(SLEEPER)
        wait_for(lambda: client.get(task_id)["status"] == "running", WAIT_S, "the task to run")
        attempt = client.get(task_id)["attempts"][-1]["number"]
        for _ in range(RESTARTS):
            node_id = client.worker(worker_id)["node_id"]
            assert ha_cluster.terminate(node_id).wait_or_kill(STOP_TIMEOUT_S) == 0
            poll(
                functools.partial(_online_elsewhere, client, worker_id, node_id),
                WAIT_S,
                f"{worker_id} to connect through a node other than {node_id}",
            )
            ha_cluster.restore()
        worker = client.worker(worker_id)
        task = client.get(task_id)
    assert worker["health"]["summary"] == "no recent results", worker["health"]
    assert (task["status"], task["attempts"][-1]["number"]) == ("running", attempt)


def _online_elsewhere(client: Client, worker_id: str, node_id: str) -> bool | None:
    worker = client.worker(worker_id)
    return (worker["status"] == "online" and worker["node_id"] not in ("", node_id)) or None
