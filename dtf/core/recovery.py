"""What to do after a classified failure: a pure decision from the policy and the history.

How this works: a ladder is an ordered list of strategies, mildest first.
The failure type's ladder is used when the policy has one (the seeds check
their error-specific handlers first), otherwise the hardware class's ladder,
otherwise the CPU ladder. ``decide`` walks the ladder:

- a step already taken for this failure type (``history``) is not taken again;
- ``reduce_batch_size`` and ``reduce_precision`` stay available while they can
  still reduce (the task's current ``config`` says how far they went), so
  an OOM halves the batch 32 -> 16 -> 8 before it tries anything else;
- a step that cannot apply (batch size at the floor, no precision parameter,
  fall back to CPU while on CPU) is skipped, and the reason says so;
- when no step is left, or the attempt was the policy's last, the answer is
  ``Escalate`` with the story.

Modes: ``progressive`` takes the first step left; ``aggressive`` the last
(strongest) one, and reduces batch size and precision all the way at once;
``minimal`` does one delayed retry, then escalates. Backoff jitter is drawn
from a generator seeded by (task id, attempt), so a replay decides alike.
The policy itself (strategies, modes, ladders, limits) is
``dtf.core.recovery_policy``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from msgspec import Struct

from dtf.core.failures import FailureType
from dtf.core.model import HardwareClass
from dtf.core.recovery_policy import Ladder, RecoveryMode, RecoveryPolicy, Strategy

REDUCING_STEPS = frozenset({Strategy.REDUCE_BATCH_SIZE, Strategy.REDUCE_PRECISION})
PRECISION_DOWN = {"fp32": "fp16", "bf16": "int8", "fp16": "int8"}
BROWSER_CLASSES = frozenset({HardwareClass.WEBGPU, HardwareClass.WEBNN})


class PastRecovery(Struct, frozen=True):
    """A recovery already applied to this task: after which attempt, for what, how."""

    attempt: int
    failure_type: FailureType
    strategy: Strategy


class RecoveryDecision(Struct, frozen=True, tag="recover", omit_defaults=True):
    """Run another attempt, changed as said. ``config_patch`` updates the task's
    parameters; ``hardware_override`` replaces the hardware requirement."""

    strategy: Strategy
    reason: str
    ladder: str
    step: int
    delay_s: float = 0.0
    config_patch: dict[str, Any] = {}
    hardware_override: list[HardwareClass] | None = None
    avoid_worker: bool = False
    restart_browser: bool = False


class Escalate(Struct, frozen=True, tag="escalate", omit_defaults=True):
    """Stop retrying: the task fails with this reason, for a human to read.
    ``exhausted``: every step of the ladder was tried or could not apply."""

    reason: str
    exhausted: bool = False


@dataclass(frozen=True)
class _Context:
    policy: RecoveryPolicy
    task_id: str
    attempt_number: int
    hardware_class: HardwareClass
    config: Mapping[str, Any]
    required_hardware: Sequence[HardwareClass]

    @property
    def aggressive(self) -> bool:
        return self.policy.mode is RecoveryMode.AGGRESSIVE


@dataclass(frozen=True)
class _Change:
    detail: str
    delay_s: float = 0.0
    config_patch: dict[str, Any] = field(default_factory=dict)
    hardware_override: list[HardwareClass] | None = None
    avoid_worker: bool = False
    restart_browser: bool = False


def decide(
    policy: RecoveryPolicy,
    *,
    task_id: str,
    attempt_number: int,
    failure_type: FailureType,
    hardware_class: HardwareClass,
    history: Sequence[PastRecovery],
    config: Mapping[str, Any],
    required_hardware: Sequence[HardwareClass] = (),
) -> RecoveryDecision | Escalate:
    """The recovery after attempt ``attempt_number`` (1-based) failed with ``failure_type``."""
    context = _Context(policy, task_id, attempt_number, hardware_class, config, required_hardware)
    situation = f"{failure_type.label} on {hardware_class}"
    if attempt_number >= policy.max_attempts:
        return Escalate(
            f"{situation}: attempt {attempt_number} failed and the recovery policy allows "
            f"at most {policy.max_attempts} attempts; escalating"
        )
    if policy.mode is RecoveryMode.MINIMAL:
        return _minimal(context, situation, history)
    name, ladder = select_ladder(policy, failure_type, hardware_class)
    used = {past.strategy for past in history if past.failure_type is failure_type}
    return _walk(context, situation, name, ladder, used)


def select_ladder(
    policy: RecoveryPolicy, failure_type: FailureType, hardware_class: HardwareClass
) -> tuple[str, Ladder]:
    """The failure type's ladder wins over the hardware class's; CPU's is the last resort."""
    if failure_type in policy.failure_ladders:
        return failure_type.label, policy.failure_ladders[failure_type]
    if hardware_class in policy.hardware_ladders:
        return str(hardware_class), policy.hardware_ladders[hardware_class]
    return "cpu", policy.hardware_ladders.get(HardwareClass.CPU, ())


