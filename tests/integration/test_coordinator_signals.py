"""A coordinator stopped by SIGTERM or SIGINT shuts down and exits 0, standalone and in a
cluster, where the leader resigns on the way out (uvicorn raises the signal again after
its clean shutdown; ``dtf coordinator`` makes that an exit with code 0)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dtf.client import Client
from dtf.errors import DtfError
from dtf.local.ha_cluster import HaSettings
from dtf.local.processes import find_free_port
from dtf.testing.ha import FailoverCluster, poll, running_cluster
from dtf.testing.waiting import wait_for

pytestmark = pytest.mark.integration

Record = dict[str, Any]
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


def is_healthy(url: str) -> bool:
    with Client(url, timeout_s=2.0) as client:
        try:
            return client.health()
        except DtfError:
            return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_standalone_coordinator_exits_0_on_a_stop_signal(
    tmp_path: Path, signum: signal.Signals
) -> None:
    port = find_free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DTF_")}
    argv = [sys.executable, "-m", "dtf.cli", "coordinator", "--port", str(port)]
    with (tmp_path / "coordinator.log").open("wb") as log:
        coordinator = subprocess.Popen(
            [*argv, "--data-dir", str(tmp_path / "data")], stdout=log, stderr=log, env=env
        )
    try:
        wait_for(lambda: is_healthy(f"http://127.0.0.1:{port}"), START_TIMEOUT_S, "/health")
        coordinator.send_signal(signum)
        exit_code = coordinator.wait(timeout=STOP_TIMEOUT_S)
    finally:
        if coordinator.poll() is None:
            coordinator.kill()
            coordinator.wait()
    output = (tmp_path / "coordinator.log").read_text()
    assert exit_code == 0, output
    assert "Application shutdown complete" in output


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[FailoverCluster]:
    settings = HaSettings(tmp_path / "cluster", nodes=2, workers=0, base_port=0)
    with running_cluster(settings) as cluster:
        yield cluster


@pytest.mark.timeout(180)
def test_cluster_leader_resigns_and_exits_0_on_sigterm(cluster: FailoverCluster) -> None:
    leader = cluster.leader(START_TIMEOUT_S)
    process = cluster.terminate(leader["node_id"])
    exit_code = process.wait_or_kill(STOP_TIMEOUT_S)
    assert exit_code == 0, process.log_tail()
    [survivor] = [node_id for node_id in cluster.node_ids if node_id != leader["node_id"]]

    def ended_term() -> Record | None:
        history = cluster.get(survivor, "/api/cluster/leader")["history"]
        term = next((term for term in history if term["epoch"] == leader["epoch"]), None)
        return term if term is not None and term["ended_at"] is not None else None

    term = poll(ended_term, START_TIMEOUT_S, f"{survivor} to see term {leader['epoch']} end")
    assert term["end_reason"] == "resigned: shutdown"
