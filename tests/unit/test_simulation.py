"""The fleet simulation: many faulty workers, the real state machine, every invariant.

Each run ends with every task terminal or fails with the reason; invariants are
checked after every step and the end state by ``dtf.testing.simchecks`` and
``dtf.testing.simrecovery`` (escalation reasons, retry bounds, the OOM ladder,
poison tasks, the bad worker's breaker, the retry budget).
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dtf.core import commands as c
from dtf.core import recovery
from dtf.core.failures import FailureType
from dtf.core.model import Capabilities
from dtf.core.recovery_policy import RecoveryMode, RecoveryPolicy, Strategy
from dtf.core.state import State, StateConfig
from dtf.testing import simworker
from dtf.testing.factories import StateDriver, task_spec
from dtf.testing.simrecovery import RecoveryTally, check_recovery
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


def assert_settled(report: SimulationReport, tasks: int, completed_share: float = 0.5) -> None:
    """Every task ended, and more than ``completed_share`` completed: a floor against a
    run where nothing works, not a target (runs plant software bugs, poison tasks and
    dependency chains that fail by design)."""
    assert sum(report.statuses.values()) == tasks
    assert set(report.statuses) <= {"completed", "failed", "cancelled"}
    assert report.statuses.get("completed", 0) > tasks * completed_share


@pytest.mark.parametrize("seed", [1, 4])
def test_fleet_of_twenty_runs_three_hundred_tasks_through_faults(seed: int) -> None:
    report = run_simulation(SimulationConfig(seed=seed))
    assert_settled(report, 300)
    assert report.crashes and report.agent_restarts and report.partitions
    assert report.lost_attempts > 0
    assert report.duplicated_messages > 0


def test_heavy_chaos_with_frequent_coordinator_restarts() -> None:
    report = run_simulation(chaos(11))
    # frequent machine deaths get innocent tasks quarantined as poison too
    assert_settled(report, 200, completed_share=0.4)
    assert report.coordinator_restarts >= 3
    assert report.self_fenced > 0
    assert report.superseded_outcomes > 0


@settings(max_examples=5)
@given(seed=st.integers(0, 2**32 - 1))
def test_any_seed_settles_safely(seed: int) -> None:
    assert_settled(run_simulation(small(seed)), 80, completed_share=0.3)


def test_same_seed_same_run() -> None:
    first = run_simulation(small(5))
    second = run_simulation(small(5))
    assert first.journal == second.journal
    assert first.final_snapshot == second.final_snapshot
    assert first == second


# -- recovery ---------------------------------------------------------------------

RECOVERY_SEEDS = range(8)


@functools.cache
def small_run(seed: int) -> SimulationReport:
    return run_simulation(small(seed))


def tally(report: SimulationReport) -> RecoveryTally:
    assert report.recovery is not None
    return report.recovery


@pytest.mark.parametrize("seed", RECOVERY_SEEDS)
def test_every_failed_task_escalated_with_a_reason(seed: int) -> None:
    """The recovery checks ran (they raise); what failed, failed for a named reason."""
    report = small_run(seed)
    assert_settled(report, 80)
    escalations = tally(report).escalations
    assert sum(escalations.values()) == report.statuses.get("failed", 0)
    assert "None" not in escalations


def test_every_failure_kind_occurs_and_is_classified() -> None:
    seen = {kind for seed in RECOVERY_SEEDS for kind in tally(small_run(seed)).failure_types}
    assert seen == {t.value for t in FailureType} - {FailureType.UNKNOWN.value}


def test_oom_benchmarks_finish_at_a_smaller_batch_size() -> None:
    assert all(tally(small_run(seed)).oom_reduced > 0 for seed in RECOVERY_SEEDS)


def test_poison_tasks_are_quarantined() -> None:
    assert sum(tally(small_run(seed)).poison_quarantined for seed in RECOVERY_SEEDS) >= 4


def test_the_bad_worker_is_shut_out() -> None:
    """Once blamed often enough to open its breaker, which is most seeds; in a few
    the bad worker runs too little before the run ends."""
    shut_out = 0
    for seed in RECOVERY_SEEDS:
        report = small_run(seed)
        (bad,) = report.bad_workers
        shut_out += f"worker {bad}" in report.breakers_opened or bad in report.quarantined_workers
    assert shut_out >= len(RECOVERY_SEEDS) // 2


def test_an_outage_spends_a_run_retry_budget() -> None:
    """Runs about as large as the fleet's slots: an outage puts most of one retrying."""
    budgets = [
        tally(
            run_simulation(SimulationConfig(seed=seed, tasks=80, fault_window_s=200.0))
        ).escalations.get("budget", 0)
        for seed in (0, 3)
    ]
    assert sum(budgets) > 0


