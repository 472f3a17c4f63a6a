"""Recovery through the whole state machine, as properties.

``test_recovery.py`` holds the ladder-level properties (``decide`` always
escalates within a bound set by the ladders; equal inputs give equal
decisions). Here the same questions go through ``State``: classification,
the task's retry policy, the poison rule and the retry budget included, with
the outcomes a real worker reports (``dtf.testing.simfaults``).

- A task that never succeeds ends failed, within ``max_retries + 1``
  attempts (two in minimal mode), with a reason that says why it stopped.
- The same failure history gives the same decision: a state restored from a
  snapshot decides every next failure exactly as the live one, events and
  all; and ``decide`` does not care in which order the history is given.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from dtf.core import commands as c
from dtf.core.events import Event
from dtf.core.failures import FailureType
from dtf.core.model import FailureKind, HardwareClass, LeaseRef, Outcome
from dtf.core.recovery import PastRecovery, decide
from dtf.core.recovery_policy import DEFAULT_FAILURE_LADDERS, RecoveryMode, RecoveryPolicy, Strategy
from dtf.core.state import State, StateConfig
from dtf.testing import simfaults as faults
from dtf.testing.factories import StateDriver, capabilities, task_spec
from dtf.testing.simrecovery import escalation_kind

LOSE_WORKER = "lose the worker"
FAILURES: list[Outcome | str] = [
    *faults.NOISE,
    *faults.CUDA_ERRORS,
    *faults.BROWSER_CRASHES,
    *faults.CONTEXT_LOSSES,
    faults.hardware_fault(random.Random(1)),
    faults.hardware_fault(random.Random(3)),
    faults.connection_refused(random.Random(1)),
    faults.connection_refused(random.Random(2)),
    faults.out_of_memory({"batch_size": 64, "fits_up_to": 0}, HardwareClass.CUDA),
    faults.out_of_memory({"batch_size": 64, "fits_up_to": 0}, HardwareClass.CPU),
    Outcome(failure=FailureKind.TIMEOUT, error="did not finish within its timeout", signal=15),
    Outcome(failure=FailureKind.EXECUTOR_ERROR, error="cancelled before it finished"),
    LOSE_WORKER,
]
WORKERS = {
    "gpu": {"hardware": ["cpu", "cuda"]},
    "browser": {"hardware": ["cpu", "webgpu"]},
    "cpu": {"hardware": ["cpu"]},
}
STEP_LIMIT = 400

retry_policies = st.fixed_dictionaries(
    {
        "max_retries": st.integers(0, 8),
        "retry_delay_seconds": st.sampled_from([0.0, 1.0, 30.0]),
        "retry_on_nonzero_exit": st.booleans(),
    }
)
task_shapes = st.fixed_dictionaries(
    {
        "hardware": st.sampled_from([[], ["cuda"], ["webgpu"], ["cuda", "webgpu"]]),
        "params": st.fixed_dictionaries(
            {},
            optional={
                "batch_size": st.integers(1, 256),
                "precision": st.sampled_from(["fp32", "fp16", "int8"]),
            },
        ),
    }
)
modes = st.sampled_from(RecoveryMode)


def failing_task(shape: dict[str, Any], retry: dict[str, Any]) -> Any:
    config = {"entry_point": "sim_cases:plain", "params": shape["params"]}
    return task_spec(
        type="benchmark",
        config=config,
        requirements={"hardware": shape["hardware"]},
        retry_policy=retry,
    )


class Twins:
    """A driver, and before every failure a state restored from its snapshot,
    given the same command: the two must decide alike."""

    def __init__(self, mode: RecoveryMode) -> None:
        config = StateConfig(
            lease_timeout_s=1e9, worker_timeout_s=1e9, recovery=RecoveryPolicy(mode=mode)
        )
        self.driver = StateDriver(config)
        for session, (worker_id, fields) in enumerate(WORKERS.items()):
            self.driver.register(worker_id, capabilities(**fields), session=f"s{session}")
        self.sessions = {worker_id: f"s{n}" for n, worker_id in enumerate(WORKERS)}

    def fail(self, task_id: str, failure: Outcome | str) -> None:
        task = self.driver.state.tasks[task_id]
        assert task.lease is not None
        worker_id, now = task.lease.worker_id, self.driver.now + 1.0
        command: c.Command
        if isinstance(failure, Outcome):
            lease = LeaseRef(task_id, task.lease.attempt, task.lease.fence)
            command = c.ReportOutcome(now, worker_id, lease, failure)
        else:
            session = self.sessions[worker_id] = f"{self.sessions[worker_id]}+"
            worker = self.driver.state.workers[worker_id]
            command = c.RegisterWorker(now, worker_id, session, worker.capabilities, 1, [])
        twin = State.restore(self.driver.state.snapshot())
        self.driver.now = now
        events = self.driver.apply(command)
        assert same_events(twin.apply(command), events)
        assert twin.snapshot() == self.driver.state.snapshot()

    def wait(self) -> None:
        """Until the next timer: a retry delay, a breaker's probe, a health recheck."""
        deadline = self.driver.state.next_deadline()
        assert deadline is not None, "a pending task with nothing left to wait for"
        self.driver.tick(max(deadline, self.driver.now))


