"""Why a pending task waits, as the task view says: the matching workers' full
slots, open circuit breakers and workers that take no work are told apart."""

from __future__ import annotations

from dtf.coordinator.views import task_view
from dtf.core import commands as c
from dtf.core.model import HardwareClass
from dtf.testing.factories import StateDriver, task_spec


def waiting(driver: StateDriver, task_id: str) -> str:
    view = task_view(driver.state, driver.state.tasks[task_id], now=driver.now)
    summary: str = view["waiting"]["summary"]
    return summary


def lose_three_tasks_on(driver: StateDriver, worker_id: str) -> None:
    """``worker_id`` (3 slots) registers again without its three attempts, a
    new process: three worker crashes in a row, and its breaker opens."""
    pinned = task_spec(requirements={"worker_ids": [worker_id]})
    driver.submit(*[(f"{worker_id}-lost-{n}", pinned) for n in range(3)])
    driver.register(worker_id, slots=3, session="again", incarnation="restarted")
    assert driver.state.breakers.workers[worker_id].state.value == "open"


def test_a_task_behind_busy_workers_says_the_slots_are_busy() -> None:
    driver = StateDriver()
    driver.register("w1")
    driver.submit(("busy", task_spec()), ("next", task_spec()))
    assert waiting(driver, "next") == "no requirements; 1 workers can run it, all slots busy"


def test_a_task_behind_open_breakers_names_them() -> None:
    driver = StateDriver()
    driver.register("w1", slots=3)
    driver.register("w2", slots=3)
    lose_three_tasks_on(driver, "w1")
    lose_three_tasks_on(driver, "w2")
    driver.submit(("next", task_spec()))
    assert waiting(driver, "next") == (
        "no requirements; 2 workers can run it, circuit breaker open: w1, w2"
    )


def test_a_task_behind_one_open_breaker_and_busy_slots_says_both() -> None:
    driver = StateDriver()
    driver.register("w1", slots=3)
    driver.register("w2")
    lose_three_tasks_on(driver, "w1")
    driver.submit(("busy", task_spec(requirements={"worker_ids": ["w2"]})), ("next", task_spec()))
    assert waiting(driver, "next") == (
        "no requirements; 2 workers can run it, circuit breaker open: w1; the others' slots busy"
    )


def test_a_task_behind_a_disabled_worker_says_it_takes_no_work() -> None:
    driver = StateDriver()
    driver.register("w1")
    driver.apply(c.SetWorkerEnabled(driver.now, "w1", False, "maintenance"))
    driver.submit(("next", task_spec(requirements={"hardware": ["cpu"]})))
    assert waiting(driver, "next") == "cpu: 1 of 1 workers; 1 matching worker, not taking work: w1"


def test_a_task_behind_its_hardware_class_breaker_names_the_workers() -> None:
    driver = StateDriver()
    driver.register("w1")
    breaker = driver.state.breakers.for_hardware(HardwareClass.CPU)
    for source in ("a", "b", "c"):
        breaker.on_failure(driver.now, source)
    driver.submit(("next", task_spec()))
    assert driver.state.tasks["next"].lease is None
    assert waiting(driver, "next") == (
        "no requirements; 1 workers can run it, circuit breaker open: w1"
    )
