"""Timers fired by ``Tick``: requirement fallbacks, delayed retries, and ``next_deadline``."""

from __future__ import annotations

from collections.abc import Callable

from dtf.core.events import AssignTask, RequirementStageAdvanced
from dtf.core.model import Capabilities, FailureKind, HardwareClass, LeaseRef, Outcome, TaskSpec
from dtf.core.state import StateConfig
from dtf.testing.factories import StateDriver, events_of

MakeSpec = Callable[..., TaskSpec]
MakeCaps = Callable[..., Capabilities]
LADDER = {
    "hardware": ["cuda"],
    "fallbacks": [{"hardware": ["rocm"]}, {"hardware": ["cpu"]}],
    "fallback_after_seconds": 20.0,
}


def test_fallback_stages_advance_on_tick(driver: StateDriver, make_spec: MakeSpec) -> None:
    driver.register("cpu-only")
    driver.submit(("t", make_spec(requirements=LADDER)))
    assert driver.state.next_deadline() == 20.0
    assert driver.tick(19.9) == []
    assert driver.tick(20.0) == [RequirementStageAdvanced("t", 1)]
    assert driver.status("t") == "pending"
    driver.heartbeat("cpu-only", at=25.0)
    events = driver.tick(40.0)
    assert events_of(events, RequirementStageAdvanced) == [RequirementStageAdvanced("t", 2)]
    assert [(e.task_id, e.worker_id) for e in events_of(events, AssignTask)] == [("t", "cpu-only")]
    assert driver.state.tasks["t"].attempts[0].requirement_stage == 2


def test_a_matching_worker_stops_the_ladder(
    driver: StateDriver, make_spec: MakeSpec, make_caps: MakeCaps
) -> None:
    driver.submit(("t", make_spec(requirements=LADDER)))
    driver.register("gpu", make_caps(hardware=["cuda"]), at=5.0)
    driver.heartbeat("gpu", at=15.0)
    assert driver.tick(20.0) == []
    assert driver.state.tasks["t"].requirement_stage == 0


def test_the_last_stage_waits_forever(driver: StateDriver, make_spec: MakeSpec) -> None:
    driver.submit(("t", make_spec(requirements=LADDER)))
    driver.tick(20.0)
    driver.tick(40.0)
    assert driver.state.tasks["t"].requirement_stage == 2
    assert driver.state.next_deadline() is None


def test_retry_keeps_the_stage_it_reached(driver: StateDriver, make_spec: MakeSpec) -> None:
    driver.submit(("t", make_spec(requirements=LADDER, retry_policy={"retry_delay_seconds": 0})))
    driver.tick(20.0)
    driver.tick(40.0)
    driver.register("cpu-only", at=41.0)
    driver.fail("t", FailureKind.CRASHED, at=42.0)
    assert driver.state.tasks["t"].attempts[1].requirement_stage == 2


def test_next_deadline_is_the_earliest_due_timer(driver: StateDriver, make_spec: MakeSpec) -> None:
    assert driver.state.next_deadline() is None
    driver.register("w1", at=1.0)
    assert driver.state.next_deadline() == 31.0
    driver.submit(("t", make_spec()), at=2.0)
    assert driver.state.next_deadline() == 12.0
    driver.succeed("t", at=3.0)
    assert driver.state.next_deadline() == 31.0


def blocked_retry_driver(make_spec: MakeSpec) -> StateDriver:
    """Task t (cuda after a 60 s fallback to any) failed at 59 on w1 after running since 0;
    the only other cuda worker is busy, so t waits at stage 0 from 59."""
    driver = StateDriver(StateConfig(lease_timeout_s=1000.0, worker_timeout_s=10_000.0))
    cuda = Capabilities(hardware=[HardwareClass.CUDA])
    driver.register("w2", cuda)
    driver.submit(("blocker", make_spec(priority=0)))
    driver.register("w1", cuda)
    requirements = {"hardware": ["cuda"], "fallbacks": [{}], "fallback_after_seconds": 60.0}
    driver.submit(
        ("t", make_spec(requirements=requirements, retry_policy={"retry_delay_seconds": 0}))
    )
    assert driver.lease("t") == LeaseRef("t", 1, 2)
    return driver


def test_requeued_task_waits_a_full_fallback_period(make_spec: MakeSpec) -> None:
    driver = blocked_retry_driver(make_spec)
    driver.report("t", Outcome(failure=FailureKind.CRASHED), at=59.0)
    assert "t" in driver.state.ready
    assert driver.tick(60.0) == []
    assert driver.state.tasks["t"].requirement_stage == 0


def test_calling_next_deadline_changes_nothing(make_spec: MakeSpec) -> None:
    live, replayed = blocked_retry_driver(make_spec), blocked_retry_driver(make_spec)
    live.state.next_deadline()
    for driver in (live, replayed):
        driver.report("t", Outcome(failure=FailureKind.CRASHED), at=59.0)
        driver.tick(60.0)
    assert live.state.snapshot() == replayed.state.snapshot()
