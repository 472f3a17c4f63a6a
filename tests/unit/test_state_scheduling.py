"""Scheduling: which task a free slot gets, dependencies, retries elsewhere, cancellation."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dtf.core.events import AssignTask, CancelAttempt, Event, RetryScheduled, TaskStatusChanged
from dtf.core.model import Capabilities, FailureKind, TaskSpec
from dtf.core.records import AttemptStatus, TaskStatus
from dtf.errors import InvalidTransition
from dtf.testing.factories import StateDriver, events_of

MakeSpec = Callable[..., TaskSpec]
MakeCaps = Callable[..., Capabilities]
NO_DELAY = {"retry_delay_seconds": 0.0, "jitter": 0.0}


def assigned(events: list[Event]) -> list[tuple[str, str]]:
    return [(e.task_id, e.worker_id) for e in events_of(events, AssignTask)]


def test_priority_first_then_submission_order(driver: StateDriver, make_spec: MakeSpec) -> None:
    driver.submit(("low", make_spec(priority=9)), ("old", make_spec(priority=1)))
    driver.submit(("new", make_spec(priority=1)), ("urgent", make_spec(priority=-5)), at=1.0)
    order = []
    driver.register("w1", at=2.0)
    for at in (3.0, 4.0, 5.0, 6.0):
        task_id = driver.state.workers["w1"].leases[0]
        order.append(task_id)
        driver.succeed(task_id, at=at)
    assert order == ["urgent", "old", "new", "low"]


def test_slots_are_respected(driver: StateDriver, make_spec: MakeSpec) -> None:
    driver.submit(*[(f"t{n}", make_spec()) for n in range(5)])
    events = driver.register("w1", slots=2)
    events += driver.register("w2", slots=1, at=1.0)
    assert assigned(events) == [("t0", "w1"), ("t1", "w1"), ("t2", "w2")]
    assert driver.state.status_counts()["tasks"] == {"assigned": 3, "pending": 2}


def test_a_freed_slot_takes_the_next_task(driver: StateDriver, make_spec: MakeSpec) -> None:
    driver.submit(("a", make_spec()), ("b", make_spec()))
    driver.register("w1")
    events = driver.succeed("a", at=1.0)
    assert assigned(events) == [("b", "w1")]


def test_requirements_route_tasks(
    driver: StateDriver, make_spec: MakeSpec, make_caps: MakeCaps
) -> None:
    driver.register("cpu", slots=4)
    driver.register("gpu", make_caps(hardware=["cpu", "cuda"]), slots=4)
    events = driver.submit(
        ("needs-gpu", make_spec(requirements={"hardware": ["cuda"]})),
        ("anywhere", make_spec()),
        ("pinned", make_spec(requirements={"worker_ids": ["gpu"]})),
    )
    assert sorted(assigned(events)) == [
        ("anywhere", "cpu"),
        ("needs-gpu", "gpu"),
        ("pinned", "gpu"),
    ]


def test_dependencies_run_before_dependants(driver: StateDriver, make_spec: MakeSpec) -> None:
    driver.register("w1", slots=4)
    events = driver.submit(
        ("build", make_spec(priority=9)),
        ("test", make_spec(priority=0, dependencies=["build"])),
        ("report", make_spec(priority=0, dependencies=["build", "test"])),
    )
    assert assigned(events) == [("build", "w1")]
    assert assigned(driver.succeed("build", at=1.0)) == [("test", "w1")]
    assert driver.status("report") == "blocked"
    assert assigned(driver.succeed("test", at=2.0)) == [("report", "w1")]


def test_failed_dependency_fails_dependants_with_the_reason(
    driver: StateDriver, make_spec: MakeSpec
) -> None:
    driver.register("w1")
    driver.submit(
        ("build", make_spec()),
        ("test", make_spec(dependencies=["build"])),
        ("report", make_spec(dependencies=["test"])),
    )
    driver.fail("build", FailureKind.EXIT_NONZERO, at=1.0)
    tasks = driver.state.tasks
    assert tasks["build"].status_reason == (
        "exited with code 1; exit_nonzero (software_error) is not retried by this task's "
        "retry policy; set retry_policy.retry_on_nonzero_exit to retry it"
    )
    assert tasks["test"].status is TaskStatus.FAILED
    assert tasks["test"].status_reason == f"dependency build failed: {tasks['build'].status_reason}"
    assert tasks["report"].status is TaskStatus.FAILED
    assert tasks["report"].status_reason.startswith(
        "dependency test failed: dependency build failed"
    )
    assert not tasks["test"].attempts


def test_cancelled_dependency_fails_dependants(driver: StateDriver, make_spec: MakeSpec) -> None:
    driver.submit(("a", make_spec()), ("b", make_spec(dependencies=["a"])))
    driver.cancel("a", at=1.0)
    assert driver.state.tasks["b"].status_reason == "dependency a was cancelled: cancelled by user"


def test_diamond_dependency_fails_once(driver: StateDriver, make_spec: MakeSpec) -> None:
    driver.submit(
        ("root", make_spec()),
        ("left", make_spec(dependencies=["root"])),
        ("right", make_spec(dependencies=["root"])),
        ("join", make_spec(dependencies=["left", "right"])),
    )
    events = driver.cancel("root", at=1.0)
    failed = [e.task_id for e in events_of(events, TaskStatusChanged) if e.new is TaskStatus.FAILED]
    assert sorted(failed) == ["join", "left", "right"]


def test_a_dependency_listed_twice_fails_its_dependant_once(
    driver: StateDriver, make_spec: MakeSpec
) -> None:
    driver.submit(("a", make_spec()), ("b", make_spec(dependencies=["a", "a"])))
    driver.cancel("a", at=1.0)
    assert driver.status("b") == "failed"


def test_a_dependency_listed_twice_is_met_once(driver: StateDriver, make_spec: MakeSpec) -> None:
    driver.register("w1")
    driver.submit(("a", make_spec()), ("b", make_spec(dependencies=["a", "a"])))
    assert assigned(driver.succeed("a", at=1.0)) == [("b", "w1")]


def test_retry_avoids_the_failed_worker_when_another_can_run_it(
    driver: StateDriver, make_spec: MakeSpec
) -> None:
    driver.register("w1")
    driver.register("w2")
    driver.submit(("blocker", make_spec(priority=0)), ("t", make_spec(retry_policy=NO_DELAY)))
    assert driver.worker_of("t") == "w2"
    events = driver.fail("t", at=1.0)
    assert events_of(events, RetryScheduled)[0].avoid_worker == "w2"
    assert driver.status("t") == "pending"
    events = driver.succeed("blocker", at=2.0)
    assert assigned(events) == [("t", "w1")]


def test_retry_returns_to_the_failed_worker_when_it_is_the_only_one(
    driver: StateDriver, make_spec: MakeSpec
) -> None:
    driver.register("w1")
    driver.submit(("t", make_spec(retry_policy=NO_DELAY)))
    events = driver.fail("t", at=1.0)
    assert assigned(events) == [("t", "w1")]


def test_retry_waits_for_its_delay(driver: StateDriver, make_spec: MakeSpec) -> None:
    driver.register("w1")
    driver.submit(("t", make_spec(retry_policy={"retry_delay_seconds": 5.0, "jitter": 0.0})))
    driver.fail("t", at=1.0)
    assert driver.state.next_deadline() == 6.0
    assert assigned(driver.tick(5.9)) == []
    assert assigned(driver.tick(6.0)) == [("t", "w1")]


def test_retries_exhausted_fail_the_task_with_every_attempt_kept(
    driver: StateDriver, make_spec: MakeSpec
) -> None:
    driver.register("w1")
    driver.submit(("t", make_spec(retry_policy={"max_retries": 2, **NO_DELAY})))
    for at in (1.0, 2.0, 3.0):
        driver.fail("t", FailureKind.OOM, at=at)
    task = driver.state.tasks["t"]
    assert task.status is TaskStatus.FAILED
    assert task.status_reason == "oom; oom on attempt 3; retries exhausted (max_retries=2)"
    assert [a.status for a in task.attempts] == [AttemptStatus.FAILED] * 3
    assert driver.state.workers["w1"].tasks_failed == 3


def test_suspect_and_offline_workers_get_no_work(driver: StateDriver, make_spec: MakeSpec) -> None:
    driver.register("w1")
    driver.register("w2")
    driver.disconnect("w1", at=1.0)
    driver.heartbeat("w2", at=25.0)
    driver.tick(31.0)
    assert driver.state.workers["w1"].status.value == "offline"
    events = driver.submit(("t", make_spec()), at=32.0)
    assert assigned(events) == [("t", "w2")]


def test_cancel_pending_task(driver: StateDriver, make_spec: MakeSpec) -> None:
    driver.submit(("t", make_spec()))
    events = driver.cancel("t", at=1.0)
    assert events_of(events, CancelAttempt) == []
    assert driver.status("t") == "cancelled"
    assert "t" not in driver.state.ready


@pytest.mark.parametrize("started", [False, True], ids=["assigned", "running"])
def test_cancel_active_task_tells_the_worker(
    driver: StateDriver, make_spec: MakeSpec, started: bool
) -> None:
    driver.register("w1")
    driver.submit(("t", make_spec()), ("next", make_spec()))
    if started:
        driver.start("t", at=0.5)
    lease = driver.lease("t")
    events = driver.cancel("t", at=1.0)
    assert events_of(events, CancelAttempt) == [
        CancelAttempt("w1", "t", lease.attempt, lease.fence)
    ]
    assert driver.state.tasks["t"].attempts[-1].status is AttemptStatus.CANCELLED
    assert assigned(events) == [("next", "w1")]


def test_cancel_waiting_retry(driver: StateDriver, make_spec: MakeSpec) -> None:
    driver.register("w1")
    driver.submit(("t", make_spec(retry_policy={"retry_delay_seconds": 5.0})))
    driver.fail("t", at=1.0)
    driver.cancel("t", at=2.0)
    assert assigned(driver.tick(20.0)) == []
    assert driver.status("t") == "cancelled"


def test_cancel_terminal_task_is_refused(driver: StateDriver, make_spec: MakeSpec) -> None:
    driver.submit(("t", make_spec()))
    driver.cancel("t")
    with pytest.raises(InvalidTransition, match="'t' is already cancelled; nothing to cancel"):
        driver.cancel("t")


def test_dependant_listed_before_its_dependency_fails_once(
    driver: StateDriver, make_spec: MakeSpec
) -> None:
    driver.submit(("x", make_spec()))
    driver.submit(("d", make_spec(dependencies=["x", "y"])), ("y", make_spec(dependencies=["x"])))
    driver.cancel("x", at=1.0)
    assert (driver.status("d"), driver.status("y")) == ("failed", "failed")
