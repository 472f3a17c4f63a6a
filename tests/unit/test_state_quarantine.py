"""Quarantine and health checks in the state machine: who gets new work, and when it comes back."""

from __future__ import annotations

import pytest

from dtf.core import commands as c
from dtf.core.events import AssignTask, RunHealthCheck, WorkerHealthChanged
from dtf.core.health import CheckState
from dtf.core.model import Capabilities, FailureKind, Outcome
from dtf.core.state import State, StateConfig
from dtf.errors import Conflict, NotFound
from dtf.testing.factories import StateDriver, events_of, task_spec

# Breakers set high so that only health decides here.
CONFIG = StateConfig(worker_timeout_s=1000.0, circuit_breaker_threshold=50)
ONE_SHOT = {"max_retries": 0}
GPU_FAULT = Outcome(
    failure=FailureKind.CRASHED, signal=11, stderr_tail="Xid 79: GPU has fallen off the bus"
)


def register(
    driver: StateDriver,
    worker_id: str,
    *,
    check: str | None = None,
    incarnation: str = "i1",
    session: str = "s1",
    at: float = 0.0,
) -> list[object]:
    command = c.RegisterWorker(
        driver.at(at), worker_id, session, Capabilities(), 4, [], incarnation, check
    )
    return list(driver.apply(command))


def fault_on(driver: StateDriver, worker_id: str, task_id: str, at: float) -> list[object]:
    """A one-shot task only ``worker_id`` can take fails with a hardware fault."""
    spec = task_spec(retry_policy=ONE_SHOT, requirements={"worker_ids": [worker_id]})
    driver.submit((task_id, spec), at=at)
    assert driver.worker_of(task_id) == worker_id
    return list(driver.report(task_id, GPU_FAULT, at=at + 0.5))


def report_check(
    driver: StateDriver, worker_id: str, *, passed: bool, at: float, detail: str = "ok"
) -> list[object]:
    return list(driver.apply(c.ReportHealthCheck(driver.at(at), worker_id, "s1", passed, detail)))


def quarantined_driver() -> StateDriver:
    driver = StateDriver(CONFIG)
    register(driver, "w1")
    for n in range(3):
        fault_on(driver, "w1", f"bad{n}", at=float(n + 1))
    return driver


def test_three_worker_faults_quarantine_the_worker_and_work_goes_elsewhere() -> None:
    driver = StateDriver(CONFIG)
    register(driver, "w1")
    fault_on(driver, "w1", "a", at=1.0)
    fault_on(driver, "w1", "b", at=2.0)
    assert not driver.state.workers["w1"].health.quarantined
    events = fault_on(driver, "w1", "c", at=3.0)
    [change] = events_of(events, WorkerHealthChanged)
    assert change.quarantined
    assert change.reason == "health 63 (3 faults (hardware_error x3)) is below 70"
    driver.submit(("next", task_spec()), at=4.0)
    assert driver.status("next") == "pending"
    register(driver, "w2", at=5.0)
    assert driver.worker_of("next") == "w2"


def test_a_task_s_own_failures_do_not_count_against_the_worker() -> None:
    driver = StateDriver(CONFIG)
    register(driver, "w1")
    for n in range(6):
        driver.submit((f"t{n}", task_spec(retry_policy=ONE_SHOT)), at=float(n))
        driver.fail(f"t{n}", FailureKind.EXIT_NONZERO, at=n + 0.5)
    assert driver.state.workers["w1"].health.samples == []
    assert not driver.state.workers["w1"].health.quarantined


def test_quarantine_lets_running_work_finish() -> None:
    driver = StateDriver(CONFIG)
    register(driver, "w1")
    driver.submit(("long", task_spec(requirements={"worker_ids": ["w1"]})), at=0.5)
    for n in range(3):
        fault_on(driver, "w1", f"bad{n}", at=float(n + 1))
    assert driver.state.workers["w1"].health.quarantined
    driver.succeed("long", at=5.0)
    assert driver.status("long") == "completed"


