"""Accepting tasks: duplicates, conflicts, idempotency keys, dependency checks, satisfiability."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dtf.core import commands as c
from dtf.core.events import TaskAccepted
from dtf.core.model import Capabilities, TaskSpec
from dtf.core.records import TaskStatus
from dtf.errors import Conflict, DtfError, InvalidRequest, Unsatisfiable
from dtf.testing.factories import StateDriver, events_of, task_spec

MakeSpec = Callable[..., TaskSpec]


def test_new_task_without_dependencies_is_pending(driver: StateDriver, make_spec: MakeSpec) -> None:
    events = driver.submit(("a", make_spec()))
    assert events_of(events, TaskAccepted) == [TaskAccepted("a", TaskStatus.PENDING)]


def test_resubmitting_the_same_spec_is_a_duplicate(
    driver: StateDriver, make_spec: MakeSpec
) -> None:
    driver.submit(("a", make_spec(priority=1)))
    events = driver.submit(("a", make_spec(priority=1)))
    assert events == [TaskAccepted("a", TaskStatus.PENDING, duplicate=True)]
    assert len(driver.state.tasks) == 1


def test_same_id_with_a_different_spec_is_a_conflict(
    driver: StateDriver, make_spec: MakeSpec
) -> None:
    driver.submit(("a", make_spec(priority=1)))
    before = driver.state.snapshot()
    with pytest.raises(Conflict, match="'a' already exists with a different spec") as caught:
        driver.submit(("a", make_spec(priority=2)))
    assert caught.value.field == "id"
    assert driver.state.snapshot() == before


def test_idempotency_key_returns_the_first_task(driver: StateDriver, make_spec: MakeSpec) -> None:
    driver.submit(("a", make_spec(idempotency_key="k1")))
    events = driver.submit(("b", make_spec(idempotency_key="k1")))
    assert events == [TaskAccepted("a", TaskStatus.PENDING, duplicate=True)]
    assert list(driver.state.tasks) == ["a"]


def test_idempotency_key_twice_in_one_batch_creates_one_task(
    driver: StateDriver, make_spec: MakeSpec
) -> None:
    events = driver.submit(
        ("a", make_spec(idempotency_key="k")), ("b", make_spec(idempotency_key="k"))
    )
    assert events_of(events, TaskAccepted) == [
        TaskAccepted("a", TaskStatus.PENDING),
        TaskAccepted("a", TaskStatus.PENDING, duplicate=True),
    ]


def test_duplicate_reports_the_current_status(driver: StateDriver, make_spec: MakeSpec) -> None:
    driver.register("w1")
    driver.submit(("a", make_spec()))
    driver.succeed("a", at=1.0)
    assert driver.submit(("a", make_spec())) == [TaskAccepted("a", TaskStatus.COMPLETED, True)]


REFUSED_BATCHES = [
    # the same new id twice in one batch
    (
        [("a", task_spec()), ("a", task_spec())],
        Conflict,
        "appears twice in this batch",
        "tasks[1].id",
    ),
    # a dependency nobody submitted
    (
        [("a", task_spec(dependencies=["ghost"]))],
        InvalidRequest,
        "depends on unknown task 'ghost'",
        "dependencies",
    ),
    # a task depending on itself
    (
        [("a", task_spec(dependencies=["a"]))],
        InvalidRequest,
        "'a' depends on itself",
        "dependencies",
    ),
    # a two-task cycle within the batch
    (
        [("a", task_spec(dependencies=["b"])), ("b", task_spec(dependencies=["a"]))],
        InvalidRequest,
        "dependency cycle",
        "dependencies",
    ),
    # a three-task cycle
    (
        [
            ("a", task_spec(dependencies=["c"])),
            ("b", task_spec(dependencies=["a"])),
            ("c", task_spec(dependencies=["b"])),
        ],
        InvalidRequest,
        "dependency cycle",
        "dependencies",
    ),
    # a config that does not fit the task type, named by position
    (
        [("ok", task_spec()), ("a", task_spec(config={"cmd": "x"}))],
        InvalidRequest,
        "unknown field `cmd` - at `$.tasks[1].config`",
        "tasks[1].config",
    ),
]


@pytest.mark.parametrize(("tasks", "error", "message", "field"), REFUSED_BATCHES)
def test_refused_batch_changes_nothing(
    driver: StateDriver,
    tasks: list[tuple[str, TaskSpec]],
    error: type[DtfError],
    message: str,
    field: str,
) -> None:
    driver.submit(("existing", task_spec()))
    before = driver.state.snapshot()
    with pytest.raises(error) as caught:
        driver.submit(*tasks)
    assert message in caught.value.message
    assert caught.value.field == field
    assert driver.state.snapshot() == before


def test_cycle_message_names_the_cycle(driver: StateDriver, make_spec: MakeSpec) -> None:
    with pytest.raises(InvalidRequest) as caught:
        driver.submit(("a", make_spec(dependencies=["b"])), ("b", make_spec(dependencies=["a"])))
    assert " -> " in caught.value.message
    assert "a" in caught.value.message and "b" in caught.value.message


def test_dependency_on_an_earlier_batch_blocks(driver: StateDriver, make_spec: MakeSpec) -> None:
    driver.submit(("a", make_spec()))
    events = driver.submit(("b", make_spec(dependencies=["a"])))
    assert events_of(events, TaskAccepted) == [TaskAccepted("b", TaskStatus.BLOCKED)]
    assert driver.state.tasks["b"].status_reason == "waiting for 1 dependencies"


def test_dependency_on_a_completed_task_is_met_at_once(
    driver: StateDriver, make_spec: MakeSpec
) -> None:
    driver.register("w1")
    driver.submit(("a", make_spec()))
    driver.succeed("a", at=1.0)
    driver.submit(("b", make_spec(dependencies=["a"])))
    assert driver.status("b") == "assigned"


def test_dependency_on_a_failed_task_fails_at_once(
    driver: StateDriver, make_spec: MakeSpec
) -> None:
    driver.submit(("a", make_spec()))
    driver.cancel("a")
    events = driver.submit(("b", make_spec(dependencies=["a"])))
    assert events_of(events, TaskAccepted) == [TaskAccepted("b", TaskStatus.FAILED)]
    assert driver.state.tasks["b"].status_reason == "dependency a cancelled"


def test_batch_order_does_not_matter_for_dependencies(
    driver: StateDriver, make_spec: MakeSpec
) -> None:
    driver.submit(("b", make_spec(dependencies=["a"])), ("a", make_spec()))
    assert driver.status("a") == "pending"
    assert driver.status("b") == "blocked"


def test_reject_unsatisfiable_refuses_with_the_explanation(
    driver: StateDriver, make_spec: MakeSpec, make_caps: Callable[..., Capabilities]
) -> None:
    driver.register("w1", make_caps(memory_gb=8))
    driver.register("w2", make_caps(memory_gb=64))
    spec = make_spec(requirements={"hardware": ["cuda"], "min_memory_gb": 32})
    with pytest.raises(Unsatisfiable) as caught:
        driver.submit(("a", spec), reject_unsatisfiable=True)
    assert caught.value.message == (
        "no live worker can run task 'a': cuda: 0 of 2 workers; memory_gb >= 32: 1 of 2"
    )
    assert caught.value.field == "requirements"
    assert "a" not in driver.state.tasks


def test_reject_unsatisfiable_accepts_when_a_fallback_fits(
    driver: StateDriver, make_spec: MakeSpec
) -> None:
    driver.register("w1")
    spec = make_spec(requirements={"hardware": ["cuda"], "fallbacks": [{"hardware": ["cpu"]}]})
    driver.submit(("a", spec), reject_unsatisfiable=True)
    assert driver.status("a") == "pending"


def test_reject_unsatisfiable_ignores_offline_workers(
    driver: StateDriver, make_spec: MakeSpec
) -> None:
    driver.register("w1")
    driver.tick(100.0)
    with pytest.raises(Unsatisfiable, match="no workers are online"):
        driver.submit(("a", make_spec()), reject_unsatisfiable=True)


def test_unsatisfiable_without_the_flag_waits(driver: StateDriver, make_spec: MakeSpec) -> None:
    driver.register("w1")
    driver.submit(("a", make_spec(requirements={"hardware": ["tpu"]})))
    assert driver.status("a") == "pending"


def test_commands_for_unknown_things_are_refused(driver: StateDriver) -> None:
    with pytest.raises(DtfError, match="'ghost' does not exist"):
        driver.apply(c.CancelTask(0.0, "ghost"))
    with pytest.raises(DtfError, match="'w9' is not registered"):
        driver.apply(c.Heartbeat(0.0, "w9", "s1"))
    with pytest.raises(InvalidRequest, match="slots must be at least 1, got 0"):
        driver.register("w1", slots=0)


def test_dependency_on_a_duplicate_in_the_same_batch(
    driver: StateDriver, make_spec: MakeSpec
) -> None:
    """Refusing the batch or accepting it whole are both fine; crashing is not."""
    before = driver.state.snapshot()
    try:
        driver.submit(
            ("t0", make_spec(idempotency_key="k")),
            ("t1", make_spec(idempotency_key="k")),
            ("t2", make_spec(dependencies=["t1"])),
        )
    except DtfError:
        assert driver.state.snapshot() == before
