"""What must hold for recovery when a simulation has settled, and while it runs.

- Every failed task says why it stopped (``escalation_kind``): the ladder
  escalated, the task's retry policy refused (not retryable, retries
  exhausted), the poison rule quarantined it, its run's retry budget was
  spent, or a dependency failed or was cancelled.
- Every attempt but a task's last was classified and names the step taken;
  no task ran more than ``max_retries + 1`` attempts; batch sizes only shrink,
  halving per ``reduce_batch_size`` (to the floor at once when aggressive); a step that
  does not reduce is taken at most once per failure type (the retries a
  task's policy still grants once its ladder ran out are delayed retries
  outside the ladder).
- An OOM benchmark that fits at some batch size and failed by nothing but
  its own OOM completed at a batch size that fits, unless its run's budget
  was spent (when the policy halves the batch first, as progressive
  recovery with the default ladder does); one that never fits did not
  complete.
- A poison task that took down two workers was quarantined.
- A bad worker blamed ``threshold`` times had its breaker opened, and ends
  quarantined or with the breaker not closed (its probes can only fail).
- While it runs (``check_budget_bound``, after every command): a run of at
  least ``min_tasks`` never has more than ``share`` of its tasks retrying
  once one more starts to.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from dtf.core.breakers import WORKER_FAULTS, BreakerState
from dtf.core.budget import run_of
from dtf.core.events import Event, RetryScheduled
from dtf.core.failures import FailureType
from dtf.core.model import HardwareClass
from dtf.core.records import AttemptRecord, TaskRecord, TaskStatus
from dtf.core.recovery import REDUCING_STEPS, select_ladder
from dtf.core.recovery_policy import RecoveryMode, RecoveryPolicy, Strategy
from dtf.core.state import State, StateConfig
from dtf.testing.simfaults import Behaviour, behaviour_of


class EscalationKind(enum.StrEnum):
    DEPENDENCY = "dependency"
    POISON = "poison"
    BUDGET = "budget"
    RETRIES_EXHAUSTED = "retries_exhausted"
    NOT_RETRYABLE = "not_retryable"
    LADDER = "ladder"


ESCALATION_MARKERS = (
    (EscalationKind.POISON, "quarantined as a poison task"),
    (EscalationKind.BUDGET, "retry budget of "),
    (EscalationKind.RETRIES_EXHAUSTED, "retries exhausted"),
    (EscalationKind.NOT_RETRYABLE, "is not retried by this task's retry policy"),
    (EscalationKind.LADDER, "escalat"),
)
POLICY_RETRY = "as the task's retry policy allows"
POISON_WORKERS = 2


def escalation_kind(task: TaskRecord) -> EscalationKind | None:
    """Why a failed task stopped, read from its reason; None if it does not say."""
    reason = task.status_reason or ""
    if reason.startswith("dependency "):
        return EscalationKind.DEPENDENCY
    return next((kind for kind, marker in ESCALATION_MARKERS if marker in reason), None)


@dataclass(frozen=True)
class RecoveryTally:
    escalations: dict[str, int]
    failure_types: dict[str, int]
    oom_reduced: int
    poison_quarantined: int
    innocents_quarantined: int


def check_recovery(
    state: State,
    *,
    bad_workers: Collection[str],
    breakers_opened: Collection[str],
) -> RecoveryTally:
    """Raise one ``AssertionError`` listing every problem, else count what happened."""
    problems: list[str] = []
    for task in state.tasks.values():
        problems.extend(_escalation_problems(state, task))
        problems.extend(_bound_problems(task, state.config))
        problems.extend(_oom_problems(task, halves_first=halves_batch_first(state.config.recovery)))
        problems.extend(_poison_problems(task))
    threshold = state.config.circuit_breaker_threshold
    for worker_id in bad_workers:
        problems.extend(_bad_worker_problems(state, worker_id, breakers_opened, threshold))
    if problems:
        shown = "\n  ".join(problems[:20])
        raise AssertionError(f"{len(problems)} recovery problems:\n  {shown}")
    return tally(state)


def check_budget_bound(state: State, events: Sequence[Event]) -> None:
    share, min_tasks = state.config.retry_budget_share, state.config.retry_budget_min_tasks
    starting = {e.task_id for e in events if isinstance(e, RetryScheduled) and e.next_attempt == 2}
    for run in sorted({run_of(state.tasks[task_id]) for task_id in starting}):
        size, retrying = state.budgets.sizes[run], len(state.budgets.retrying.get(run, {}))
        if size >= min_tasks and retrying > share * size:
            raise AssertionError(
                f"run {run!r}: {retrying} of {size} tasks retrying, over the budget share {share}"
            )


def _escalation_problems(state: State, task: TaskRecord) -> Iterator[str]:
    if task.status is not TaskStatus.FAILED:
        return
    kind = escalation_kind(task)
    if kind is None:
        yield f"task {task.id} failed without an escalation reason: {task.status_reason!r}"
    elif kind is EscalationKind.DEPENDENCY:
        ended = {TaskStatus.FAILED, TaskStatus.CANCELLED}
        if task.attempts or not any(state.tasks[d].status in ended for d in task.spec.dependencies):
            yield f"task {task.id} blames a dependency, but none failed: {task.status_reason!r}"
    else:
        last = task.attempts[-1] if task.attempts else None
        if last is None or last.failure_type is None or last.recovery is not None:
            yield f"task {task.id} escalated ({kind}) but its last attempt is {last}"


def _bound_problems(task: TaskRecord, config: StateConfig) -> Iterator[str]:
    """At most ``max_retries + 1`` charged attempts, plus up to
    ``max_coordinator_losses`` lost with a coordinator node (re-queued without a step)."""
    forgiven = sum(1 for a in task.attempts if a.lost_with_node is not None)
    if forgiven > config.max_coordinator_losses:
        yield (
            f"task {task.id} had {forgiven} attempts lost with coordinator nodes uncharged; "
            f"max_coordinator_losses allows {config.max_coordinator_losses}"
        )
    limit = task.spec.retry_policy.max_retries + 1
    if len(task.attempts) - forgiven > limit:
        yield (
            f"task {task.id} ran {len(task.attempts) - forgiven} charged attempts "
            f"({forgiven} more lost with coordinator nodes); its policy allows {limit}"
        )
    for attempt in task.attempts[:-1]:
        is_classified = attempt.failure_type is not None
        if not is_classified or (attempt.recovery is None and attempt.lost_with_node is None):
            yield f"task {task.id} attempt {attempt.number} was retried without a classified step"
    steps = Counter(
        (a.failure_type, a.recovery)
        for a in task.attempts
        if a.recovery is not None
        and a.recovery not in REDUCING_STEPS
        and POLICY_RETRY not in (a.recovery_reason or "")
    )
    for (failure_type, strategy), times in steps.items():
        if times > 1:
            yield f"task {task.id} took {strategy} {times} times for {failure_type}"
    yield from _batch_problems(task, config.recovery)


def _batch_problems(task: TaskRecord, policy: RecoveryPolicy) -> Iterator[str]:
    floor = policy.batch_size_floor
    aggressive = policy.mode is RecoveryMode.AGGRESSIVE
    sizes = [batch_size(task, a) for a in task.attempts]
    for attempt, size, following in zip(task.attempts, sizes, sizes[1:], strict=False):
        if size is None or following is None:
            continue
        expected = size
        if attempt.recovery is Strategy.REDUCE_BATCH_SIZE:
            expected = floor if aggressive else max(floor, size // 2)
        if following != expected:
            yield (
                f"task {task.id} ran attempt {attempt.number + 1} at batch size {following} "
                f"after {size} and {attempt.recovery}; expected {expected}"
            )


def batch_size(task: TaskRecord, attempt: AttemptRecord) -> int | None:
    """The batch size the attempt ran with, as recorded with it."""
    params: dict[str, Any] = {**task.spec.config.get("params", {}), **attempt.params_patch}
    size = params.get("batch_size")
    return size if isinstance(size, int) else None


def halves_batch_first(policy: RecoveryPolicy) -> bool:
    """Whether an OOM is met by halving the batch before anything else."""
    _, ladder = select_ladder(policy, FailureType.RESOURCE_EXHAUSTION, HardwareClass.CPU)
    return policy.mode is RecoveryMode.PROGRESSIVE and ladder[:1] == (Strategy.REDUCE_BATCH_SIZE,)


def _oom_problems(task: TaskRecord, *, halves_first: bool) -> Iterator[str]:
    if behaviour_of(task.spec) is not Behaviour.OOM:
        return
    fits_up_to = int(task.spec.config["params"]["fits_up_to"])
    if fits_up_to < 1:
        if task.status is TaskStatus.COMPLETED:
            yield f"task {task.id} never fits in memory, yet completed"
        return
    if task.status is TaskStatus.COMPLETED:
        final = batch_size(task, task.attempts[-1])
        if final is None or final > fits_up_to:
            yield f"task {task.id} completed at batch size {final}, above {fits_up_to}"
        return
    own_oom_only = all(
        a.failure_type is FailureType.RESOURCE_EXHAUSTION
        and (batch_size(task, a) or 0) > fits_up_to
        for a in task.attempts
    )
    allowed = {EscalationKind.BUDGET, EscalationKind.DEPENDENCY}
    if (
        halves_first
        and task.status is TaskStatus.FAILED
        and own_oom_only
        and escalation_kind(task) not in allowed
    ):
        yield (
            f"task {task.id} fits at batch size {fits_up_to} and met only its own OOM, "
            f"yet failed: {task.status_reason!r}"
        )


def _poison_problems(task: TaskRecord) -> Iterator[str]:
    """A poison task that took down two workers was quarantined (or its run's
    budget, which speaks first, stopped it)."""
    if behaviour_of(task.spec) is not Behaviour.POISON or task.status is not TaskStatus.FAILED:
        return
    crashed = {a.worker_id for a in task.attempts if a.failure_type is FailureType.WORKER_CRASH}
    allowed = {EscalationKind.POISON, EscalationKind.BUDGET}
    if len(crashed) >= POISON_WORKERS and escalation_kind(task) not in allowed:
        yield (
            f"poison task {task.id} took down {sorted(crashed)} but was not quarantined: "
            f"{task.status_reason!r}"
        )


def _bad_worker_problems(
    state: State, worker_id: str, breakers_opened: Collection[str], threshold: int
) -> Iterator[str]:
    name = f"worker {worker_id}"
    blamed = [
        attempt
        for task in state.tasks.values()
        for attempt in task.attempts
        if attempt.worker_id == worker_id
        and attempt.failure_type in WORKER_FAULTS
        and not _may_be_poison_verdict(task, attempt)
    ]
    if len(blamed) >= threshold and name not in breakers_opened:
        yield f"bad {name} was blamed {len(blamed)} times, but its breaker never opened"
    breaker = state.breakers.workers.get(worker_id)
    is_closed = breaker is None or breaker.state is BreakerState.CLOSED
    if name in breakers_opened and is_closed:
        yield f"bad {name} ends with its breaker closed, though its probes can only fail"
    if len(blamed) >= threshold and is_closed and not state.workers[worker_id].health.quarantined:
        yield f"bad {name} was blamed {len(blamed)} times, yet ends neither quarantined nor shut out"


def _may_be_poison_verdict(task: TaskRecord, attempt: AttemptRecord) -> bool:
    """The attempt that quarantined a poison task blames no worker."""
    return (
        task.status is TaskStatus.FAILED
        and attempt is task.attempts[-1]
        and attempt.failure_type is FailureType.WORKER_CRASH
    )


def tally(state: State) -> RecoveryTally:
    tasks = list(state.tasks.values())
    failed = [t for t in tasks if t.status is TaskStatus.FAILED]
    quarantined = [t for t in failed if escalation_kind(t) is EscalationKind.POISON]
    is_poison = [behaviour_of(t.spec) is Behaviour.POISON for t in quarantined]
    return RecoveryTally(
        escalations=dict(sorted(Counter(str(escalation_kind(t)) for t in failed).items())),
        failure_types=dict(
            sorted(
                Counter(
                    a.failure_type.value for t in tasks for a in t.attempts if a.failure_type
                ).items()
            )
        ),
        oom_reduced=sum(1 for t in tasks if _completed_reduced(t)),
        poison_quarantined=sum(is_poison),
        innocents_quarantined=len(is_poison) - sum(is_poison),
    )


def _completed_reduced(task: TaskRecord) -> bool:
    if task.status is not TaskStatus.COMPLETED or behaviour_of(task.spec) is not Behaviour.OOM:
        return False
    final = batch_size(task, task.attempts[-1])
    return final is not None and final < int(task.spec.config["params"]["batch_size"])
