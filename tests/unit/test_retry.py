"""The task's retry policy: which failures retry, when retries run out, and the
backoff it gives the recovery ladder."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dtf.core.failures import FailureType
from dtf.core.model import FailureKind, RetryPolicy
from dtf.core.recovery import backoff_delay_s as recovery_backoff_delay_s
from dtf.core.recovery_policy import RecoveryPolicy
from dtf.core.retry import recovery_policy_for, retry_refusal


def backoff_delay_s(policy: RetryPolicy, task_id: str, attempt: int) -> float:
    """The delay a delayed retry of this task waits."""
    return recovery_backoff_delay_s(recovery_policy_for(RecoveryPolicy(), policy), task_id, attempt)


NO_JITTER = RetryPolicy(jitter=0.0)
SOFTWARE = FailureType.SOFTWARE_ERROR

DECISIONS = [
    # a lost worker is retried
    (FailureKind.WORKER_LOST, SOFTWARE, 1, RetryPolicy(), True),
    # a crash is retried
    (FailureKind.CRASHED, SOFTWARE, 1, RetryPolicy(), True),
    # a timeout is retried
    (FailureKind.TIMEOUT, SOFTWARE, 2, RetryPolicy(), True),
    # out of memory is retried
    (FailureKind.OOM, SOFTWARE, 1, RetryPolicy(), True),
    # an executor error is retried
    (FailureKind.EXECUTOR_ERROR, SOFTWARE, 3, RetryPolicy(), True),
    # a non-zero exit is the task's own verdict: not retried by default
    (FailureKind.EXIT_NONZERO, SOFTWARE, 1, RetryPolicy(), False),
    # ... nor when nothing explains it
    (FailureKind.EXIT_NONZERO, FailureType.UNKNOWN, 1, RetryPolicy(), False),
    # but an exit the environment caused is retried: a CUDA error, a refused connection
    (FailureKind.EXIT_NONZERO, FailureType.CUDA_ERROR, 1, RetryPolicy(), True),
    (FailureKind.EXIT_NONZERO, FailureType.COMMUNICATION_ERROR, 1, RetryPolicy(), True),
    # ... unless the policy opts in
    (FailureKind.EXIT_NONZERO, SOFTWARE, 1, RetryPolicy(retry_on_nonzero_exit=True), True),
    # the last allowed retry: attempt 3 of max_retries=3 is followed by attempt 4
    (FailureKind.CRASHED, SOFTWARE, 3, RetryPolicy(max_retries=3), True),
    # retries exhausted: attempt 4 was the third retry
    (FailureKind.CRASHED, SOFTWARE, 4, RetryPolicy(max_retries=3), False),
    # no retries at all
    (FailureKind.WORKER_LOST, SOFTWARE, 1, RetryPolicy(max_retries=0), False),
    # exhausted also for opted-in exits
    (
        FailureKind.EXIT_NONZERO,
        SOFTWARE,
        2,
        RetryPolicy(max_retries=1, retry_on_nonzero_exit=True),
        False,
    ),
]


@pytest.mark.parametrize(("failure", "failure_type", "attempt", "policy", "retries"), DECISIONS)
def test_retry_refusal(
    failure: FailureKind,
    failure_type: FailureType,
    attempt: int,
    policy: RetryPolicy,
    retries: bool,
) -> None:
    refusal = retry_refusal(
        attempt=attempt, failure=failure, failure_type=failure_type, policy=policy
    )
    assert (refusal is None) is retries


GIVE_UP_REASONS = [
    # not retryable: the reason names the failure and the policy
    (
        FailureKind.EXIT_NONZERO,
        1,
        RetryPolicy(),
        "exit_nonzero (software_error) is not retried by this task's retry policy; "
        "set retry_policy.retry_on_nonzero_exit to retry it",
    ),
    # exhausted: the reason names the attempt and the limit
    (
        FailureKind.OOM,
        3,
        RetryPolicy(max_retries=2),
        "oom on attempt 3; retries exhausted (max_retries=2)",
    ),
]


@pytest.mark.parametrize(("failure", "attempt", "policy", "reason"), GIVE_UP_REASONS)
def test_give_up_says_why(
    failure: FailureKind, attempt: int, policy: RetryPolicy, reason: str
) -> None:
    refusal = retry_refusal(attempt=attempt, failure=failure, failure_type=SOFTWARE, policy=policy)
    assert refusal == reason


DELAYS = [
    # first retry waits the base delay
    (RetryPolicy(retry_delay_seconds=2.0, jitter=0.0), 1, 2.0),
    # then doubles
    (RetryPolicy(retry_delay_seconds=2.0, jitter=0.0), 2, 4.0),
    # and doubles again
    (RetryPolicy(retry_delay_seconds=2.0, jitter=0.0), 3, 8.0),
    # another factor
    (RetryPolicy(retry_delay_seconds=1.0, backoff_factor=3.0, jitter=0.0), 3, 9.0),
    # capped at the maximum
    (RetryPolicy(retry_delay_seconds=10.0, max_delay_seconds=25.0, jitter=0.0), 3, 25.0),
    # a zero delay stays zero
    (RetryPolicy(retry_delay_seconds=0.0), 5, 0.0),
    # a huge attempt number with the largest factor does not overflow
    (RetryPolicy(backoff_factor=10.0, max_delay_seconds=300.0, jitter=0.0), 100, 300.0),
]


@pytest.mark.parametrize(("policy", "attempt", "expected"), DELAYS)
def test_backoff_grows_and_is_capped(policy: RetryPolicy, attempt: int, expected: float) -> None:
    assert backoff_delay_s(policy, "t", attempt) == pytest.approx(expected)


policies = st.builds(
    RetryPolicy,
    retry_delay_seconds=st.floats(0.0, 100.0),
    backoff_factor=st.floats(1.0, 10.0),
    max_delay_seconds=st.floats(0.0, 1000.0),
    jitter=st.floats(0.0, 1.0),
)
task_ids = st.text(alphabet="abcxyz0123456789-", min_size=1, max_size=12)


@given(policy=policies, task_id=task_ids, attempt=st.integers(1, 100))
def test_jitter_stays_within_its_bounds(policy: RetryPolicy, task_id: str, attempt: int) -> None:
    capped = min(
        policy.retry_delay_seconds * policy.backoff_factor ** (attempt - 1),
        policy.max_delay_seconds,
    )
    delay = backoff_delay_s(policy, task_id, attempt)
    assert capped * (1 - policy.jitter) - 1e-9 <= delay <= capped * (1 + policy.jitter) + 1e-9
    assert delay >= 0.0


@given(policy=policies, task_id=task_ids, attempt=st.integers(1, 100))
def test_delay_is_a_function_of_task_and_attempt(
    policy: RetryPolicy, task_id: str, attempt: int
) -> None:
    assert backoff_delay_s(policy, task_id, attempt) == backoff_delay_s(policy, task_id, attempt)


def test_jitter_differs_between_tasks_and_attempts() -> None:
    policy = RetryPolicy(retry_delay_seconds=10.0, backoff_factor=1.0, jitter=0.5)
    delays = {
        backoff_delay_s(policy, f"task-{n}", attempt) for n in range(10) for attempt in (1, 2)
    }
    assert len(delays) == 20


def test_the_task_policy_limits_and_times_the_ladder() -> None:
    policy = recovery_policy_for(
        RecoveryPolicy(), RetryPolicy(max_retries=5, retry_delay_seconds=3.0, jitter=0.0)
    )
    assert (policy.max_attempts, policy.base_delay_s, policy.jitter) == (6, 3.0, 0.0)
