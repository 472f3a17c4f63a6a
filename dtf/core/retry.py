"""What follows a failed attempt: a pure decision from the failure and the policy.

Infrastructure failures (worker lost, crash, timeout, OOM, executor error) are
retried up to ``max_retries``; a non-zero exit only when the policy opts in.
The delay grows exponentially and carries jitter drawn from a generator
seeded by (task id, attempt), so every replay of the journal decides alike.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from dtf.core.model import INFRASTRUCTURE_FAILURES, FailureKind, RetryPolicy


@dataclass(frozen=True)
class RetryDecision:
    delay_s: float
    avoid_worker: str | None


@dataclass(frozen=True)
class GiveUp:
    reason: str


def backoff_delay_s(policy: RetryPolicy, task_id: str, attempt: int) -> float:
    """Delay before the attempt after ``attempt`` (1-based), jittered by ±``policy.jitter``
    and never above ``policy.max_delay_seconds``."""
    base = policy.retry_delay_seconds * policy.backoff_factor ** (attempt - 1)
    spread = random.Random(f"{task_id}:{attempt}").uniform(-policy.jitter, policy.jitter)
    return min(max(0.0, base * (1.0 + spread)), policy.max_delay_seconds)


def is_retryable(failure: FailureKind, policy: RetryPolicy) -> bool:
    if failure in INFRASTRUCTURE_FAILURES:
        return True
    return failure is FailureKind.EXIT_NONZERO and policy.retry_on_nonzero_exit


def decide_retry(
    *,
    task_id: str,
    attempt: int,
    failure: FailureKind,
    policy: RetryPolicy,
    worker_id: str,
) -> RetryDecision | GiveUp:
    if not is_retryable(failure, policy):
        return GiveUp(f"{failure.value} is not retried by this task's retry policy")
    if attempt > policy.max_retries:
        return GiveUp(
            f"{failure.value} on attempt {attempt}; retries exhausted "
            f"(max_retries={policy.max_retries})"
        )
    return RetryDecision(backoff_delay_s(policy, task_id, attempt), avoid_worker=worker_id)
