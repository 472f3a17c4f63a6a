"""Leases and workers: expiry, renewal, dropped and in-flight leases, stale and resent outcomes,
coordinator restarts and worker liveness."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dtf.core import commands as c
from dtf.core.events import (
    AssignTask,
    AttemptFinished,
    OutcomeAccepted,
    RetryScheduled,
    TaskStatusChanged,
    WorkerStatusChanged,
)
from dtf.core.model import FailureKind, LeaseRef, Outcome, TaskSpec
from dtf.core.records import AttemptStatus, TaskStatus, WorkerStatus
from dtf.errors import Conflict, DtfError
from dtf.testing.factories import StateDriver, events_of

MakeSpec = Callable[..., TaskSpec]


@pytest.fixture
def leased(driver: StateDriver, make_spec: MakeSpec) -> StateDriver:
    """w1 holds task t (attempt 1, fence 1) from time 0; its lease runs to 10."""
    driver.register("w1")
    driver.submit(("t", make_spec(retry_policy={"retry_delay_seconds": 0.0})))
    assert driver.lease("t") == LeaseRef("t", 1, 1)
    return driver


def expires_at(driver: StateDriver, task_id: str) -> float:
    lease = driver.state.tasks[task_id].lease
    assert lease is not None
    return lease.expires_at


def attempt_status(driver: StateDriver, task_id: str, number: int) -> AttemptStatus:
    return driver.state.tasks[task_id].attempts[number - 1].status


def test_lease_expires_on_tick_as_lost_and_retries(leased: StateDriver) -> None:
    assert leased.state.next_deadline() == 10.0
    assert leased.tick(9.9) == []
    events = leased.tick(10.0)
    assert events_of(events, AttemptFinished) == [
        AttemptFinished(
            "t",
            1,
            "w1",
            AttemptStatus.LOST,
            FailureKind.WORKER_LOST,
            "lease expired: no heartbeat from w1 for 10.0s",
        )
    ]
    assert events_of(events, RetryScheduled)[0].next_attempt == 2
    assert leased.lease("t") == LeaseRef("t", 2, 2)


def test_heartbeat_renews_the_lease(leased: StateDriver) -> None:
    leased.heartbeat("w1", at=8.0)
    assert expires_at(leased, "t") == 18.0
    assert leased.tick(10.0) == []
    assert events_of(leased.tick(18.0), AttemptFinished)[0].status is AttemptStatus.LOST


def test_started_renews_the_lease(leased: StateDriver) -> None:
    events = leased.start("t", at=4.0)
    assert events == [
        TaskStatusChanged("t", TaskStatus.ASSIGNED, TaskStatus.RUNNING, "running on w1")
    ]
    assert leased.tick(13.9) == []
    assert leased.state.tasks["t"].attempts[0].started_at == 4.0


def test_heartbeat_without_a_seen_lease_ends_it_at_once(leased: StateDriver) -> None:
    events = leased.heartbeat("w1", [], max_fence_seen=1, at=2.0)
    assert events_of(events, AttemptFinished)[0].reason == "worker w1 no longer holds attempt 1"
    assert attempt_status(leased, "t", 1) is AttemptStatus.LOST


def test_heartbeat_keeps_a_lease_still_in_flight(leased: StateDriver) -> None:
    events = leased.heartbeat("w1", [], max_fence_seen=0, at=2.0)
    assert events == []
    assert attempt_status(leased, "t", 1) is AttemptStatus.RUNNING


def test_heartbeat_renews_only_what_is_held(driver: StateDriver, make_spec: MakeSpec) -> None:
    driver.register("w1", slots=2)
    driver.submit(("a", make_spec()), ("b", make_spec()))
    driver.heartbeat("w1", [driver.lease("a")], max_fence_seen=1, at=5.0)
    events = driver.tick(10.0)
    assert [e.task_id for e in events_of(events, AttemptFinished)] == ["b"]


def test_reregistering_without_a_lease_ends_it(leased: StateDriver) -> None:
    events = leased.register("w1", session="s2", at=3.0)
    assert events_of(events, AttemptFinished)[0].status is AttemptStatus.LOST
    assert events_of(events, WorkerStatusChanged) == []
    assert leased.lease("t").attempt == 2


@pytest.fixture
def undelivered(driver: StateDriver, make_spec: MakeSpec) -> StateDriver:
    """Worker process p1 (3 slots, through node-1) ran t0-t2 (fences 1-3); their
    outcomes made the state assign t3-t5 (fences 4-6), which it never received."""
    driver.register("w1", slots=3, incarnation="p1", node_id="node-1", at=1.0)
    driver.submit(*[(f"t{n}", make_spec()) for n in range(8)], at=2.0)
    for task_id in ("t0", "t1", "t2"):
        driver.succeed(task_id, at=3.0)
    assert [driver.lease(f"t{n}").fence for n in (3, 4, 5)] == [4, 5, 6]
    return driver


def test_the_same_worker_process_reregistering_requeues_what_it_was_never_sent_uncharged(
    undelivered: StateDriver,
) -> None:
    events = undelivered.register("w1", slots=3, incarnation="p1", max_fence_seen=3, at=3.5)
    finished = events_of(events, AttemptFinished)
    assert [(f.task_id, f.status, f.failure) for f in finished] == [
        (f"t{n}", AttemptStatus.LOST, FailureKind.COORDINATOR_LOST) for n in (3, 4, 5)
    ]
    assert "without having been sent attempt 1 (fence 4)" in (finished[0].reason or "")
    state = undelivered.state
    assert state.breakers.workers.get("w1") is None
    assert state.workers["w1"].tasks_failed == 0
    assert state.tasks["t3"].attempts[0].lost_with_node == "node-1"
    assert state.tasks["t3"].avoid_workers == []
    assert sorted(state.workers["w1"].leases) == ["t3", "t4", "t5"]  # queued again at once


def test_a_new_worker_process_reregistering_is_charged_for_what_it_lacks(
    undelivered: StateDriver,
) -> None:
    events = undelivered.register("w1", slots=3, incarnation="p2", max_fence_seen=0, at=3.5)
    finished = events_of(events, AttemptFinished)
    assert {f.failure for f in finished} == {FailureKind.WORKER_LOST}
    breaker = undelivered.state.breakers.workers["w1"]
    assert breaker.consecutive_failures == 3


def test_leases_the_worker_process_saw_and_lacks_are_charged_on_reregistering(
    undelivered: StateDriver,
) -> None:
    events = undelivered.register("w1", slots=3, incarnation="p1", max_fence_seen=5, at=3.5)
    failures = {f.task_id: f.failure for f in events_of(events, AttemptFinished)}
    assert failures == {
        "t3": FailureKind.WORKER_LOST,
        "t4": FailureKind.WORKER_LOST,
        "t5": FailureKind.COORDINATOR_LOST,
    }


def test_a_worker_that_does_not_say_what_it_was_sent_is_charged(
    undelivered: StateDriver,
) -> None:
    events = undelivered.register("w1", slots=3, incarnation="p1", at=3.5)
    assert {f.failure for f in events_of(events, AttemptFinished)} == {FailureKind.WORKER_LOST}


def test_a_task_never_sent_again_and_again_is_charged_past_max_coordinator_losses(
    driver: StateDriver, make_spec: MakeSpec
) -> None:
    driver.register("w1", incarnation="p1", at=1.0)
    driver.submit(("t", make_spec(retry_policy={"retry_delay_seconds": 0.0})), at=2.0)
    failures = []
    for n in range(driver.state.config.max_coordinator_losses + 1):
        seen = driver.lease("t").fence - 1
        events = driver.register("w1", session=f"s{n + 2}", incarnation="p1", max_fence_seen=seen)
        failures += [f.failure for f in events_of(events, AttemptFinished)]
    assert failures == [
        FailureKind.COORDINATOR_LOST
    ] * driver.state.config.max_coordinator_losses + [FailureKind.WORKER_LOST]


def test_reregistering_with_the_lease_keeps_and_renews_it(leased: StateDriver) -> None:
    events = leased.register("w1", held=[LeaseRef("t", 1, 1)], session="s2", at=3.0)
    assert events == []
    assert expires_at(leased, "t") == 13.0


def test_stale_outcome_is_kept_as_superseded_and_not_counted(leased: StateDriver) -> None:
    leased.tick(10.0)
    late = Outcome(duration_s=9.0)
    events = leased.report("t", late, lease=LeaseRef("t", 1, 1), at=11.0)
    assert events == [OutcomeAccepted("w1", "t", 1, 1, counted=False)]
    first = leased.state.tasks["t"].attempts[0]
    assert first.status is AttemptStatus.LOST
    assert first.superseded_outcomes == [late]
    assert first.outcome is None
    assert leased.status("t") == "assigned"
    assert leased.state.workers["w1"].tasks_completed == 0


def test_resent_outcome_is_idempotent(leased: StateDriver, make_spec: MakeSpec) -> None:
    leased.submit(("u", make_spec()))
    outcome = Outcome(duration_s=1.0, stdout_tail="ok")
    first = leased.report("t", outcome, at=1.0)
    assert OutcomeAccepted("w1", "t", 1, 1, counted=True) in first
    before = leased.state.snapshot()
    again = leased.report("t", outcome, lease=LeaseRef("t", 1, 1), at=1.0)
    assert again == [OutcomeAccepted("w1", "t", 1, 1, counted=False)]
    assert leased.state.snapshot() == before
    assert leased.state.workers["w1"].tasks_completed == 1


def test_a_different_outcome_after_the_counted_one_is_superseded(leased: StateDriver) -> None:
    leased.succeed("t", at=1.0)
    other = Outcome(failure=FailureKind.CRASHED)
    leased.report("t", other, lease=LeaseRef("t", 1, 1), at=2.0)
    attempt = leased.state.tasks["t"].attempts[0]
    assert attempt.outcome == Outcome()
    assert attempt.superseded_outcomes == [other]
    assert leased.status("t") == "completed"


def test_outcome_without_started_counts(leased: StateDriver) -> None:
    events = leased.succeed("t", at=1.0)
    assert TaskStatusChanged("t", TaskStatus.ASSIGNED, TaskStatus.COMPLETED, "completed") in events


def test_started_after_the_outcome_changes_nothing(leased: StateDriver) -> None:
    leased.succeed("t", at=1.0)
    before = leased.state.snapshot()
    assert leased.apply(c.TaskStarted(1.0, "w1", LeaseRef("t", 1, 1))) == []
    assert leased.state.snapshot() == before


CLAIMS = [
    # another worker's claim on the attempt
    ("w2", LeaseRef("t", 1, 1), "'w2' does not hold task 't' attempt 1 (fence 1)"),
    # the right worker with a wrong fence
    ("w1", LeaseRef("t", 1, 7), "'w1' does not hold task 't' attempt 1 (fence 7)"),
    # an attempt that never existed
    ("w1", LeaseRef("t", 2, 2), "task 't' has no attempt 2"),
    # an unknown task
    ("w1", LeaseRef("ghost", 1, 1), "unknown task 'ghost'"),
]


@pytest.mark.parametrize(("worker_id", "ref", "message"), CLAIMS)
def test_outcome_from_a_non_holder_is_refused(
    leased: StateDriver, worker_id: str, ref: LeaseRef, message: str
) -> None:
    leased.register("w2", at=0.0)
    with pytest.raises(DtfError) as caught:
        leased.report("t", Outcome(), lease=ref, worker_id=worker_id)
    assert message in str(caught.value)


def test_coordinator_restart_extends_leases_and_suspects_workers(
    leased: StateDriver, make_spec: MakeSpec
) -> None:
    events = leased.apply(c.CoordinatorStarted(50.0))
    assert events == [
        WorkerStatusChanged(
            "w1", WorkerStatus.ONLINE, WorkerStatus.SUSPECT, "coordinator restarted"
        )
    ]
    assert expires_at(leased, "t") == 60.0
    assert leased.tick(59.0) == []
    assert events_of(leased.submit(("u", make_spec()), at=59.0), AssignTask) == []
    events = leased.register("w1", held=[LeaseRef("t", 1, 1)], session="s2", at=59.5)
    assert events_of(events, WorkerStatusChanged)[0].new is WorkerStatus.ONLINE
    assert attempt_status(leased, "t", 1) is AttemptStatus.RUNNING


def test_a_new_cluster_leader_extends_leases_and_keeps_workers_online(
    leased: StateDriver, make_spec: MakeSpec
) -> None:
    assert leased.apply(c.CoordinatorStarted(50.0, connections_lost=False)) == []
    assert expires_at(leased, "t") == 60.0
    assert leased.state.workers["w1"].status is WorkerStatus.ONLINE
    leased.heartbeat("w1", at=51.0)
    leased.report("t", Outcome(), lease=LeaseRef("t", 1, 1), worker_id="w1", at=52.0)
    assert events_of(leased.submit(("u", make_spec()), at=53.0), AssignTask) != []


def test_coordinator_restart_never_shortens_a_lease(leased: StateDriver) -> None:
    leased.heartbeat("w1", at=9.0)
    leased.apply(c.CoordinatorStarted(1.0))
    assert expires_at(leased, "t") == 19.0


def test_worker_goes_offline_after_the_worker_timeout(driver: StateDriver) -> None:
    driver.register("w1")
    driver.heartbeat("w1", at=5.0)
    assert driver.state.next_deadline() == 35.0
    assert driver.tick(34.9) == []
    assert driver.tick(35.0) == [
        WorkerStatusChanged("w1", WorkerStatus.ONLINE, WorkerStatus.OFFLINE, "no heartbeat for 30s")
    ]
    assert driver.state.next_deadline() is None


def test_heartbeat_after_silence_makes_a_worker_suspect_until_it_registers(
    driver: StateDriver,
) -> None:
    driver.register("w1")
    driver.tick(30.0)
    events = driver.heartbeat("w1", at=31.0)
    assert events_of(events, WorkerStatusChanged)[0].new is WorkerStatus.SUSPECT
    events = driver.register("w1", session="s2", at=32.0)
    assert events_of(events, WorkerStatusChanged)[0].new is WorkerStatus.ONLINE


def test_disconnect_makes_a_worker_suspect(leased: StateDriver) -> None:
    events = leased.disconnect("w1", at=1.0)
    assert events == [
        WorkerStatusChanged("w1", WorkerStatus.ONLINE, WorkerStatus.SUSPECT, "connection dropped")
    ]
    assert attempt_status(leased, "t", 1) is AttemptStatus.RUNNING


def test_disconnect_of_a_replaced_session_is_ignored(leased: StateDriver) -> None:
    leased.register("w1", held=[LeaseRef("t", 1, 1)], session="s2", at=1.0)
    assert leased.disconnect("w1", session="s1", at=2.0) == []
    assert leased.state.workers["w1"].status is WorkerStatus.ONLINE


def test_heartbeat_from_a_replaced_session_is_refused(leased: StateDriver) -> None:
    leased.register("w1", held=[LeaseRef("t", 1, 1)], session="s2", at=1.0)
    with pytest.raises(Conflict, match="session 's1' of worker 'w1' was replaced"):
        leased.heartbeat("w1", session="s1", at=2.0)


def test_time_never_runs_backwards(leased: StateDriver) -> None:
    leased.tick(5.0)
    leased.heartbeat("w1", at=1.0)
    assert leased.state.clock == 5.0
    assert expires_at(leased, "t") == 15.0
