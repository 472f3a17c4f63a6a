"""Worker health against real processes: real faults quarantine a worker, an admin
brings it back with the CLI, and workers with a --health-check run it before any work."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dtf.client import Client
from dtf.local.cluster import ClusterSettings, LocalCluster
from dtf.local.processes import ManagedProcess, start_process
from dtf.testing.waiting import wait_for

pytestmark = pytest.mark.integration

COMMAND_TIMEOUT_S = 60
GPU_FAULT = 'echo "Xid 79: GPU has fallen off the bus" >&2; kill -SEGV $$'


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    settings = ClusterSettings(
        tmp_path / "data",
        workers=1,
        slots=1,
        coordinator_args=("--circuit-breaker-threshold", "20"),
    )
    with LocalCluster(settings) as running:
        yield running


def dtf(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DTF_")}
    env.update(COLUMNS="200", DTF_COORDINATOR=cluster.url, DTF_API_KEY=cluster.admin_key)
    return subprocess.run(
        [sys.executable, "-m", "dtf.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


def start_worker(cluster: LocalCluster, worker_id: str, health_check: str) -> ManagedProcess:
    argv = [
        sys.executable,
        *("-m", "dtf.cli", "worker", "--coordinator", cluster.url, "--worker-id", worker_id),
        *("--work-dir", str(cluster.data_dir / "workers" / worker_id)),
        *("--health-check", health_check, "--health-check-timeout", "30"),
    ]
    env = {**os.environ, "DTF_API_KEY": cluster.worker_key}
    return start_process(f"worker {worker_id}", argv, cluster.logs_dir / f"{worker_id}.log", env)


def on(worker_id: str, command: str, **fields: Any) -> dict[str, Any]:
    spec = {"type": "command", "config": {"command": command}}
    return {**spec, "requirements": {"worker_ids": [worker_id]}, **fields}


def test_real_gpu_faults_quarantine_a_worker_until_an_admin_enables_it(
    cluster: LocalCluster,
) -> None:
    with cluster.client() as client:
        faulty = on("local-1", GPU_FAULT, retry_policy={"max_retries": 0})
        client.wait([client.submit(faulty) for _ in range(3)], timeout_s=60)
        health = client.worker("local-1")["health"]
        assert health["quarantined"]
        assert "3 faults (hardware_error x3)" in health["quarantine_reason"]
        assert health["score"] < 70

        listing = dtf(cluster, "workers")
        assert listing.returncode == 0, listing.stderr
        assert "quarantined" in listing.stdout
        assert "local-1: health" in listing.stdout and "below 70" in listing.stdout

        waiting = client.submit(on("local-1", "true"))
        # Assignment happens in the same state change as the submission.
        assert client.get(waiting)["status"] == "pending"

        enabled = dtf(cluster, "workers", "enable", "local-1", "--reason", "driver reinstalled")
        assert enabled.returncode == 0, enabled.stderr
        [task] = client.wait([waiting], timeout_s=30)
        assert task["status"] == "completed"
        assert not client.worker("local-1")["health"]["quarantined"]


def test_an_admin_disables_a_worker_with_the_cli_and_its_reason_is_shown(
    cluster: LocalCluster,
) -> None:
    disabled = dtf(
        cluster, "workers", "disable", "local-1", "--reason", "fan replacement", "--json"
    )
    assert disabled.returncode == 0, disabled.stderr
    assert '"quarantine_reason": "disabled by an admin: fan replacement"' in disabled.stdout
    listing = dtf(cluster, "workers")
    assert "local-1: disabled by an admin: fan replacement" in listing.stdout
    status = dtf(cluster, "status")
    assert "no new work" in status.stdout
    assert "local-1: disabled by an admin: fan replacement" in status.stdout


def test_a_worker_gets_work_only_after_its_health_check_passes(cluster: LocalCluster) -> None:
    failing = start_worker(cluster, "sick", "echo 'no CUDA devices found' >&2; exit 3")
    passing = start_worker(cluster, "fit", "echo smoke test ok")
    try:
        with cluster.client() as client:
            wait_for(
                lambda: (
                    worker_known(client, "sick")
                    and client.worker("sick")["health"]["check"] == "failed"
                ),
                30,
                "the failing health check to be reported",
            )
            sick = client.worker("sick")
            assert sick["health"]["check_detail"] == "exit 3: no CUDA devices found"
            assert not sick["takes_work"]
            wait_for(
                lambda: (
                    worker_known(client, "fit")
                    and client.worker("fit")["health"]["check"] == "passed"
                ),
                30,
                "the passing health check",
            )
            listing = dtf(cluster, "workers")
            assert "sick: health check failed: exit 3: no CUDA devices found" in listing.stdout

            either = {"worker_ids": ["sick", "fit"]}
            tasks = [client.submit({"type": "command", "config": {"command": "true"},
                                    "requirements": either}) for _ in range(4)]  # fmt: skip
            finished = client.wait(tasks, timeout_s=30)
        assert {t["attempts"][-1]["worker_id"] for t in finished} == {"fit"}
    finally:
        failing.stop(5.0)
        passing.stop(5.0)


def worker_known(client: Client, worker_id: str) -> bool:
    return any(w["id"] == worker_id for w in client.workers())


def test_an_http_worker_reports_its_health_check_over_rest(cluster: LocalCluster) -> None:
    headers = {"Authorization": f"Bearer {cluster.worker_key}"}
    register = {
        "type": "register",
        "worker_id": "poller",
        "session": "p1",
        "capabilities": {},
        "slots": 1,
        "incarnation": "boot-1",
        "health_check": "true",
    }
    with httpx.Client(base_url=cluster.url, headers=headers, timeout=10.0) as http:
        assert http.post("/api/workers/register", json=register).status_code == 200
        assert http.get("/api/workers/poller").json()["health"]["check"] == "pending"
        stale = {"session": "old", "passed": True}
        refused = http.post("/api/workers/poller/health-check", json=stale)
        assert refused.status_code == 409, refused.text
        report = {"session": "p1", "passed": True, "detail": "ok", "duration_s": 0.2}
        assert http.post("/api/workers/poller/health-check", json=report).status_code == 200
        worker = http.get("/api/workers/poller").json()
    assert (worker["health"]["check"], worker["takes_work"]) == ("passed", True)
