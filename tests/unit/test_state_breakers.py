"""Circuit breakers in the state machine: failures that are the worker's open
its breaker, an open breaker gets no work, the reset time lets one probe through."""

from __future__ import annotations

from dtf.core.breakers import BreakerState
from dtf.core.events import AssignTask, BreakerChanged
from dtf.core.model import FailureKind, Outcome
from dtf.core.state import StateConfig
from dtf.testing.factories import StateDriver, events_of, task_spec

CONFIG = StateConfig(
    worker_timeout_s=1000.0, circuit_breaker_threshold=2, circuit_breaker_reset_s=60.0
)
ONE_SHOT = {"max_retries": 0}


def crash_on_w1(driver: StateDriver, task_id: str, at: float) -> list[object]:
    """Submit a task only w1 can take, and have w1 crash with a hardware fault."""
    driver.submit((task_id, task_spec(retry_policy=ONE_SHOT)), at=at)
    assert driver.worker_of(task_id) == "w1"
    outcome = Outcome(
        failure=FailureKind.CRASHED, signal=11, stderr_tail="Xid 79: GPU has fallen off the bus"
    )
    return list(driver.report(task_id, outcome, at=at + 0.5))


def test_worker_faults_open_its_breaker_and_a_probe_closes_it() -> None:
    driver = StateDriver(CONFIG)
    driver.register("w1", slots=4)
    crash_on_w1(driver, "a", at=1.0)
    events = crash_on_w1(driver, "b", at=2.0)
    [opened] = events_of(events, BreakerChanged)
    assert (opened.breaker, opened.new) == ("worker w1", BreakerState.OPEN)
    driver.submit(("c", task_spec()), ("d", task_spec()), at=3.0)
    assert driver.status("c") == driver.status("d") == "pending"
    assert driver.state.breaker_probes() == [2.5 + 60.0]
    events = driver.tick(at=63.0)
    assert [e.task_id for e in events_of(events, AssignTask)] == ["c"]
    assert driver.state.breakers.workers["w1"].state is BreakerState.HALF_OPEN
    events = driver.succeed("c", at=64.0)
    assert driver.state.breakers.workers["w1"].state is BreakerState.CLOSED
    assert [e.task_id for e in events_of(events, AssignTask)] == ["d"]


def test_an_open_breaker_sends_work_to_healthy_workers() -> None:
    driver = StateDriver(CONFIG)
    driver.register("w1")
    crash_on_w1(driver, "a", at=1.0)
    crash_on_w1(driver, "b", at=2.0)
    driver.register("w2", at=3.0)
    driver.submit(("c", task_spec()), at=4.0)
    assert driver.worker_of("c") == "w2"


def test_a_task_s_own_errors_blame_no_one() -> None:
    driver = StateDriver(CONFIG)
    driver.register("w1")
    for n, at in enumerate((1.0, 2.0, 3.0)):
        driver.submit((f"t{n}", task_spec(retry_policy=ONE_SHOT)), at=at)
        driver.fail(f"t{n}", FailureKind.EXIT_NONZERO, at=at + 0.5)
    assert "w1" not in driver.state.breakers.workers
    driver.submit(("next", task_spec()), at=5.0)
    assert driver.worker_of("next") == "w1"


def test_hardware_faults_on_distinct_workers_open_the_class_breaker() -> None:
    driver = StateDriver(CONFIG)
    driver.register("w1")
    crash_on_w1(driver, "a", at=1.0)
    driver.disconnect("w1", at=1.8)
    driver.register("w2", at=2.0)
    driver.submit(("b", task_spec(retry_policy=ONE_SHOT)), at=2.0)
    assert driver.worker_of("b") == "w2"
    fault = Outcome(failure=FailureKind.CRASHED, signal=7, stderr_tail="uncorrectable ECC error")
    events = driver.report("b", fault, at=2.5)
    assert ("hardware cpu", BreakerState.OPEN) in [
        (e.breaker, e.new) for e in events_of(events, BreakerChanged)
    ]
    driver.register("w3", at=3.0)
    driver.submit(("c", task_spec()), at=3.0)
    assert driver.status("c") == "pending"