def same_events(first: list[Event], second: list[Event]) -> bool:
    return [repr(e) for e in first] == [repr(e) for e in second]


def run_until_terminal(twins: Twins, failures: list[Outcome | str]) -> int:
    """Fail every attempt, cycling through ``failures``; the number of failures."""
    task = twins.driver.state.tasks["t"]
    failed = 0
    for _ in range(STEP_LIMIT):
        if task.status.is_terminal:
            return failed
        if task.lease is None:
            twins.wait()
            continue
        twins.fail("t", failures[failed % len(failures)])
        failed += 1
    raise AssertionError(f"task still {task.status.value} after {STEP_LIMIT} steps")


@settings(max_examples=60, deadline=None)
@given(
    mode=modes,
    shape=task_shapes,
    retry=retry_policies,
    failures=st.lists(st.sampled_from(FAILURES), min_size=1, max_size=10),
)
def test_a_task_that_never_succeeds_ends_failed_within_its_bounds(
    mode: RecoveryMode,
    shape: dict[str, Any],
    retry: dict[str, Any],
    failures: list[Outcome | str],
) -> None:
    twins = Twins(mode)
    twins.driver.submit(("t", failing_task(shape, retry)))
    run_until_terminal(twins, failures)
    task = twins.driver.state.tasks["t"]
    limit = retry["max_retries"] + 1
    if mode is RecoveryMode.MINIMAL:
        limit = min(limit, 2)
    assert task.status.value == "failed"
    assert 1 <= len(task.attempts) <= limit
    assert escalation_kind(task) is not None, task.status_reason
    assert all(a.failure_type is not None for a in task.attempts)
    assert all(a.recovery is not None for a in task.attempts[:-1])
    assert task.attempts[-1].recovery is None


history_entries = st.builds(
    PastRecovery,
    attempt=st.integers(1, 10),
    failure_type=st.sampled_from(FailureType),
    strategy=st.sampled_from(Strategy),
)


@given(
    mode=st.sampled_from([RecoveryMode.PROGRESSIVE, RecoveryMode.AGGRESSIVE]),
    failure_type=st.sampled_from(FailureType),
    hardware=st.sampled_from(HardwareClass),
    history=st.lists(history_entries, max_size=8),
    batch_size=st.integers(1, 128),
    shuffle_seed=st.integers(0, 1000),
)
def test_the_order_of_the_history_does_not_change_the_decision(
    mode: RecoveryMode,
    failure_type: FailureType,
    hardware: HardwareClass,
    history: list[PastRecovery],
    batch_size: int,
    shuffle_seed: int,
) -> None:
    policy = RecoveryPolicy(mode=mode, max_attempts=100, failure_ladders=DEFAULT_FAILURE_LADDERS)
    shuffled = list(history)
    random.Random(shuffle_seed).shuffle(shuffled)
    arguments: dict[str, Any] = dict(
        task_id="t",
        attempt_number=len(history) + 1,
        failure_type=failure_type,
        hardware_class=hardware,
        config={"batch_size": batch_size, "precision": "fp32"},
    )
    assert decide(policy, history=history, **arguments) == decide(
        policy, history=shuffled, **arguments
    )
