"""The worker agent against a real coordinator process on loopback.

Both run as processes of their own: the coordinator through
``run_coordinator`` with a short lease (heartbeats follow it), the agent through
``run_worker``. Tasks are submitted and inspected over the REST API. The last
tests drive the heartbeat thread alone, for replies an agent rarely gets.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from dtf.core.model import LeaseRef
from dtf.worker.connection import Endpoints
from dtf.worker.heartbeat import HeartbeatThread, Target
from dtf.worker.leases import FencedLease, LeaseTable

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
WAIT_S = 60.0
LEASE_TIMEOUT_S = 4.0

COORDINATOR_SCRIPT = """
import sys
from pathlib import Path
from dtf.coordinator.server import run_coordinator
from dtf.coordinator.settings import CoordinatorSettings
data_dir, port, key, lease_timeout_s = sys.argv[1:]
sys.exit(run_coordinator(CoordinatorSettings(
    data_dir=Path(data_dir), port=int(port), admin_key=key, log_level="warning",
    lease_timeout_s=float(lease_timeout_s),
)))
"""

WORKER_SCRIPT = """
import json, logging, sys
from pathlib import Path
from dtf.worker.run import run_worker
from dtf.worker.settings import WorkerSettings
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
options = json.loads(sys.argv[1])
options["work_dir"] = Path(options["work_dir"])
sys.exit(run_worker(WorkerSettings(**options)))
"""


@dataclass
class Coordinator:
    url: str
    key: str
    data_dir: Path
    port: int
    process: subprocess.Popen[bytes]
    client: httpx.Client

    def submit(self, spec: dict[str, Any]) -> str:
        response = self.client.post("/api/tasks", json=spec)
        assert response.status_code < 300, response.text
        return str(response.json()["task_id"])

    def task(self, task_id: str) -> dict[str, Any]:
        response = self.client.get(f"/api/tasks/{task_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def finished(self, task_id: str) -> dict[str, Any]:
        wait_for(
            lambda: self.task(task_id)["status"] in ("completed", "failed", "cancelled"),
            f"task {task_id} to finish",
        )
        return self.task(task_id)


def wait_for(condition: Callable[[], bool], what: str, within_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {within_s:g}s waiting for {what}")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stop_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def start_coordinator(data_dir: Path, port: int, key: str) -> subprocess.Popen[bytes]:
    argv = [str(data_dir), str(port), key, str(LEASE_TIMEOUT_S)]
    return subprocess.Popen(
        [sys.executable, "-c", COORDINATOR_SCRIPT, *argv], start_new_session=True
    )


def is_healthy(client: httpx.Client) -> bool:
    try:
        return client.get("/health").status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[Coordinator]:
    key, port = secrets.token_urlsafe(16), free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_coordinator(tmp_path / "data", port, key)
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        coordinator = Coordinator(url, key, tmp_path / "data", port, process, client)
        try:
            wait_for(lambda: is_healthy(client), "the coordinator to answer /health")
            yield coordinator
        finally:
            stop_group(coordinator.process)


@contextlib.contextmanager
def worker(
    coordinator: Coordinator, tmp_path: Path, **options: Any
) -> Iterator[subprocess.Popen[bytes]]:
    settings = {
        "coordinator_urls": [coordinator.url],
        "api_key": coordinator.key,
        "worker_id": "agent-1",
        "work_dir": str(tmp_path / "work"),
        "reconnect_min_delay_s": 0.1,
        "reconnect_max_delay_s": 0.5,
        **options,
    }
    log = (tmp_path / "worker.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER_SCRIPT, json.dumps(settings)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        stop_group(process)
        log.close()


def worker_log(tmp_path: Path) -> str:
    return (tmp_path / "worker.log").read_text(errors="replace")


def wait_for_pid(path: Path) -> int:
    wait_for(lambda: path.exists() and path.read_text().strip().isdigit(), f"pid in {path}")
    return int(path.read_text())


def is_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def long_task(pid_file: Path) -> dict[str, Any]:
    return {
        "type": "command",
        "config": {"command": f"echo $$ > {pid_file}; exec sleep 60"},
        "retry_policy": {"max_retries": 0},
    }


def test_burst_worker_runs_each_task_type_and_exits(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    command_id = coordinator.submit(
        {
            "type": "command",
            "config": {
                "command": 'echo "attempt $DTF_ATTEMPT"; echo \'{"score": 3}\' > $DTF_RESULT_FILE'
            },
        }
    )
    test_id = coordinator.submit(
        {"type": "test", "config": {"path": str(EXAMPLES / "test_with_failure.py")}}
    )
    bench_id = coordinator.submit(
        {
            "type": "benchmark",
            "config": {
                "entry_point": "matmul_bench:run",
                "python_path": [str(EXAMPLES)],
                "params": {"batch_size": 2, "size": 8, "repeats": 2},
            },
        }
    )
    dead_url = f"http://127.0.0.1:{free_port()}"
    urls = [dead_url, coordinator.url]
    with worker(coordinator, tmp_path, coordinator_urls=urls, slots=2, burst=True) as agent:
        assert agent.wait(timeout=WAIT_S) == 0, worker_log(tmp_path)
    command, test, bench = (coordinator.task(i) for i in (command_id, test_id, bench_id))
    assert [t["status"] for t in (command, test, bench)] == ["completed"] * 3
    command_attempt = command["attempts"][0]
    assert command_attempt["started_at"] is not None
    assert command_attempt["outcome"]["stdout_tail"] == "attempt 1\n"
    assert command_attempt["outcome"]["metrics"] == {"score": 3}
    cases = test["attempts"][0]["outcome"]["test_cases"]
    assert sorted(case["outcome"] for case in cases) == ["failed", "passed"]
    assert bench["attempts"][0]["outcome"]["metrics"]["gflops"] > 0
    assert f"cannot reach coordinator {dead_url}" in worker_log(tmp_path)


def test_sigterm_kills_running_tasks_and_releases_their_leases(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    pid_file = tmp_path / "task.pid"
    task_id = coordinator.submit(long_task(pid_file))
    with worker(coordinator, tmp_path) as agent:
        task_pid = wait_for_pid(pid_file)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=WAIT_S) == 0, worker_log(tmp_path)
    wait_for(lambda: is_gone(task_pid), f"task process {task_pid} to be gone")
    task = coordinator.finished(task_id)
    assert task["attempts"][0]["status"] == "lost"
    assert task["attempts"][0]["failure"] == "worker_lost"


def test_partitioned_worker_fences_itself_before_its_lease_expires(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    pid_file = tmp_path / "task.pid"
    task_id = coordinator.submit(long_task(pid_file))
    with worker(coordinator, tmp_path):
        task_pid = wait_for_pid(pid_file)
        wait_for(lambda: coordinator.task(task_id)["status"] == "running", "the task to run")
        coordinator.process.send_signal(signal.SIGSTOP)
        try:
            wait_for(lambda: is_gone(task_pid), f"task process {task_pid} to be killed")
        finally:
            coordinator.process.send_signal(signal.SIGCONT)
        task = coordinator.finished(task_id)
    assert task["status"] == "failed"
    assert task["attempts"][0]["failure"] == "worker_lost"
    assert "outcome" not in task["attempts"][0] or task["attempts"][0]["outcome"] is None
    assert "self-fencing task " + task_id in worker_log(tmp_path)


def test_outcome_of_a_task_finished_while_the_coordinator_was_down_is_delivered(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    done_file = tmp_path / "done"
    task_id = coordinator.submit(
        {"type": "command", "config": {"command": f"sleep 1; echo finished; touch {done_file}"}}
    )
    with worker(coordinator, tmp_path):
        wait_for(lambda: coordinator.task(task_id)["status"] == "running", "the task to run")
        coordinator.process.kill()
        coordinator.process.wait(timeout=10)
        wait_for(done_file.exists, "the task to finish while the coordinator is down")
        coordinator.process = start_coordinator(
            coordinator.data_dir, coordinator.port, coordinator.key
        )
        wait_for(lambda: is_healthy(coordinator.client), "the restarted coordinator")
        task = coordinator.finished(task_id)
    assert task["status"] == "completed"
    assert len(task["attempts"]) == 1
    assert task["attempts"][0]["outcome"]["stdout_tail"] == "finished\n"


def test_outcome_a_new_coordinator_refuses_is_dropped_not_resent_forever(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    """The coordinator comes back on an empty data dir: it knows nothing of the
    task, refuses its outcome for good, and the burst worker, holding nothing
    more, goes idle and exits."""
    done_file = tmp_path / "done"
    task_id = coordinator.submit(
        {"type": "command", "config": {"command": f"sleep 1; touch {done_file}"}}
    )
    with worker(coordinator, tmp_path, burst=True, burst_idle_s=0.5) as agent:
        wait_for(lambda: coordinator.task(task_id)["status"] == "running", "the task to run")
        coordinator.process.kill()
        coordinator.process.wait(timeout=10)
        wait_for(done_file.exists, "the task to finish while the coordinator is down")
        coordinator.process = start_coordinator(
            tmp_path / "empty-data-dir", coordinator.port, coordinator.key
        )
        wait_for(lambda: agent.poll() is not None, "the burst worker to exit")
    assert agent.returncode == 0
    assert f"coordinator refused the report for LeaseRef(task_id='{task_id}'" in worker_log(
        tmp_path
    )


def test_cancelled_task_is_killed_and_reports_nothing(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    pid_file = tmp_path / "task.pid"
    task_id = coordinator.submit(long_task(pid_file))
    follow_up = tmp_path / "follow-up"
    with worker(coordinator, tmp_path):
        task_pid = wait_for_pid(pid_file)
        wait_for(lambda: coordinator.task(task_id)["status"] == "running", "the task to run")
        response = coordinator.client.post(f"/api/tasks/{task_id}/cancel")
        assert response.status_code < 300, response.text
        wait_for(lambda: is_gone(task_pid), f"task process {task_pid} to be killed")
        next_id = coordinator.submit(
            {"type": "command", "config": {"command": f"touch {follow_up}"}}
        )
        assert coordinator.finished(next_id)["status"] == "completed"
    task = coordinator.task(task_id)
    assert task["status"] == "cancelled"
    assert task["attempts"][0]["status"] == "cancelled"
    assert task["attempts"][0].get("outcome") is None
    assert not task["attempts"][0].get("superseded_outcomes")
    assert follow_up.exists()


def test_wrong_api_key_is_named_in_the_log_and_retried_until_stopped(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    with worker(coordinator, tmp_path, api_key="not-a-key") as agent:
        wait_for(
            lambda: worker_log(tmp_path).count("refused this worker's API key (HTTP 403)") >= 2,
            "the worker to report the refused key twice",
        )
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=WAIT_S) == 0, worker_log(tmp_path)


# -- the heartbeat thread on its own, against the real heartbeat route ---------

LEASE = LeaseRef("no-such-task", 1, 5)


def register_over_http(coordinator: Coordinator, worker_id: str, session: str) -> None:
    body = {"worker_id": worker_id, "session": session, "capabilities": {}, "slots": 1}
    response = coordinator.client.post("/api/workers/register", json=body)
    assert response.status_code == 200, response.text


def beat_once(
    coordinator: Coordinator, worker_id: str, session: str, leases: LeaseTable
) -> tuple[list[FencedLease], list[str]]:
    fenced: list[FencedLease] = []
    rejected: list[str] = []
    heartbeats = HeartbeatThread(
        worker_id,
        coordinator.key,
        leases,
        on_fenced=fenced.append,
        on_session_rejected=rejected.append,
    )
    endpoints = Endpoints.parse(coordinator.url)
    heartbeats.point_at(Target(endpoints, session, 1.0, LEASE_TIMEOUT_S))
    heartbeats.beat()
    heartbeats.client.close()
    return fenced, rejected


def test_heartbeat_for_a_replaced_or_unknown_session_asks_for_a_reconnect(
    coordinator: Coordinator,
) -> None:
    register_over_http(coordinator, "hb-worker", "current-session")
    assert beat_once(coordinator, "hb-worker", "old-session", LeaseTable()) == ([], ["old-session"])
    assert beat_once(coordinator, "never-registered", "s", LeaseTable()) == ([], ["s"])


def test_running_lease_the_coordinator_does_not_hold_is_killed_at_once(
    coordinator: Coordinator,
) -> None:
    register_over_http(coordinator, "hb-worker", "s1")
    task = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        leases = LeaseTable()
        leases.add(LEASE, now=time.monotonic(), timeout_s=LEASE_TIMEOUT_S)
        leases.set_process(LEASE, task.pid)
        fenced, rejected = beat_once(coordinator, "hb-worker", "s1", leases)
        assert ([(f.lease, f.pgid) for f in fenced], rejected) == ([(LEASE, task.pid)], [])
        assert task.wait(timeout=10) == -signal.SIGKILL
        assert leases.held() == ([], LEASE.fence)
    finally:
        task.kill()
        task.wait(timeout=10)
