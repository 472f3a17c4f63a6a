"""Fault injection on a real local cluster: faults of many kinds strike real task
processes and agents, each attempt they hit is classified as intended, a
crashed agent is restarted, and every task still ends with a verdict."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dtf.local import ClusterSettings, LocalCluster
from dtf.worker.fault_actions import INJECTED_MARK
from dtf.worker.faults import EMULATED_KINDS, FaultKind, FaultSettings, InjectedFault

pytestmark = pytest.mark.integration

# With this seed the first attempts of TASK_IDS draw eight different kinds
# (one hang, one agent crash); later attempts draw again.
SEED = 1851
RATE = 0.8
TASK_IDS = [f"fi-{kind}-{n}" for kind in ("bench", "cmd") for n in range(4)]
TIMEOUT_S = 3.0
INTENDED = {
    FaultKind.CRASH: "software_error",
    FaultKind.HANG: "timeout",
    FaultKind.OOM: "resource_exhaustion",
    FaultKind.CUDA_ERROR: "cuda_error",
    FaultKind.HARDWARE_ERROR: "hardware_error",
    FaultKind.BROWSER_CRASH: "browser_crash",
    FaultKind.WEBGPU_LOST: "webgpu_context_lost",
    FaultKind.AGENT_CRASH: "worker_crash",
}
ALLOCATING_TASK = '''
import time

def run(work_s: float = 0.6) -> dict:
    """Allocates a MiB every few milliseconds for work_s, as a real workload grows."""
    deadline = time.perf_counter() + work_s
    blocks = []
    while time.perf_counter() < deadline:
        blocks.append(bytearray(1 << 20))
        time.sleep(0.005)
    return {"blocks": len(blocks)}
'''


def spec(task_id: str, module_dir: Path) -> dict[str, Any]:
    if "bench" in task_id:
        config: dict[str, Any] = {
            "entry_point": "allocating_task:run",
            "python_path": [str(module_dir)],
        }
        task_type = "benchmark"
    else:
        config, task_type = {"command": "sleep 0.6"}, "command"
    return {
        "id": task_id,
        "type": task_type,
        "config": config,
        "timeout_seconds": TIMEOUT_S,
        "retry_policy": {"max_retries": 1, "retry_delay_seconds": 0.2},
    }


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    settings = ClusterSettings(
        tmp_path / "data",
        workers=2,
        slots=2,
        lease_timeout_s=TIMEOUT_S,
        restart_workers=True,
        faults=FaultSettings(rate=RATE, seed=SEED),
        # At this fault rate breakers and quarantine would soon stop all work;
        # here the attempts themselves are under test.
        coordinator_args=("--circuit-breaker-threshold", "1000", "--health-threshold", "0"),
    )
    with LocalCluster(settings) as running:
        yield running


def check_attempt(fault: InjectedFault, attempt: dict[str, Any], crashed_agents: set[str]) -> None:
    where = f"{fault.kind} on {fault.task_id} attempt {fault.attempt}: {attempt}"
    if attempt["status"] == "lost" and fault.worker_id in crashed_agents:
        return  # its agent was crashed by another fault before it could report
    outcome = attempt.get("outcome") or {}
    if fault.kind is FaultKind.AGENT_CRASH:
        assert (attempt["status"], attempt["failure_type"]) == ("lost", "worker_crash"), where
    elif fault.kind is FaultKind.DISCONNECT:
        assert attempt["status"] == "succeeded", where
        assert outcome["injected_fault"] == "disconnect", where
    else:
        assert attempt["failure_type"] == INTENDED[fault.kind], where
        assert outcome["injected_fault"] == fault.kind.value, where
        assert f"injected fault {fault.kind}" in attempt["reason"], where
    if fault.kind in EMULATED_KINDS:
        assert any(INJECTED_MARK in quote for quote in attempt["evidence"]), where


@pytest.mark.timeout(90)
def test_injected_faults_really_happen_and_are_classified_as_intended(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    (tmp_path / "allocating_task.py").write_text(ALLOCATING_TASK, encoding="utf-8")
    with cluster.client() as client:
        client.submit_many([spec(task_id, tmp_path) for task_id in TASK_IDS])
        tasks = {task["id"]: task for task in client.wait(TASK_IDS, timeout_s=60)}
    faults = cluster.injected_faults()
    kinds = {fault.kind for fault in faults}
    assert len(kinds) >= 6, f"only {sorted(kinds)} struck: {faults}"
    crashed_agents = {f.worker_id for f in faults if f.kind is FaultKind.AGENT_CRASH}
    for fault in faults:
        check_attempt(fault, tasks[fault.task_id]["attempts"][fault.attempt - 1], crashed_agents)
    for task in tasks.values():
        assert task["status"] in ("completed", "failed"), task
        assert task["status"] == "completed" or task["status_reason"], task
    if FaultKind.AGENT_CRASH in kinds:
        assert cluster.supervisor is not None and cluster.supervisor.restarts >= 1
