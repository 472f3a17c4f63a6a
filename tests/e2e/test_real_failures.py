"""Real coordinator and worker processes on loopback, killed with SIGKILL mid-run.

Every task accepted must finish, exactly one attempt of each must be counted,
and the history must say what happened.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dtf.client import Client
from dtf.local.cluster import ClusterSettings, LocalCluster
from dtf.testing.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    settings = ClusterSettings(tmp_path / "data", workers=2, slots=2, lease_timeout_s=3.0)
    with LocalCluster(settings) as running:
        yield running


def running_attempt(client: Client, task_id: str) -> dict[str, Any] | None:
    task = client.get(task_id)
    if task["status"] != "running":
        return None
    return task["attempts"][-1]  # type: ignore[no-any-return]


def test_sigkilled_worker_task_is_recovered_on_another_worker(cluster: LocalCluster) -> None:
    with cluster.client() as client:
        task_id = client.submit({"type": "command", "config": {"command": "sleep 3"}})
        wait_for(lambda: running_attempt(client, task_id) is not None, 30, "the task to start")
        first = running_attempt(client, task_id)
        assert first is not None
        cluster.kill_worker(first["worker_id"])
        [task] = client.wait([task_id], timeout_s=60)
    assert task["status"] == "completed"
    lost, recovered = task["attempts"]
    assert (lost["status"], lost["failure"]) == ("lost", "worker_lost")
    assert lost["worker_id"] == first["worker_id"]
    assert recovered["status"] == "succeeded"
    assert recovered["worker_id"] != first["worker_id"]
    assert recovered["fence"] > lost["fence"]


def test_coordinator_sigkill_and_restart_loses_and_doubles_nothing(cluster: LocalCluster) -> None:
    specs = [
        {"type": "command", "config": {"command": "sleep 0.2"}, "id": f"job-{n}"} for n in range(40)
    ]
    with cluster.client() as client:
        ids = client.submit_many(specs)

        def some_completed() -> bool:
            return client.status()["tasks"].get("completed", 0) >= 8

        wait_for(some_completed, 60, "a few tasks to complete")
    assert cluster.coordinator is not None
    cluster.coordinator.kill_tree()
    cluster.start_coordinator()
    with cluster.client() as client:
        tasks = client.wait(ids, timeout_s=120)
        results = client.results()
    assert sorted(t["id"] for t in tasks) == sorted(ids)
    for task in tasks:
        assert task["status"] == "completed", task
        counted = [a for a in task["attempts"] if a["status"] == "succeeded"]
        assert len(counted) == 1, task["attempts"]
        assert [a["number"] for a in task["attempts"]] == list(range(1, len(task["attempts"]) + 1))
    succeeded = [(r["task_id"], r["attempt"]) for r in results if r["status"] == "succeeded"]
    assert len(succeeded) == len(set(succeeded)) == len(ids)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_worker_cut_off_from_the_coordinator_kills_its_task_itself(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """SIGSTOP freezes the coordinator: no lease can be renewed, so the worker
    must kill the task before the lease would expire, never leaving two runs."""
    script = f'echo $$ > {tmp_path}/pid-$DTF_ATTEMPT; [ "$DTF_ATTEMPT" != 1 ] || exec sleep 60'
    with cluster.client() as client:
        task_id = client.submit({"type": "command", "config": {"command": script}})
        wait_for(lambda: running_attempt(client, task_id) is not None, 30, "the task to start")
    pid_file = tmp_path / "pid-1"
    wait_for(pid_file.exists, 10, "the task to write its pid")
    task_pid = int(pid_file.read_text())
    assert cluster.coordinator is not None
    os.kill(cluster.coordinator.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: not process_alive(task_pid), 15, "the worker to self-fence its task")
    finally:
        os.kill(cluster.coordinator.pid, signal.SIGCONT)
    with cluster.client() as client:
        [task] = client.wait([task_id], timeout_s=60)
    assert task["status"] == "completed"
    assert [a["status"] for a in task["attempts"]] == ["lost", "succeeded"]
    assert task["attempts"][0]["failure"] == "worker_lost"


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_out_of_memory_benchmark_completes_with_a_halved_batch(cluster: LocalCluster) -> None:
    """The issue's example: OOM above batch 8, submitted with 32, done at 8."""
    spec = {
        "type": "benchmark",
        "config": {
            "entry_point": "oom_bench:run",
            "params": {"batch_size": 32},
            "python_path": [str(EXAMPLES)],
        },
    }
    with cluster.client() as client:
        [task] = client.wait([client.submit(spec)], timeout_s=60)
    assert task["status"] == "completed"
    attempts = task["attempts"]
    assert [a["params_patch"].get("batch_size", 32) for a in attempts] == [32, 16, 8]
    assert [a["failure_type"] for a in attempts[:2]] == ["resource_exhaustion"] * 2
    assert [a["recovery"] for a in attempts[:2]] == ["reduce_batch_size"] * 2
    assert "MemoryError" in attempts[0]["evidence"][0]
    assert attempts[-1]["outcome"]["metrics"]["batch_size"] == 8


def test_a_task_that_hangs_once_times_out_and_completes_on_its_retry(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    """The first attempt hangs past its timeout and is killed; the retry finds the marker."""
    marker = tmp_path / "hung-once"
    spec = {
        "type": "command",
        "config": {"command": f"if [ ! -e {marker} ]; then touch {marker}; sleep 60; fi"},
        "timeout_seconds": 1.0,
        "retry_policy": {"retry_delay_seconds": 0.1, "jitter": 0.0},
    }
    with cluster.client() as client:
        [task] = client.wait([client.submit(spec)], timeout_s=60)
    assert task["status"] == "completed"
    first, second = task["attempts"]
    assert (first["failure"], first["failure_type"]) == ("timeout", "timeout")
    assert first["recovery"] is not None and first["recovery_reason"]
    assert second["status"] == "succeeded"


def test_a_breaker_opens_on_a_faulty_worker_and_a_probe_closes_it(tmp_path: Path) -> None:
    settings = ClusterSettings(
        tmp_path / "data",
        workers=2,
        slots=1,
        coordinator_args=("--circuit-breaker-threshold", "2", "--circuit-breaker-reset-time", "3"),
    )
    faulty = {
        "type": "command",
        "config": {"command": 'echo "Xid 79: GPU has fallen off the bus" >&2; kill -SEGV $$'},
        "requirements": {"worker_ids": ["local-1"]},
        "retry_policy": {"max_retries": 0},
    }
    with LocalCluster(settings) as running, running.client() as client:
        client.wait([client.submit(faulty), client.submit(faulty)], timeout_s=60)
        [worker] = [w for w in client.workers() if w["id"] == "local-1"]
        assert worker["breaker"]["state"] == "open"
        opened_until = worker["breaker"]["next_probe_at"]
        probe_id = client.submit(
            {
                "type": "command",
                "config": {"command": "true"},
                "requirements": faulty["requirements"],
            }
        )
        [probe] = client.wait([probe_id], timeout_s=60)
        [worker] = [w for w in client.workers() if w["id"] == "local-1"]
    assert probe["status"] == "completed"
    assert probe["attempts"][0]["assigned_at"] >= opened_until
    assert worker["breaker"]["state"] == "closed"