@pytest.mark.parametrize("mode", [RecoveryMode.AGGRESSIVE, RecoveryMode.MINIMAL])
def test_other_recovery_modes_hold_the_same_checks(mode: RecoveryMode) -> None:
    config = small(3)
    report = run_simulation(
        SimulationConfig(**{**config.__dict__, "recovery": RecoveryPolicy(mode=mode)})
    )
    assert_settled(report, 80, completed_share=0.3)


def test_the_poison_check_has_teeth() -> None:
    """With the poison rule off, some seed's poison task crashes two workers unnoticed.
    (Not every seed: a poison task may never run, its dependency having failed.)"""
    caught = 0
    for seed in RECOVERY_SEEDS:
        config = SimulationConfig(**{**small(seed).__dict__, "poison_after_worker_crashes": 0})
        try:
            run_simulation(config)
        except AssertionError as exc:
            caught += "was not quarantined" in str(exc)
        if caught:
            break
    assert caught > 0


def test_the_oom_check_has_teeth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(recovery._STEPS, Strategy.REDUCE_BATCH_SIZE, lambda _: "disabled")
    with pytest.raises(AssertionError, match="met only its own OOM"):
        run_simulation(small(0))


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


def test_the_recovery_check_allows_attempts_lost_with_coordinator_nodes() -> None:
    """Attempts lost with nodes are not charged: up to max_coordinator_losses of them
    come on top of max_retries + 1, re-queued without a recovery step."""
    driver = StateDriver(StateConfig(lease_timeout_s=10.0, max_coordinator_losses=2))
    driver.submit(("t", task_spec(retry_policy={"max_retries": 0})))
    for host in range(2):
        worker = c.RegisterWorker(
            driver.now, f"w{host}", "s1", Capabilities(), 1, node_id=f"n{host}"
        )
        driver.apply(worker)
        driver.apply(c.CoordinatorNodeLost(driver.now + 1.0, f"n{host}"))
        driver.tick(driver.now + 12.0)
    driver.apply(c.RegisterWorker(driver.now, "w9", "s1", Capabilities(), 1, node_id="n9"))
    driver.succeed("t")
    task = driver.state.tasks["t"]
    assert [a.lost_with_node for a in task.attempts] == ["n0", "n1", None]
    assert check_recovery(driver.state, bad_workers=(), breakers_opened=()) is not None
    task.attempts[0].lost_with_node = None  # as if it had been charged
    with pytest.raises(AssertionError, match="2 charged attempts"):
        check_recovery(driver.state, bad_workers=(), breakers_opened=())


def test_lost_cluster_nodes_strand_their_workers_and_the_runs_still_check_out() -> None:
    """Runs pass every check (retry bounds counting uncharged attempts among them)
    while nodes are lost; some attempts end lost with a node."""
    reports = [small_run(seed) for seed in RECOVERY_SEEDS]
    assert all(report.node_losses > 0 for report in reports)
    lost_with_nodes = [
        attempt.lost_with_node
        for report in reports
        for task in State.restore(report.final_snapshot).tasks.values()
        for attempt in task.attempts
        if attempt.lost_with_node is not None
    ]
    assert lost_with_nodes
