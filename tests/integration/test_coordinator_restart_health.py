"""A coordinator stopped and started again does not hold its own downtime against its
workers: their connections close because it stops, not because they failed, so no
'connection dropped' health sample is kept, and a running task keeps its lease."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dtf.local.cluster import ClusterSettings, LocalCluster
from dtf.testing.waiting import wait_for

pytestmark = pytest.mark.integration

RESTARTS = 3
WAIT_S = 60.0
STOP_TIMEOUT_S = 30.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster(ClusterSettings(tmp_path / "data", workers=1, slots=1)) as running:
        yield running


def test_restarts_of_the_coordinator_leave_a_busy_workers_health_alone(
    cluster: LocalCluster,
) -> None:
    spec = {"type": "command", "config": {"command": "sleep 300"}, "timeout_seconds": 600}
    with cluster.client() as client:
        task_id = client.submit(spec)
        wait_for(lambda: client.get(task_id)["status"] == "running", WAIT_S, "the task to run")
        attempt = client.get(task_id)["attempts"][-1]["number"]
    for _ in range(RESTARTS):
        assert cluster.coordinator is not None
        assert cluster.coordinator.stop(STOP_TIMEOUT_S) == 0
        cluster.start_coordinator()
        cluster.wait_for_workers(["local-1"])
    with cluster.client() as client:
        worker = client.worker("local-1")
        task = client.get(task_id)
    assert worker["health"]["summary"] == "no recent results", worker["health"]
    assert worker["health"]["score"] == 100.0
    assert (task["status"], task["attempts"][-1]["number"]) == ("running", attempt)