def test_without_a_health_check_the_worker_returns_once_its_score_has_recovered() -> None:
    driver = quarantined_driver()
    driver.submit(("next", task_spec()), at=4.0)
    assert driver.state.next_deadline() == pytest.approx(3.5 + 150.0)
    driver.tick(at=153.5)
    assert driver.state.workers["w1"].health.quarantined
    events = driver.tick(at=303.5)
    [change] = events_of(events, WorkerHealthChanged)
    assert not change.quarantined and change.reason.startswith("health recovered to 70")
    assert [e.task_id for e in events_of(events, AssignTask)] == ["next"]


def test_released_by_decay_the_record_is_kept_so_the_next_fault_sends_it_back() -> None:
    driver = quarantined_driver()
    driver.tick(at=153.5)
    driver.tick(at=303.5)
    events = fault_on(driver, "w1", "again", at=310.0)
    assert events_of(events, WorkerHealthChanged)[0].quarantined


def test_a_worker_joining_with_a_health_check_gets_work_only_after_it_passes() -> None:
    driver = StateDriver(CONFIG)
    driver.submit(("t", task_spec()), at=0.0)
    events = register(driver, "w1", check="nvidia-smi", at=1.0)
    assert events_of(events, RunHealthCheck) == [RunHealthCheck("w1", "joined with a health check")]
    assert events_of(events, AssignTask) == []
    events = report_check(driver, "w1", passed=True, at=2.0)
    assert [e.task_id for e in events_of(events, AssignTask)] == ["t"]
    assert driver.state.workers["w1"].health.check is CheckState.PASSED


def test_a_failed_health_check_keeps_the_worker_out_and_is_retried() -> None:
    driver = StateDriver(CONFIG)
    driver.submit(("t", task_spec()), at=0.0)
    register(driver, "w1", check="nvidia-smi", at=1.0)
    events = report_check(driver, "w1", passed=False, at=2.0, detail="exit 9: no devices")
    assert (
        events_of(events, WorkerHealthChanged)[0].reason
        == "health check failed: exit 9: no devices"
    )
    health = driver.state.workers["w1"].health
    assert (health.check, health.check_detail) == (CheckState.FAILED, "exit 9: no devices")
    assert not driver.state.takes_work(driver.state.workers["w1"])
    events = driver.tick(at=152.0)
    assert events_of(events, RunHealthCheck) == [RunHealthCheck("w1", "retry")]
    events = report_check(driver, "w1", passed=True, at=153.0)
    assert [e.task_id for e in events_of(events, AssignTask)] == ["t"]


def test_a_quarantined_worker_with_a_health_check_leaves_when_it_passes_with_a_clean_record() -> (
    None
):
    driver = StateDriver(CONFIG)
    register(driver, "w1", check="smoke")
    report_check(driver, "w1", passed=True, at=0.5)
    for n in range(3):
        fault_on(driver, "w1", f"bad{n}", at=float(n + 1))
    events = driver.tick(at=153.5)
    assert events_of(events, RunHealthCheck) == [RunHealthCheck("w1", "quarantine review")]
    events = report_check(driver, "w1", passed=True, at=154.0)
    assert not events_of(events, WorkerHealthChanged)[0].quarantined
    assert driver.state.workers["w1"].health.samples == []


def test_a_restarted_agent_runs_its_health_check_again_a_reconnect_does_not() -> None:
    driver = StateDriver(CONFIG)
    register(driver, "w1", check="smoke")
    report_check(driver, "w1", passed=True, at=0.5)
    assert (
        events_of(register(driver, "w1", check="smoke", session="s2", at=1.0), RunHealthCheck) == []
    )
    events = register(driver, "w1", check="smoke", incarnation="i2", at=2.0)
    assert len(events_of(events, RunHealthCheck)) == 1


