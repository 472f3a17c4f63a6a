"""Recovery through the state machine: each failure classified with its
evidence, the ladder's step recorded, and the next attempt changed visibly."""

from __future__ import annotations

from dtf.core.events import AssignTask
from dtf.core.failures import FailureType
from dtf.core.model import FailureKind, Outcome
from dtf.core.recovery_policy import Strategy
from dtf.core.state import StateConfig
from dtf.testing.factories import StateDriver, capabilities, events_of, task_spec

OOM_STDERR = "Traceback (most recent call last):\n  ...\nMemoryError: out of memory at batch 32\n"
NO_DELAY = {"retry_delay_seconds": 0.0, "jitter": 0.0}


def oom(batch_size: int) -> Outcome:
    return Outcome(
        failure=FailureKind.OOM,
        exit_code=1,
        stderr_tail=OOM_STDERR.replace("32", str(batch_size)),
    )


def benchmark(batch_size: int, **fields: object) -> object:
    config = {"entry_point": "examples.oom_bench:run", "params": {"batch_size": batch_size}}
    return task_spec(type="benchmark", config=config, retry_policy=NO_DELAY, **fields)


def test_out_of_memory_halves_the_batch_until_it_fits() -> None:
    driver = StateDriver()
    driver.register("w1")
    events = driver.submit(("bench", benchmark(32)))
    sizes = [events_of(events, AssignTask)[0].spec.config["params"]["batch_size"]]
    for at in (1.0, 2.0):
        assigned = events_of(driver.report("bench", oom(sizes[-1]), at=at), AssignTask)
        sizes.append(assigned[0].spec.config["params"]["batch_size"])
    driver.succeed("bench", at=3.0)
    task = driver.state.tasks["bench"]
    assert sizes == [32, 16, 8]
    assert driver.status("bench") == "completed"
    assert [a.params_patch for a in task.attempts] == [{}, {"batch_size": 16}, {"batch_size": 8}]
    failed = task.attempts[:2]
    assert [a.failure_type for a in failed] == [FailureType.RESOURCE_EXHAUSTION] * 2
    assert [a.recovery for a in failed] == [Strategy.REDUCE_BATCH_SIZE] * 2
    assert "batch_size 32 -> 16" in (failed[0].recovery_reason or "")
    assert any("MemoryError" in quote for quote in failed[0].evidence)
    assert task.spec.config["params"] == {"batch_size": 32}


def test_a_lost_worker_is_classified_as_a_worker_crash_and_retried() -> None:
    driver = StateDriver()
    driver.register("w1")
    driver.register("w2")
    driver.submit(("t", task_spec(retry_policy=NO_DELAY)))
    driver.register("w1" if driver.worker_of("t") == "w1" else "w2", held=[], at=1.0)
    attempt = driver.state.tasks["t"].attempts[0]
    assert attempt.failure_type is FailureType.WORKER_CRASH
    assert attempt.recovery is not None
    assert driver.status("t") in ("pending", "assigned")


def test_a_spent_ladder_still_retries_as_the_task_policy_allows_then_fails() -> None:
    driver = StateDriver()
    driver.register("w1")
    driver.submit(("t", task_spec(retry_policy={"max_retries": 3, **NO_DELAY})))
    for at in (1.0, 2.0, 3.0, 4.0):
        driver.fail("t", FailureKind.CRASHED, at=at)
    task = driver.state.tasks["t"]
    assert len(task.attempts) == 4
    assert driver.status("t") == "failed"
    assert "retries exhausted" in (task.status_reason or "")
    assert all(a.failure_type is not None for a in task.attempts)


def lose_on_current_worker(driver: StateDriver, task_id: str, at: float) -> str:
    """The worker running the task comes back without it (its machine went down)."""
    worker_id = driver.worker_of(task_id)
    driver.register(worker_id, held=[], session=f"s-{at}", at=at)
    return worker_id


def test_a_task_that_takes_down_two_workers_is_quarantined_not_retried() -> None:
    driver = StateDriver()
    driver.register("w1")
    driver.register("w2")
    driver.submit(("poison", task_spec(retry_policy=NO_DELAY)))
    first = lose_on_current_worker(driver, "poison", at=1.0)
    driver.tick(at=1.5)
    second = lose_on_current_worker(driver, "poison", at=2.0)
    task = driver.state.tasks["poison"]
    assert first != second
    assert driver.status("poison") == "failed"
    assert "quarantined as a poison task" in (task.status_reason or "")
    assert second not in driver.state.breakers.workers


