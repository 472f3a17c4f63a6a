"""Whether a failed attempt may be retried at all, by the task's own retry policy.

Infrastructure failures (worker lost, crash, timeout, OOM, executor error) are
retried up to ``max_retries``. So is a non-zero exit whose classification
blames the environment (a CUDA error, a lost device or browser, a refused
connection, running out of memory); one classified as the task's own software
error, or not classified at all, only when the policy opts in.
How the retry is made (delay, another worker, a smaller batch...) is the
recovery ladder's decision (``recovery.py``), timed by the same policy.
"""

from __future__ import annotations

import msgspec

from dtf.core.failures import FailureType
from dtf.core.model import INFRASTRUCTURE_FAILURES, FailureKind, RetryPolicy
from dtf.core.recovery_policy import RecoveryPolicy

TASK_OWN_TYPES = frozenset({FailureType.SOFTWARE_ERROR, FailureType.UNKNOWN})


def is_retryable(failure: FailureKind, failure_type: FailureType, policy: RetryPolicy) -> bool:
    if failure in INFRASTRUCTURE_FAILURES:
        return True
    if failure is not FailureKind.EXIT_NONZERO:
        return False
    return policy.retry_on_nonzero_exit or failure_type not in TASK_OWN_TYPES


def retry_refusal(
    *, attempt: int, failure: FailureKind, failure_type: FailureType, policy: RetryPolicy
) -> str | None:
    """Why attempt ``attempt`` (1-based) is not retried, or None if it may be."""
    if not is_retryable(failure, failure_type, policy):
        return (
            f"{failure.value} ({failure_type.value}) is not retried by this task's retry "
            "policy; set retry_policy.retry_on_nonzero_exit to retry it"
        )
    if attempt > policy.max_retries:
        return (
            f"{failure.value} on attempt {attempt}; retries exhausted "
            f"(max_retries={policy.max_retries})"
        )
    return None


def recovery_policy_for(base: RecoveryPolicy, retry: RetryPolicy) -> RecoveryPolicy:
    """The coordinator's ladders, limited and timed by the task's retry policy."""
    return msgspec.structs.replace(
        base,
        max_attempts=retry.max_retries + 1,
        base_delay_s=retry.retry_delay_seconds,
        backoff_factor=retry.backoff_factor,
        max_delay_s=retry.max_delay_seconds,
        jitter=retry.jitter,
    )
