"""A coordinator node lost with a worker connected through it, on loopback without
network namespaces: two etcd members, two ``dtf coordinator --cluster`` processes
(node-1 leading) and a worker given only node-2's URL, running a long task.
node-2's coordinator is killed with SIGKILL: its registry record expires, the
leader journals the node as lost, and the task's attempt ends as
``coordinator_lost`` (charged to nobody) once its lease expires; the task then
completes on a worker connected through node-1.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dtf.client import Client
from dtf.local.ha_cluster import HaSettings
from dtf.local.ha_layout import worker_argv
from dtf.local.ha_status import Record
from dtf.local.processes import start_process
from dtf.testing.ha import FailoverCluster, poll, running_cluster

pytestmark = pytest.mark.integration

WAIT_S = 60.0
TASK_ID = "outlives-its-node"
# Long on the first attempt, so that it is running when node-2 dies; short after.
COMMAND = 'if [ "$DTF_ATTEMPT" = 1 ]; then sleep 300; fi; echo done'


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[FailoverCluster]:
    settings = HaSettings(tmp_path / "cluster", nodes=2, workers=0, slots=1, base_port=0)
    with running_cluster(settings) as cluster:
        yield cluster


def start_worker(cluster: FailoverCluster, worker_id: str, urls: list[str]) -> None:
    """A worker given only ``urls``, stopped with the cluster."""
    work_dir = cluster.data_dir / "workers" / worker_id
    argv = worker_argv(cluster.settings.python, worker_id, urls, 1, work_dir)
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("DTF_ADMIN_KEY", "DTF_API_KEY", "DTF_COORDINATOR")
    }
    marker = cluster.guard.environment() if cluster.guard else {}
    env.update(marker, PYTHONUNBUFFERED="1", DTF_API_KEY=str(cluster.worker_key))
    log_path = cluster.logs_dir / f"worker-{worker_id}.log"
    process = start_process(f"worker {worker_id}", argv, log_path, env)
    with cluster.lock:
        cluster.workers[worker_id] = process


def task(cluster: FailoverCluster) -> Record:
    return cluster.get("node-1", f"/api/tasks/{TASK_ID}")


def worker_status(cluster: FailoverCluster, worker_id: str) -> str | None:
    with Client([cluster.url_of("node-1")], cluster.admin_key) as client:
        statuses = {w["id"]: w["status"] for w in client.workers()}
    return statuses.get(worker_id)


def test_a_task_outlives_the_node_its_worker_was_connected_through(
    cluster: FailoverCluster,
) -> None:
    start_worker(cluster, "on-node-2", [cluster.url_of("node-2")])
    poll(
        lambda: worker_status(cluster, "on-node-2") == "online" or None,
        WAIT_S,
        "the worker on node-2 to come online",
    )
    with Client([cluster.url_of("node-1")], cluster.admin_key) as client:
        client.submit({"id": TASK_ID, "type": "command", "config": {"command": COMMAND}})
    poll(
        lambda: task(cluster)["status"] == "running" or None,
        WAIT_S,
        f"{TASK_ID} to run on the worker on node-2",
    )
    assert task(cluster)["attempts"][0]["worker_id"] == "on-node-2"
    start_worker(cluster, "on-node-1", [cluster.url_of("node-1")])

    cluster.kill("node-2")

    finished = poll(
        lambda: task(cluster) if task(cluster)["finished_at"] is not None else None,
        WAIT_S,
        f"{TASK_ID} to finish",
    )
    first, *others = finished["attempts"]
    assert (first["status"], first["failure"]) == ("lost", "coordinator_lost"), first
    assert finished["status"] == "completed", finished
    assert [a["worker_id"] for a in others] == ["on-node-1"], others
    assert worker_status(cluster, "on-node-2") in ("suspect", "offline")
