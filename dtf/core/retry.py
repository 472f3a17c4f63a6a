"""Whether a failed attempt may be retried at all, by the task's own retry policy.

Infrastructure failures (worker lost, crash, timeout, OOM, executor error) are
retried up to ``max_retries``; a non-zero exit only when the policy opts in.
How the retry is made (delay, another worker, a smaller batch...) is the
recovery ladder's decision (``recovery.py``), timed by the same policy.
"""

from __future__ import annotations

import msgspec

from dtf.core.model import INFRASTRUCTURE_FAILURES, FailureKind, RetryPolicy
from dtf.core.recovery import RecoveryPolicy


def is_retryable(failure: FailureKind, policy: RetryPolicy) -> bool:
    if failure in INFRASTRUCTURE_FAILURES:
        return True
    return failure is FailureKind.EXIT_NONZERO and policy.retry_on_nonzero_exit


def retry_refusal(*, attempt: int, failure: FailureKind, policy: RetryPolicy) -> str | None:
    """Why attempt ``attempt`` (1-based) is not retried, or None if it may be."""
    if not is_retryable(failure, policy):
        return f"{failure.value} is not retried by this task's retry policy"
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
