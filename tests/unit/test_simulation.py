"""The fleet simulation: many faulty workers, the real state machine, every invariant.

Each run ends with every task terminal or fails with the reason; invariants are
checked after every step and the end state by ``dtf.testing.simchecks``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dtf.testing import simworker
from dtf.testing.simulation import SimulationConfig, SimulationReport, run_simulation


def small(seed: int) -> SimulationConfig:
    """Eight workers, eighty tasks: a quick run for many seeds."""
    return SimulationConfig(seed=seed, workers=8, tasks=80, fault_window_s=200.0)


def chaos(seed: int) -> SimulationConfig:
    """Three times the faults, slow and often duplicated messages, frequent restarts."""
    return SimulationConfig(
        seed=seed,
        tasks=200,
        crash_rate=0.003,
        agent_restart_rate=0.003,
        partition_rate=0.004,
        coordinator_restart_rate=0.01,
        max_delay_s=3.0,
        duplicate_rate=0.3,
    )


def assert_settled(report: SimulationReport, tasks: int) -> None:
    assert sum(report.statuses.values()) == tasks
    assert set(report.statuses) <= {"completed", "failed", "cancelled"}
    assert report.statuses.get("completed", 0) > tasks // 2


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_fleet_of_twenty_runs_three_hundred_tasks_through_faults(seed: int) -> None:
    report = run_simulation(SimulationConfig(seed=seed))
    assert_settled(report, 300)
    assert report.crashes and report.agent_restarts and report.partitions
    assert report.lost_attempts > 0
    assert report.duplicated_messages > 0


def test_heavy_chaos_with_frequent_coordinator_restarts() -> None:
    report = run_simulation(chaos(11))
    assert_settled(report, 200)
    assert report.coordinator_restarts >= 3
    assert report.self_fenced > 0
    assert report.superseded_outcomes > 0


@settings(max_examples=5)
@given(seed=st.integers(0, 2**32 - 1))
def test_any_seed_settles_safely(seed: int) -> None:
    assert_settled(run_simulation(small(seed)), 80)


def test_same_seed_same_run() -> None:
    first = run_simulation(small(5))
    second = run_simulation(small(5))
    assert first.journal == second.journal
    assert first.final_snapshot == second.final_snapshot


def test_a_worker_that_does_not_self_fence_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The overlap check has teeth: without self-fencing a partitioned worker keeps running."""
    original = simworker.SimWorker.fence_and_finish

    def never_fence(self: simworker.SimWorker, now: float) -> None:
        for running in self.running.values():
            running.deadline = float("inf")
        original(self, now)

    monkeypatch.setattr(simworker.SimWorker, "fence_and_finish", never_fence)
    with pytest.raises(AssertionError, match="executing on"):
        run_simulation(SimulationConfig(seed=1, partition_rate=0.004, max_delay_s=3.0))


SIMULATE_AND_HASH = """
import hashlib
from dtf.testing.simulation import SimulationConfig, run_simulation
report = run_simulation(SimulationConfig(seed=5, workers=8, tasks=80, fault_window_s=200.0))
print(hashlib.sha256(report.final_snapshot).hexdigest())
"""


@pytest.mark.parametrize("hash_seed", ["0", "4242"])
def test_simulation_is_the_same_under_another_hash_seed(hash_seed: str) -> None:
    report = run_simulation(small(5))
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    result = subprocess.run(
        [sys.executable, "-c", SIMULATE_AND_HASH],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.stdout.strip() == hashlib.sha256(report.final_snapshot).hexdigest()
