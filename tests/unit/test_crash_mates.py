"""Which tasks went down together when a worker's leases are lost."""

from __future__ import annotations

from dtf.testing.factories import StateDriver, task_spec

NO_RETRY = {"max_retries": 0, "retry_delay_seconds": 0.0, "jitter": 0.0}


def test_a_later_lost_lease_does_not_inherit_an_earlier_incident_s_tasks() -> None:
    driver = StateDriver()
    driver.register("w1", slots=2, at=0.0)
    driver.submit(("a", task_spec(retry_policy=NO_RETRY)), ("b", task_spec(retry_policy=NO_RETRY)))
    driver.tick(at=11.0)  # both leases expire together; the worker is still online
    assert driver.state.tasks["a"].crash_mates == ["b"]
    driver.submit(("c", task_spec(retry_policy=NO_RETRY)), at=12.0)
    assert driver.worker_of("c") == "w1"
    driver.tick(at=22.5)  # c's lease expires alone, long after a and b ended
    assert driver.status("c") == "failed"
    assert driver.state.tasks["c"].crash_mates == []