def _walk(
    context: _Context, situation: str, name: str, ladder: Ladder, used: set[Strategy]
) -> RecoveryDecision | Escalate:
    steps = list(enumerate(ladder, start=1))
    skipped: list[str] = []
    for step, strategy in reversed(steps) if context.aggressive else steps:
        if strategy in used and strategy not in REDUCING_STEPS:
            continue
        if strategy is Strategy.ESCALATE:
            return Escalate(f"{situation}: step {step} of the {name} ladder is to escalate")
        change = _STEPS[strategy](context)
        if isinstance(change, str):
            skipped.append(f"{strategy} ({change})")
            continue
        reason = f"{situation}: {change.detail} (step {step} of the {name} ladder)"
        return _decision(strategy, change, _with_skipped(reason, skipped), name, step)
    tried = ", ".join(sorted(used & set(ladder))) or "nothing"
    return Escalate(
        _with_skipped(f"{situation}: the {name} ladder is exhausted (tried {tried})", skipped)
        + "; escalating",
        exhausted=True,
    )


def _with_skipped(reason: str, skipped: list[str]) -> str:
    return f"{reason}; skipped {', '.join(skipped)}" if skipped else reason


def _decision(
    strategy: Strategy, change: _Change, reason: str, ladder: str, step: int
) -> RecoveryDecision:
    return RecoveryDecision(
        strategy=strategy,
        reason=reason,
        ladder=ladder,
        step=step,
        delay_s=change.delay_s,
        config_patch=change.config_patch,
        hardware_override=change.hardware_override,
        avoid_worker=change.avoid_worker,
        restart_browser=change.restart_browser,
    )


def _minimal(
    context: _Context, situation: str, history: Sequence[PastRecovery]
) -> RecoveryDecision | Escalate:
    if history:
        return Escalate(
            f"{situation}: minimal recovery allows one retry, used after attempt "
            f"{history[0].attempt}; escalating"
        )
    change = _delayed_retry(context)
    reason = f"{situation}: {change.detail} (minimal recovery: one retry)"
    return _decision(Strategy.DELAYED_RETRY, change, reason, "minimal", 1)


def backoff_delay_s(policy: RecoveryPolicy, task_id: str, attempt_number: int) -> float:
    """Exponential delay after ``attempt_number``, jittered by ±``policy.jitter``
    from a generator seeded by the task and attempt, capped at ``max_delay_s``."""
    base = policy.base_delay_s * policy.backoff_factor ** (attempt_number - 1)
    spread = random.Random(f"{task_id}:{attempt_number}").uniform(-policy.jitter, policy.jitter)
    return min(max(0.0, base * (1.0 + spread)), policy.max_delay_s)


def _immediate_retry(_context: _Context) -> _Change:
    return _Change("retry at once")


def _delayed_retry(context: _Context) -> _Change:
    delay_s = backoff_delay_s(context.policy, context.task_id, context.attempt_number)
    return _Change(f"retry after {delay_s:.1f}s", delay_s=delay_s)


def _different_worker(_context: _Context) -> _Change:
    return _Change("retry on a different worker", avoid_worker=True)


def _switch_hardware_class(context: _Context) -> _Change | str:
    """Another class the task accepts, else CPU (the seeds' fallback for every class)."""
    current = context.hardware_class
    others = [h for h in dict.fromkeys(context.required_hardware) if h is not current]
    if not others and current is not HardwareClass.CPU:
        others = [HardwareClass.CPU]
    if not others:
        return "no other hardware class to switch to"
    return _Change(f"switch hardware {current} -> {', '.join(others)}", hardware_override=others)


def _fallback_cpu(context: _Context) -> _Change | str:
    if context.hardware_class is HardwareClass.CPU:
        return "already on cpu"
    return _Change("fall back to cpu", hardware_override=[HardwareClass.CPU])


def _reduce_precision(context: _Context) -> _Change | str:
    precision = context.config.get("precision")
    if not isinstance(precision, str):
        return "the task has no precision parameter"
    lower = precision.lower()
    if lower not in PRECISION_DOWN:
        return f"precision {precision} cannot go lower"
    reduced = PRECISION_DOWN[lower]
    while context.aggressive and reduced in PRECISION_DOWN:
        reduced = PRECISION_DOWN[reduced]
    return _Change(f"precision {precision} -> {reduced}", config_patch={"precision": reduced})


def _reduce_batch_size(context: _Context) -> _Change | str:
    batch_size = context.config.get("batch_size")
    floor = context.policy.batch_size_floor
    if not isinstance(batch_size, int) or isinstance(batch_size, bool):
        return "the task has no integer batch_size parameter"
    if batch_size <= floor:
        return f"batch_size {batch_size} is at the floor {floor}"
    reduced = floor if context.aggressive else max(floor, batch_size // 2)
    return _Change(f"batch_size {batch_size} -> {reduced}", config_patch={"batch_size": reduced})


def _restart_browser(context: _Context) -> _Change | str:
    if context.hardware_class not in BROWSER_CLASSES:
        return f"{context.hardware_class} is not a browser"
    return _Change("restart the browser", restart_browser=True)


_STEPS: dict[Strategy, Callable[[_Context], _Change | str]] = {
    Strategy.IMMEDIATE_RETRY: _immediate_retry,
    Strategy.DELAYED_RETRY: _delayed_retry,
    Strategy.DIFFERENT_WORKER: _different_worker,
    Strategy.SWITCH_HARDWARE_CLASS: _switch_hardware_class,
    Strategy.REDUCE_PRECISION: _reduce_precision,
    Strategy.REDUCE_BATCH_SIZE: _reduce_batch_size,
    Strategy.FALLBACK_CPU: _fallback_cpu,
    Strategy.RESTART_BROWSER: _restart_browser,
}
