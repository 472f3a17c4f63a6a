"""``check_invariants`` itself: a healthy state passes, each kind of corruption is named."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dtf.core.records import AttemptStatus, TaskStatus
from dtf.core.state import State
from dtf.testing.factories import StateDriver, capabilities, task_spec
from dtf.testing.invariants import check_invariants


def healthy() -> State:
    """w1 (2 slots) runs a and b; c waits for a; d completed; e waits in the queue."""
    driver = StateDriver()
    driver.register("w1", slots=2)
    driver.submit(("d", task_spec(priority=0)))
    driver.succeed("d", at=1.0)
    driver.submit(
        ("a", task_spec(priority=1)),
        ("b", task_spec(priority=1, requirements={"hardware": ["cpu"]})),
        ("c", task_spec(dependencies=["a"])),
        ("e", task_spec(priority=9)),
        at=2.0,
    )
    return driver.state


def drop_from_worker(state: State) -> None:
    state.workers["w1"].leases.remove("a")


def overfill_worker(state: State) -> None:
    state.workers["w1"].slots = 1


def end_attempt_keep_lease(state: State) -> None:
    state.tasks["a"].attempts[-1].status = AttemptStatus.FAILED


def complete_with_lease(state: State) -> None:
    state.tasks["a"].status = TaskStatus.COMPLETED


def start_before_dependency(state: State) -> None:
    state.tasks["c"].attempts = list(state.tasks["a"].attempts)


def miscount(state: State) -> None:
    state.task_counts[TaskStatus.PENDING] += 1


def lose_from_queue(state: State) -> None:
    state.ready.remove("e")


def change_capabilities(state: State) -> None:
    state.workers["w1"].capabilities = capabilities(hardware=["cuda"])


def fence_from_the_future(state: State) -> None:
    state.tasks["d"].attempts[0].fence = state.next_fence


CORRUPTIONS: list[tuple[Callable[[State], None], str]] = [
    # a leased task its worker does not list
    (drop_from_worker, "task a is leased to w1, which does not list it"),
    # more leases than slots
    (overfill_worker, "worker w1 holds 2 leases in 1 slots"),
    # the lease outlives its attempt
    (end_attempt_keep_lease, "is on a failed attempt"),
    # a terminal task holding a lease
    (complete_with_lease, "task a is completed but holds lease"),
    # a dependant that ran before its dependency completed
    (start_before_dependency, "before dependency a completed"),
    # kept status counts disagree with a recount
    (miscount, "differ from a recount"),
    # a pending task missing from the ready queues
    (lose_from_queue, "task e (pending, not_before=None) is not in the ready queues"),
    # the worker no longer satisfies what its task needs
    (change_capabilities, "which does not satisfy requirement stage 0"),
    # a fence from the future
    (fence_from_the_future, "below next_fence"),
]


def test_a_healthy_state_passes() -> None:
    check_invariants(healthy())


@pytest.mark.parametrize(
    ("corrupt", "message"), CORRUPTIONS, ids=lambda v: getattr(v, "__name__", "")
)
def test_each_corruption_is_named(corrupt: Callable[[State], None], message: str) -> None:
    state = healthy()
    corrupt(state)
    with pytest.raises(AssertionError, match="state invariants violated") as caught:
        check_invariants(state)
    assert message in str(caught.value)