def test_poison_detection_can_be_turned_off() -> None:
    driver = StateDriver(StateConfig(poison_after_worker_crashes=0))
    driver.register("w1")
    driver.register("w2")
    driver.submit(("t", task_spec(retry_policy=NO_DELAY)))
    lose_on_current_worker(driver, "t", at=1.0)
    driver.tick(at=1.5)
    lose_on_current_worker(driver, "t", at=2.0)
    assert driver.status("t") in ("pending", "assigned")


def test_retries_stop_when_most_of_a_run_is_already_retrying() -> None:
    driver = StateDriver(StateConfig(retry_budget_share=0.5, retry_budget_min_tasks=4))
    driver.register("w1", slots=4)
    slow_retry = {"retry_delay_seconds": 60.0, "jitter": 0.0}
    tasks = [
        (f"t{n}", task_spec(retry_policy=slow_retry, labels={"run_id": "r1"})) for n in range(4)
    ]
    driver.submit(*tasks, at=0.0)
    for n in range(4):
        driver.fail(f"t{n}", FailureKind.CRASHED, at=1.0 + n)
    statuses = [driver.status(f"t{n}") for n in range(4)]
    assert statuses == ["pending", "pending", "failed", "failed"]
    reason = driver.state.tasks["t2"].status_reason or ""
    assert "retry budget of run 'r1' spent: 2 of its 4 tasks are already retrying" in reason


def test_the_budget_is_per_run() -> None:
    driver = StateDriver(StateConfig(retry_budget_share=0.5, retry_budget_min_tasks=2))
    driver.register("w1", slots=2)
    slow_retry = {"retry_delay_seconds": 60.0, "jitter": 0.0}
    driver.submit(
        ("a", task_spec(retry_policy=slow_retry, labels={"run_id": "r1"})),
        ("b", task_spec(retry_policy=slow_retry, labels={"run_id": "r2"})),
        at=0.0,
    )
    driver.fail("a", FailureKind.CRASHED, at=1.0)
    driver.fail("b", FailureKind.CRASHED, at=2.0)
    assert driver.status("a") == driver.status("b") == "pending"


def test_a_cuda_error_that_exits_1_is_retried_without_opting_in() -> None:
    driver = StateDriver()
    for worker in ("w1", "w2"):
        driver.register(worker, capabilities(hardware=["cpu", "cuda"]))
    driver.submit(("t", task_spec(requirements={"hardware": ["cuda"]}, retry_policy=NO_DELAY)))
    stderr = (
        "Traceback (most recent call last):\n"
        "RuntimeError: CUDA error: an illegal memory access was encountered\n"
    )
    failed = Outcome(failure=FailureKind.EXIT_NONZERO, exit_code=1, stderr_tail=stderr)
    driver.report("t", failed, at=1.0)
    assert driver.state.tasks["t"].attempts[0].failure_type is FailureType.CUDA_ERROR
    assert driver.status("t") != "failed"


def test_a_plain_assertion_failure_is_still_the_task_s_own_verdict() -> None:
    driver = StateDriver()
    driver.register("w1")
    driver.submit(("t", task_spec(retry_policy=NO_DELAY)))
    stderr = "Traceback (most recent call last):\nAssertionError: expected 3, got 4\n"
    driver.report("t", Outcome(failure=FailureKind.EXIT_NONZERO, exit_code=1, stderr_tail=stderr))
    assert driver.status("t") == "failed"


def test_a_bystander_of_a_poison_task_is_kept_apart_from_it_and_not_quarantined() -> None:
    driver = StateDriver()
    for worker in ("w1", "w2", "w3"):
        driver.register(worker, slots=2)
    driver.submit(
        ("poison", task_spec(retry_policy=NO_DELAY)),
        ("bystander", task_spec(retry_policy=NO_DELAY)),
    )
    first = driver.worker_of("poison")
    assert driver.worker_of("bystander") == first
    driver.register(first, slots=2, held=[], session="s2", at=1.0)
    assert driver.state.tasks["bystander"].crash_mates == ["poison"]
    assert driver.worker_of("poison") != driver.worker_of("bystander")
    second = driver.worker_of("poison")
    driver.register(second, slots=2, held=[], session="s2", at=2.0)
    assert driver.status("poison") == "failed"
    assert "quarantined as a poison task" in (driver.state.tasks["poison"].status_reason or "")
    driver.succeed("bystander", at=3.0)
    assert driver.status("bystander") == "completed"
