"""Snapshot and restore: a restored state behaves exactly like the one it came from."""

from __future__ import annotations

from dtf.core import commands as c
from dtf.core.events import Event
from dtf.core.model import Capabilities, FailureKind, HardwareClass, LeaseRef, Outcome
from dtf.core.state import State, StateConfig
from dtf.testing.factories import StateDriver, task_spec
from dtf.testing.invariants import check_invariants

CONFIG = StateConfig(lease_timeout_s=10.0, worker_timeout_s=30.0)
GPU = Capabilities(hardware=[HardwareClass.CPU, HardwareClass.CUDA], memory_gb=32.0)


def busy_state() -> StateDriver:
    """A state with a task in every status, a retry waiting, a fallback ladder and a
    suspect worker; no two leases expire at the same instant."""
    driver = StateDriver(CONFIG)
    driver.register("cpu", slots=2, at=0.0)
    driver.register("gpu", GPU, at=0.5)
    driver.submit(
        ("done", task_spec(priority=0)),
        ("flaky", task_spec(priority=1, retry_policy={"retry_delay_seconds": 4.0})),
        ("ladder", task_spec(requirements={"hardware": ["tpu"], "fallbacks": [{}]})),
        at=1.0,
    )
    driver.succeed("done", at=1.5)
    driver.fail("flaky", FailureKind.CRASHED, at=2.0)
    driver.submit(
        ("gpu-job", task_spec(requirements={"hardware": ["cuda"]}, idempotency_key="k1")),
        ("after", task_spec(dependencies=["gpu-job"])),
        ("after-all", task_spec(dependencies=["after", "flaky"])),
        at=3.0,
    )
    driver.start("gpu-job", at=3.5)
    driver.register("spare", at=4.0)
    driver.disconnect("spare", at=4.5)
    return driver


def further_commands(driver: StateDriver) -> list[c.Command]:
    gpu_job = driver.lease("gpu-job")
    return [
        c.Heartbeat(5.0, "gpu", "s1", [gpu_job], gpu_job.fence),
        c.Tick(6.5),
        c.Heartbeat(7.0, "cpu", "s1", [], 0),
        c.ReportOutcome(8.0, "gpu", gpu_job, Outcome(duration_s=4.5)),
        c.SubmitTasks(9.0, [c.NewTask("late", task_spec(priority=-1))]),
        c.Tick(12.0),
        c.CoordinatorStarted(40.0),
        c.RegisterWorker(41.0, "cpu", "s2", Capabilities(), 2),
        c.Tick(61.0),
        c.Tick(200.0),
    ]


def run(state: State, commands: list[c.Command]) -> list[list[Event]]:
    results = []
    for command in commands:
        results.append(state.apply(command))
        check_invariants(state)
    return results


def test_snapshot_round_trips_byte_for_byte() -> None:
    state = busy_state().state
    assert State.restore(state.snapshot()).snapshot() == state.snapshot()


def test_restored_state_behaves_identically() -> None:
    driver = busy_state()
    restored = State.restore(driver.state.snapshot())
    check_invariants(restored)
    commands = further_commands(driver)
    assert run(restored, commands) == run(driver.state, commands)
    assert restored.snapshot() == driver.state.snapshot()
    assert restored.next_deadline() == driver.state.next_deadline()


def test_restored_state_keeps_counts_and_ready_order() -> None:
    driver = busy_state()
    restored = State.restore(driver.state.snapshot())
    assert restored.status_counts() == driver.state.status_counts()
    assert restored.applied_seq == driver.state.applied_seq


def test_snapshot_plus_journal_tail_rebuilds_the_state() -> None:
    driver = busy_state()
    snapshot, mark = driver.state.snapshot(), len(driver.journal)
    for command in further_commands(driver)[:5]:
        driver.apply(command)
    rebuilt = State.restore(snapshot)
    for data in driver.journal[mark:]:
        rebuilt.apply(c.decode(data))
    assert rebuilt.snapshot() == driver.state.snapshot()


def test_replaying_the_whole_journal_rebuilds_the_state() -> None:
    driver = busy_state()
    replayed = State(CONFIG)
    for data in driver.journal:
        replayed.apply(c.decode(data))
    assert replayed.snapshot() == driver.state.snapshot()


def test_applied_seq_is_kept() -> None:
    state = State(CONFIG)
    state.apply(c.Tick(1.0), seq=41)
    assert State.restore(state.snapshot()).applied_seq == 41


def test_restored_state_fires_simultaneous_timers_in_the_same_order() -> None:
    driver = StateDriver(CONFIG)
    driver.submit(("a", task_spec(priority=5)), ("b", task_spec(priority=1)), at=0.0)
    driver.register("w", slots=2, at=1.0)
    restored = State.restore(driver.state.snapshot())
    assert restored.apply(c.Tick(11.0)) == driver.state.apply(c.Tick(11.0))


def test_lease_refs_in_snapshot_survive() -> None:
    driver = busy_state()
    restored = State.restore(driver.state.snapshot())
    assert restored.is_current_lease_ref("gpu", driver.lease("gpu-job"))
    assert not restored.is_current_lease_ref("gpu", LeaseRef("gpu-job", 1, 999))


def test_restored_state_fails_a_twice_listed_dependency_once() -> None:
    driver = StateDriver(CONFIG)
    driver.submit(("a", task_spec()), ("b", task_spec(dependencies=["a", "a"])), at=0.0)
    restored = State.restore(driver.state.snapshot())
    check_invariants(restored)
    command = c.CancelTask(1.0, "a")
    assert restored.apply(command) == driver.state.apply(command)


def test_restored_state_expires_renewed_leases_in_the_same_order() -> None:
    driver = StateDriver(StateConfig(lease_timeout_s=10.0, worker_timeout_s=1000.0))
    driver.register("w", slots=2, at=0.0)
    driver.submit(("a", task_spec()), at=0.0)
    driver.submit(("b", task_spec()), at=1.0)
    driver.heartbeat("w", [driver.lease("a")], max_fence_seen=1, at=2.0)  # a now ends at 12
    restored = State.restore(driver.state.snapshot())
    assert restored.apply(c.Tick(20.0)) == driver.state.apply(c.Tick(20.0))
