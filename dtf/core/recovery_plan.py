"""From a failed attempt to what happens next.

The failure is classified (the rules are data; the evidence that matched is
kept), the task's own retry policy says whether it may be retried at all,
and the recovery ladder for its failure type and hardware class says how:
after a delay, elsewhere, with a smaller batch or lower precision, on other
hardware, or not at all (escalate, with the whole story as the reason).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dtf.core.effective import effective_requirements, effective_spec
from dtf.core.failures import (
    Classification,
    ClassificationRule,
    FailureEvidence,
    FailureType,
    classify,
)
from dtf.core.model import Capabilities, FailureKind, HardwareClass, Outcome, TaskType
from dtf.core.records import AttemptRecord, TaskRecord
from dtf.core.recovery import Escalate, PastRecovery, RecoveryDecision, backoff_delay_s, decide
from dtf.core.recovery_policy import RecoveryPolicy, Strategy
from dtf.core.retry import recovery_policy_for, retry_refusal


@dataclass(frozen=True)
class RecoveryPlan:
    classification: Classification
    next_step: RecoveryDecision | Escalate
    is_poison: bool = False


def plan_recovery(
    task: TaskRecord,
    attempt: AttemptRecord,
    *,
    failure: FailureKind,
    reason: str,
    outcome: Outcome | None,
    worker: Capabilities | None,
    policy: RecoveryPolicy,
    rules: tuple[ClassificationRule, ...],
    poison_after: int = 0,
) -> RecoveryPlan:
    hardware = hardware_class_of(task, worker)
    evidence = FailureEvidence.from_outcome(
        outcome or Outcome(failure=failure, error=reason),
        task_type=task.spec.type.value,
        hardware_class=hardware,
    )
    classification = classify(evidence, rules)
    poison = poison_reason(task, attempt, classification.failure_type, poison_after)
    if poison is not None:
        return RecoveryPlan(classification, Escalate(poison), is_poison=True)
    charged = charged_attempts(task, attempt)
    refusal = retry_refusal(
        attempt=charged,
        failure=failure,
        failure_type=classification.failure_type,
        policy=task.spec.retry_policy,
    )
    if refusal is not None:
        return RecoveryPlan(classification, Escalate(refusal))
    task_policy = recovery_policy_for(policy, task.spec.retry_policy)
    decision = decide(
        task_policy,
        task_id=task.id,
        attempt_number=charged,
        failure_type=classification.failure_type,
        hardware_class=hardware,
        history=past_recoveries(task),
        config=current_params(task),
        required_hardware=effective_requirements(task).hardware,
    )
    if isinstance(decision, Escalate) and decision.exhausted:
        return RecoveryPlan(classification, _retry_anyway(task_policy, task, charged, decision))
    return RecoveryPlan(classification, decision)


def charged_attempts(task: TaskRecord, attempt: AttemptRecord) -> int:
    """How many attempts up to ``attempt`` count against the task's retries:
    those the state machine ended as lost with a coordinator node were the
    cluster's loss, not the task's."""
    lost = sum(1 for a in task.attempts[: attempt.number - 1] if a.lost_with_node is not None)
    return attempt.number - lost


def _retry_anyway(
    policy: RecoveryPolicy, task: TaskRecord, charged: int, exhausted: Escalate
) -> RecoveryDecision:
    """A ladder that has run out does not cut short the retries the task asked for."""
    delay_s = backoff_delay_s(policy, task.id, charged)
    allowed = task.spec.retry_policy.max_retries
    reason = (
        f"{exhausted.reason.removesuffix('; escalating')}; retrying after {delay_s:.1f}s "
        f"as the task's retry policy allows (retry {charged} of {allowed})"
    )
    return RecoveryDecision(Strategy.DELAYED_RETRY, reason, "retry policy", 0, delay_s=delay_s)


def poison_reason(
    task: TaskRecord, attempt: AttemptRecord, failure_type: FailureType, poison_after: int
) -> str | None:
    """A task whose runs took down ``poison_after`` different workers is the
    problem, not the workers: it is quarantined instead of retried. (Tasks
    that went down together are retried apart, so a bystander seldom shares
    a second crash with the culprit.)"""
    if poison_after < 1 or failure_type is not FailureType.WORKER_CRASH:
        return None
    crashed = dict.fromkeys(
        a.worker_id
        for a in [*task.attempts[:-1], attempt]
        if a is attempt or a.failure_type is FailureType.WORKER_CRASH
    )
    if len(crashed) < poison_after:
        return None
    return (
        f"quarantined as a poison task: its runs took down {len(crashed)} different workers "
        f"({', '.join(crashed)}); the workers are not blamed"
    )


def hardware_class_of(task: TaskRecord, worker: Capabilities | None) -> HardwareClass:
    """The class the attempt ran on: the first required one the worker has, else CPU."""
    offered = worker.hardware if worker is not None else [HardwareClass.CPU]
    for wanted in effective_requirements(task).hardware:
        if wanted in offered:
            return wanted
    return HardwareClass.CPU


def past_recoveries(task: TaskRecord) -> list[PastRecovery]:
    return [
        PastRecovery(a.number, a.failure_type, a.recovery)
        for a in task.attempts
        if a.failure_type is not None and a.recovery is not None
    ]


def current_params(task: TaskRecord) -> dict[str, Any]:
    """The parameters recovery may reduce: a benchmark's params as it runs now."""
    spec = effective_spec(task)
    if spec.type is TaskType.BENCHMARK:
        return dict(spec.config.get("params", {}))
    return dict(task.params_patch)