def test_an_admin_disables_and_enables_a_worker() -> None:
    driver = StateDriver(CONFIG)
    register(driver, "w1")
    driver.apply(c.SetWorkerEnabled(1.0, "w1", False, "replacing its fan"))
    health = driver.state.workers["w1"].health
    assert health.quarantine_reason == "disabled by an admin: replacing its fan"
    driver.submit(("t", task_spec()), at=2.0)
    driver.tick(at=900.0)
    assert driver.status("t") == "pending"
    events = driver.apply(c.SetWorkerEnabled(901.0, "w1", True))
    assert [e.task_id for e in events_of(events, AssignTask)] == ["t"]


def test_an_admin_can_end_a_health_quarantine() -> None:
    driver = quarantined_driver()
    driver.apply(c.SetWorkerEnabled(5.0, "w1", True, "fixed the driver"))
    health = driver.state.workers["w1"].health
    assert not health.quarantined and health.samples == []


def test_connection_drops_and_silences_count_once_per_incident() -> None:
    driver = StateDriver(StateConfig(worker_timeout_s=30.0, circuit_breaker_threshold=50))
    register(driver, "w1")
    driver.submit(*[(f"t{n}", task_spec()) for n in range(4)], at=0.5)
    driver.disconnect("w1", at=1.0)
    driver.tick(at=31.0)
    whats = [s.what for s in driver.state.workers["w1"].health.samples]
    assert whats == ["connection dropped", "heartbeats stopped"]


def test_health_reports_are_checked_and_stale_ones_change_nothing() -> None:
    driver = StateDriver(CONFIG)
    register(driver, "w1", check="smoke")
    with pytest.raises(Conflict):
        driver.state.check(c.ReportHealthCheck(1.0, "w1", "old-session", True))
    report_check(driver, "w1", passed=True, at=1.0)
    assert report_check(driver, "w1", passed=False, at=2.0) == []
    with pytest.raises(NotFound):
        driver.state.check(c.SetWorkerEnabled(3.0, "nobody", True))


def test_health_survives_a_snapshot() -> None:
    driver = quarantined_driver()
    restored = State.restore(driver.state.snapshot())
    assert restored.workers["w1"].health == driver.state.workers["w1"].health
    assert restored.next_deadline() == driver.state.next_deadline()


def test_an_idle_worker_stopped_and_restarted_loses_no_health() -> None:
    driver = StateDriver(StateConfig(worker_timeout_s=30.0, circuit_breaker_threshold=50))
    for restart in range(3):
        at = restart * 100.0
        register(driver, "w1", incarnation=f"i{restart}", at=at)
        driver.disconnect("w1", at=at + 1.0)
        driver.tick(at=at + 40.0)
    health = driver.state.workers["w1"].health
    assert health.samples == [] and not health.quarantined


def test_an_admin_enable_waives_a_pending_health_check() -> None:
    driver = StateDriver(CONFIG)
    register(driver, "w1", check="hangs forever")
    driver.submit(("t", task_spec()), at=1.0)
    events = driver.apply(c.SetWorkerEnabled(2.0, "w1", True, "check is broken"))
    assert [e.task_id for e in events_of(events, AssignTask)] == ["t"]
    assert driver.state.workers["w1"].health.check_detail == "waived by an admin"


def test_an_offline_quarantined_worker_is_reviewed_when_it_returns_not_before() -> None:
    driver = StateDriver(StateConfig(worker_timeout_s=30.0, circuit_breaker_threshold=50))
    register(driver, "w1")
    for n in range(3):
        fault_on(driver, "w1", f"bad{n}", at=float(n + 1))
        driver.heartbeat("w1", at=n + 1.5)
    driver.tick(at=40.0)
    assert driver.state.workers["w1"].status.value == "offline"
    driver.tick(at=153.5)
    assert driver.state.workers["w1"].health.recheck_at is None
    assert driver.state.next_deadline() is None
    register(driver, "w1", session="s2", at=1000.0)
    events = driver.tick(at=1000.0)
    assert not events_of(events, WorkerHealthChanged)[0].quarantined
