"""Recovery decisions: the seeds' ladders, each step's effect, modes, config, and termination."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dtf.core.failures import FailureType
from dtf.core.model import HardwareClass
from dtf.core.recovery import (
    PRECISION_DOWN,
    Escalate,
    PastRecovery,
    RecoveryDecision,
    backoff_delay_s,
    decide,
)
from dtf.core.recovery_policy import (
    DEFAULT_FAILURE_LADDERS,
    DEFAULT_HARDWARE_LADDERS,
    RecoveryMode,
    RecoveryPolicy,
    Strategy,
    policy_from_config,
)
from dtf.errors import InvalidRequest

S = Strategy
F = FailureType
H = HardwareClass
ESCALATED = "escalate"
LONG = RecoveryPolicy(max_attempts=100)


def walk(
    policy: RecoveryPolicy,
    failure_type: FailureType,
    hardware: HardwareClass,
    config: dict[str, Any],
    *,
    follow_hardware: bool = False,
) -> list[str]:
    """Fail with ``failure_type`` after every attempt and list what recovery did."""
    history: list[PastRecovery] = []
    taken: list[str] = []
    for attempt in range(1, policy.max_attempts + 1):
        decision = decide(
            policy,
            task_id="t",
            attempt_number=attempt,
            failure_type=failure_type,
            hardware_class=hardware,
            history=history,
            config=config,
        )
        if isinstance(decision, Escalate):
            return taken
        taken.append(decision.strategy.value)
        config = {**config, **decision.config_patch}
        history.append(PastRecovery(attempt, failure_type, decision.strategy))
        if follow_hardware and decision.hardware_override:
            hardware = decision.hardware_override[0]
    raise AssertionError(f"no escalation within {policy.max_attempts} attempts: {taken}")


SMALL = {"batch_size": 2, "precision": "fp16"}
AGGRESSIVE = RecoveryPolicy(mode=RecoveryMode.AGGRESSIVE, max_attempts=100)
MINIMAL = RecoveryPolicy(mode=RecoveryMode.MINIMAL, max_attempts=100)

LADDERS = [
    # CPU ladder (seeds): delayed retry, different worker, reduce batch size
    (LONG, F.SOFTWARE_ERROR, H.CPU, ["delayed_retry", "different_worker", "reduce_batch_size"]),
    # GPU ladder (seeds), for cuda
    (LONG, F.SOFTWARE_ERROR, H.CUDA, ["delayed_retry", "different_worker", "reduce_precision", "reduce_batch_size", "fallback_cpu"]),
    # ... and the same for rocm
    (LONG, F.TIMEOUT, H.ROCM, ["delayed_retry", "different_worker", "reduce_precision", "reduce_batch_size", "fallback_cpu"]),
    # TPU ladder (seeds)
    (LONG, F.TIMEOUT, H.TPU, ["delayed_retry", "different_worker", "reduce_batch_size", "fallback_cpu"]),
    # NPU ladder (seeds' code)
    (LONG, F.HARDWARE_ERROR, H.NPU, ["delayed_retry", "different_worker", "reduce_precision", "fallback_cpu"]),
    # WebGPU ladder (seeds)
    (LONG, F.COMMUNICATION_ERROR, H.WEBGPU, ["restart_browser", "delayed_retry", "different_worker", "reduce_precision", "fallback_cpu"]),
    # WebNN ladder (seeds): no precision step
    (LONG, F.WORKER_CRASH, H.WEBNN, ["restart_browser", "delayed_retry", "different_worker", "fallback_cpu"]),
    # OOM ladder (seeds) wins over the GPU ladder
    (LONG, F.RESOURCE_EXHAUSTION, H.CUDA, ["reduce_batch_size", "reduce_precision", "different_worker", "fallback_cpu"]),
    # OOM ladder on CPU: the fall back to CPU is skipped
    (LONG, F.RESOURCE_EXHAUSTION, H.CPU, ["reduce_batch_size", "reduce_precision", "different_worker"]),
    # CUDA error ladder (seeds' guide and handler)
    (LONG, F.CUDA_ERROR, H.CUDA, ["different_worker", "delayed_retry", "fallback_cpu"]),
    # browser crash ladder
    (LONG, F.BROWSER_CRASH, H.WEBGPU, ["restart_browser", "different_worker", "fallback_cpu"]),
    # context lost ladder
    (LONG, F.WEBGPU_CONTEXT_LOST, H.WEBNN, ["restart_browser", "different_worker", "fallback_cpu"]),
    # a browser crash reported from a CPU worker: only the worker change applies
    (LONG, F.BROWSER_CRASH, H.CPU, ["different_worker"]),
    # an unknown failure uses the hardware ladder
    (LONG, F.UNKNOWN, H.CPU, ["delayed_retry", "different_worker", "reduce_batch_size"]),
    # aggressive: strongest step first, and reductions go all the way
    (AGGRESSIVE, F.RESOURCE_EXHAUSTION, H.CUDA, ["fallback_cpu", "different_worker", "reduce_precision", "reduce_batch_size"]),
    # aggressive on the CPU ladder
    (AGGRESSIVE, F.SOFTWARE_ERROR, H.CPU, ["reduce_batch_size", "different_worker", "delayed_retry"]),
    # minimal: one delayed retry, whatever the failure
    (MINIMAL, F.RESOURCE_EXHAUSTION, H.CUDA, ["delayed_retry"]),
    # the seeds' retry limit: 3 retries, then escalation
    (RecoveryPolicy(), F.SOFTWARE_ERROR, H.CUDA, ["delayed_retry", "different_worker", "reduce_precision"]),
]  # fmt: skip


@pytest.mark.parametrize(("policy", "failure_type", "hardware", "expected"), LADDERS)
def test_default_ladders(
    policy: RecoveryPolicy, failure_type: FailureType, hardware: HardwareClass, expected: list[str]
) -> None:
    assert walk(policy, failure_type, hardware, dict(SMALL)) == expected


def test_oom_benchmark_on_cpu_halves_its_batch_twice() -> None:
    """The issue's example: batch_size 32 on cpu, OOM twice -> 16, then 8."""
    policy = RecoveryPolicy()
    first = decide(
        policy,
        task_id="bench",
        attempt_number=1,
        failure_type=F.RESOURCE_EXHAUSTION,
        hardware_class=H.CPU,
        history=[],
        config={"batch_size": 32},
    )
    assert isinstance(first, RecoveryDecision)
    assert first.config_patch == {"batch_size": 16}
    assert first.reason == "OOM on cpu: batch_size 32 -> 16 (step 1 of the OOM ladder)"
    second = decide(
        policy,
        task_id="bench",
        attempt_number=2,
        failure_type=F.RESOURCE_EXHAUSTION,
        hardware_class=H.CPU,
        history=[PastRecovery(1, F.RESOURCE_EXHAUSTION, first.strategy)],
        config={"batch_size": 16},
    )
    assert isinstance(second, RecoveryDecision)
    assert second.config_patch == {"batch_size": 8}
    assert (second.strategy, second.delay_s, second.hardware_override) == (
        S.REDUCE_BATCH_SIZE,
        0.0,
        None,
    )


def test_reductions_repeat_before_the_next_step() -> None:
    expected = ["reduce_batch_size"] * 5 + ["reduce_precision", "reduce_precision"]
    walked = walk(LONG, F.RESOURCE_EXHAUSTION, H.CUDA, {"batch_size": 32, "precision": "fp32"})
    assert walked == [*expected, "different_worker", "fallback_cpu"]


def test_fallback_to_cpu_then_the_cpu_ladder_finishes_the_story() -> None:
    walked = walk(LONG, F.TIMEOUT, H.TPU, {"batch_size": 2}, follow_hardware=True)
    assert walked == ["delayed_retry", "different_worker", "reduce_batch_size", "fallback_cpu"]


def one_step(strategy: Strategy, **policy_fields: Any) -> RecoveryPolicy:
    """A policy whose timeout ladder is the one step under test."""
    return RecoveryPolicy(failure_ladders={F.TIMEOUT: (strategy,)}, **policy_fields)


def first_decision(
    policy: RecoveryPolicy,
    config: dict[str, Any],
    hardware: HardwareClass = H.CPU,
    required: list[HardwareClass] | None = None,
) -> RecoveryDecision | Escalate:
    return decide(
        policy,
        task_id="t",
        attempt_number=1,
        failure_type=F.TIMEOUT,
        hardware_class=hardware,
        history=[],
        config=config,
        required_hardware=required or [],
    )


STEP_EFFECTS: list[tuple[RecoveryPolicy, dict[str, Any], HardwareClass, list[HardwareClass], dict[str, Any] | str]] = [
    # halve the batch
    (one_step(S.REDUCE_BATCH_SIZE), {"batch_size": 32}, H.CPU, [], {"config_patch": {"batch_size": 16}}),
    # an odd batch rounds down
    (one_step(S.REDUCE_BATCH_SIZE), {"batch_size": 5}, H.CPU, [], {"config_patch": {"batch_size": 2}}),
    # never below the floor
    (one_step(S.REDUCE_BATCH_SIZE, batch_size_floor=8), {"batch_size": 12}, H.CPU, [], {"config_patch": {"batch_size": 8}}),
    # at the floor: skipped, so the ladder is exhausted
    (one_step(S.REDUCE_BATCH_SIZE, batch_size_floor=8), {"batch_size": 8}, H.CPU, [], "batch_size 8 is at the floor 8"),
    # below the floor already: never raised
    (one_step(S.REDUCE_BATCH_SIZE, batch_size_floor=8), {"batch_size": 4}, H.CPU, [], "batch_size 4 is at the floor 8"),
    # no batch size parameter
    (one_step(S.REDUCE_BATCH_SIZE), {"n": 1}, H.CPU, [], "no integer batch_size parameter"),
    # a batch size given as text is not guessed at
    (one_step(S.REDUCE_BATCH_SIZE), {"batch_size": "32"}, H.CPU, [], "no integer batch_size parameter"),
    # a boolean is not a batch size
    (one_step(S.REDUCE_BATCH_SIZE), {"batch_size": True}, H.CPU, [], "no integer batch_size parameter"),
    # aggressive goes straight to the floor
    (one_step(S.REDUCE_BATCH_SIZE, mode=RecoveryMode.AGGRESSIVE, batch_size_floor=4), {"batch_size": 64}, H.CPU, [], {"config_patch": {"batch_size": 4}}),
    # fp32 -> fp16
    (one_step(S.REDUCE_PRECISION), {"precision": "fp32"}, H.CUDA, [], {"config_patch": {"precision": "fp16"}}),
    # case is ignored
    (one_step(S.REDUCE_PRECISION), {"precision": "FP32"}, H.CUDA, [], {"config_patch": {"precision": "fp16"}}),
    # fp16 -> int8
    (one_step(S.REDUCE_PRECISION), {"precision": "fp16"}, H.CUDA, [], {"config_patch": {"precision": "int8"}}),
    # bf16 -> int8 (seeds)
    (one_step(S.REDUCE_PRECISION), {"precision": "bf16"}, H.CUDA, [], {"config_patch": {"precision": "int8"}}),
    # int8 is the bottom
    (one_step(S.REDUCE_PRECISION), {"precision": "int8"}, H.CUDA, [], "precision int8 cannot go lower"),
    # an unknown precision is left alone
    (one_step(S.REDUCE_PRECISION), {"precision": "tf32"}, H.CUDA, [], "precision tf32 cannot go lower"),
    # no precision parameter: not invented
    (one_step(S.REDUCE_PRECISION), {"batch_size": 4}, H.CUDA, [], "no precision parameter"),
    # aggressive goes straight to int8
    (one_step(S.REDUCE_PRECISION, mode=RecoveryMode.AGGRESSIVE), {"precision": "fp32"}, H.CUDA, [], {"config_patch": {"precision": "int8"}}),
    # fall back to CPU changes the hardware requirement
    (one_step(S.FALLBACK_CPU), {}, H.CUDA, [H.CUDA], {"hardware_override": [H.CPU]}),
    # already on CPU
    (one_step(S.FALLBACK_CPU), {}, H.CPU, [], "already on cpu"),
    # switching hardware prefers another class the task accepts
    (one_step(S.SWITCH_HARDWARE_CLASS), {}, H.CUDA, [H.CUDA, H.ROCM, H.CUDA], {"hardware_override": [H.ROCM]}),
    # ... else CPU, the seeds' fallback for every class
    (one_step(S.SWITCH_HARDWARE_CLASS), {}, H.TPU, [H.TPU], {"hardware_override": [H.CPU]}),
    # ... and a CPU task may move to an accelerator it accepts
    (one_step(S.SWITCH_HARDWARE_CLASS), {}, H.CPU, [H.CPU, H.CUDA], {"hardware_override": [H.CUDA]}),
    # a CPU-only task has nowhere to switch to
    (one_step(S.SWITCH_HARDWARE_CLASS), {}, H.CPU, [H.CPU], "no other hardware class to switch to"),
    # a different worker is asked for
    (one_step(S.DIFFERENT_WORKER), {}, H.CPU, [], {"avoid_worker": True, "delay_s": 0.0}),
    # an immediate retry waits for nothing and avoids no one
    (one_step(S.IMMEDIATE_RETRY), {}, H.CPU, [], {"avoid_worker": False, "delay_s": 0.0}),
    # restart the browser on a browser worker
    (one_step(S.RESTART_BROWSER), {}, H.WEBGPU, [], {"restart_browser": True}),
    # a CPU worker has no browser to restart
    (one_step(S.RESTART_BROWSER), {}, H.CPU, [], "cpu is not a browser"),
    # an escalate step in a configured ladder escalates
    (one_step(S.ESCALATE), {}, H.CPU, [], "step 1 of the timeout ladder is to escalate"),
]  # fmt: skip


@pytest.mark.parametrize(("policy", "config", "hardware", "required", "expected"), STEP_EFFECTS)
def test_step_effects(
    policy: RecoveryPolicy,
    config: dict[str, Any],
    hardware: HardwareClass,
    required: list[HardwareClass],
    expected: dict[str, Any] | str,
) -> None:
    decision = first_decision(policy, config, hardware, required)
    if isinstance(expected, str):
        assert isinstance(decision, Escalate)
        assert expected in decision.reason
        return
    assert isinstance(decision, RecoveryDecision)
    assert {name: getattr(decision, name) for name in expected} == expected


REASONS = [
    # a step that cannot apply is skipped, and the reason says so
    (
        dict(failure_type=F.RESOURCE_EXHAUSTION, hardware_class=H.CPU, config={"batch_size": 1}),
        "OOM on cpu: retry on a different worker (step 3 of the OOM ladder); skipped "
        "reduce_batch_size (batch_size 1 is at the floor 1), "
        "reduce_precision (the task has no precision parameter)",
    ),
    # the last allowed attempt escalates, whatever the ladder
    (
        dict(failure_type=F.CUDA_ERROR, hardware_class=H.CUDA, attempt_number=4),
        "CUDA error on cuda: attempt 4 failed and the recovery policy allows at most 4 "
        "attempts; escalating",
    ),
    # an exhausted ladder escalates with what was tried and skipped
    (
        dict(
            failure_type=F.CUDA_ERROR,
            hardware_class=H.CPU,
            attempt_number=2,
            history=[PastRecovery(1, F.CUDA_ERROR, S.DIFFERENT_WORKER), PastRecovery(1, F.CUDA_ERROR, S.DELAYED_RETRY)],
        ),
        "CUDA error on cpu: the CUDA error ladder is exhausted (tried delayed_retry, "
        "different_worker); skipped fallback_cpu (already on cpu); escalating",
    ),
    # steps taken for another failure type do not count
    (
        dict(
            failure_type=F.CUDA_ERROR,
            hardware_class=H.CUDA,
            attempt_number=2,
            history=[PastRecovery(1, F.TIMEOUT, S.DIFFERENT_WORKER)],
        ),
        "CUDA error on cuda: retry on a different worker (step 1 of the CUDA error ladder)",
    ),
    # minimal mode's second failure
    (
        dict(
            failure_type=F.TIMEOUT,
            hardware_class=H.CPU,
            attempt_number=2,
            history=[PastRecovery(1, F.TIMEOUT, S.DELAYED_RETRY)],
            policy=MINIMAL,
        ),
        "timeout on cpu: minimal recovery allows one retry, used after attempt 1; escalating",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("arguments", "reason"), REASONS)
def test_reasons_tell_the_story(arguments: dict[str, Any], reason: str) -> None:
    call: dict[str, Any] = {"task_id": "t", "attempt_number": 1, "history": [], "config": {}}
    call.update(arguments)
    decision = decide(call.pop("policy", RecoveryPolicy()), **call)
    assert decision.reason == reason


DELAYS = [
    # first retry: the base delay
    (RecoveryPolicy(base_delay_s=2.0, jitter=0.0), 1, 2.0),
    # doubled after the second attempt
    (RecoveryPolicy(base_delay_s=2.0, jitter=0.0), 2, 4.0),
    # another factor
    (RecoveryPolicy(base_delay_s=1.0, backoff_factor=3.0, jitter=0.0), 3, 9.0),
    # capped
    (RecoveryPolicy(base_delay_s=10.0, max_delay_s=15.0, jitter=0.0), 3, 15.0),
]


@pytest.mark.parametrize(("policy", "attempt", "expected"), DELAYS)
def test_backoff(policy: RecoveryPolicy, attempt: int, expected: float) -> None:
    assert backoff_delay_s(policy, "t", attempt) == pytest.approx(expected)


def test_delayed_retry_carries_the_backoff() -> None:
    policy = RecoveryPolicy(max_attempts=10)
    decision = decide(
        policy,
        task_id="job-7",
        attempt_number=1,
        failure_type=F.TIMEOUT,
        hardware_class=H.CPU,
        history=[],
        config={},
    )
    assert isinstance(decision, RecoveryDecision)
    assert decision.strategy is S.DELAYED_RETRY
    assert decision.delay_s == backoff_delay_s(policy, "job-7", 1)
    assert (
        decision.reason
        == f"timeout on cpu: retry after {decision.delay_s:.1f}s (step 1 of the cpu ladder)"
    )


CONFIGS: list[tuple[dict[str, Any], dict[str, Any]]] = [
    # nothing given: the seeds' defaults
    ({}, {"mode": RecoveryMode.PROGRESSIVE, "max_attempts": 4, "base_delay_s": 2.0, "max_delay_s": 60.0, "jitter": 0.2}),
    # scalars
    ({"mode": "minimal", "max_attempts": 6, "batch_size_floor": 4}, {"mode": RecoveryMode.MINIMAL, "max_attempts": 6, "batch_size_floor": 4}),
]  # fmt: skip


@pytest.mark.parametrize(("config", "expected"), CONFIGS)
def test_policy_from_config(config: dict[str, Any], expected: dict[str, Any]) -> None:
    policy = policy_from_config(config)
    assert {name: getattr(policy, name) for name in expected} == expected


def test_configured_ladders_replace_only_their_keys() -> None:
    policy = policy_from_config(
        {
            "hardware_ladders": {"gpu": ["fallback_cpu"], "tpu": []},
            "failure_ladders": {"timeout": ["immediate_retry", "escalate"]},
        }
    )
    for gpu in (H.CUDA, H.ROCM, H.MPS):
        assert policy.hardware_ladders[gpu] == (S.FALLBACK_CPU,)
    assert policy.hardware_ladders[H.TPU] == ()
    assert policy.hardware_ladders[H.CPU] == DEFAULT_HARDWARE_LADDERS[H.CPU]
    assert policy.failure_ladders[F.TIMEOUT] == (S.IMMEDIATE_RETRY, S.ESCALATE)
    assert policy.failure_ladders[F.CUDA_ERROR] == DEFAULT_FAILURE_LADDERS[F.CUDA_ERROR]


BAD_CONFIGS: list[tuple[Any, str]] = [
    # an unknown mode
    ({"mode": "heroic"}, "$.mode"),
    # a typo in a key is refused
    ({"max_attempt": 3}, "$.max_attempt"),
    # out of range
    ({"max_attempts": 0}, "$.max_attempts"),
    # jitter above 1
    ({"jitter": 1.5}, "$.jitter"),
    # an unknown hardware class
    ({"hardware_ladders": {"xpu": []}}, "$.hardware_ladders.xpu"),
    # an unknown strategy, named by position
    ({"hardware_ladders": {"gpu": ["delayed_retry", "pray"]}}, "$.hardware_ladders.gpu[1]"),
    # an unknown failure type
    ({"failure_ladders": {"oom": []}}, "$.failure_ladders.oom"),
    # a ladder must be a list
    ({"failure_ladders": {"timeout": "delayed_retry"}}, "$.failure_ladders.timeout"),
    # not a mapping at all
    (["progressive"], "$"),
]


@pytest.mark.parametrize(("config", "field"), BAD_CONFIGS)
def test_bad_config_names_the_field(config: Any, field: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        policy_from_config(config)
    assert raised.value.field == field


def test_policy_and_decisions_encode() -> None:
    policy = RecoveryPolicy()
    assert msgspec.json.decode(msgspec.json.encode(policy), type=RecoveryPolicy) == policy
    decision = first_decision(one_step(S.REDUCE_BATCH_SIZE), {"batch_size": 8})
    for value in (decision, Escalate("because")):
        encoded = msgspec.json.encode(value)
        assert msgspec.json.decode(encoded, type=RecoveryDecision | Escalate) == value


# -- properties -----------------------------------------------------------------

ladders = st.lists(st.sampled_from(Strategy), max_size=8).map(tuple)
policies = st.builds(
    RecoveryPolicy,
    mode=st.sampled_from(RecoveryMode),
    hardware_ladders=st.dictionaries(st.sampled_from(HardwareClass), ladders).map(
        lambda custom: {**DEFAULT_HARDWARE_LADDERS, **custom}
    ),
    failure_ladders=st.dictionaries(st.sampled_from(FailureType), ladders).map(
        lambda custom: {**DEFAULT_FAILURE_LADDERS, **custom}
    ),
    max_attempts=st.just(100),
    batch_size_floor=st.integers(1, 16),
    jitter=st.floats(0.0, 1.0),
)
configs = st.fixed_dictionaries(
    {},
    optional={
        "batch_size": st.integers(0, 24) | st.integers(0, 1024),
        "precision": st.sampled_from(["fp32", "bf16", "fp16", "int8", "tf32"]),
    },
)
PRECISION_RANK = {"fp32": 3, "bf16": 2, "fp16": 2, "int8": 1}
NON_REDUCING = len(Strategy) - 3  # every step but the two reductions and escalate


@settings(max_examples=150)
@given(
    policy=policies,
    failures=st.lists(st.sampled_from(FailureType), min_size=1, max_size=100),
    hardware=st.sampled_from(HardwareClass),
    required=st.lists(st.sampled_from(HardwareClass), max_size=3),
    config=configs,
)
def test_every_ladder_ends(
    policy: RecoveryPolicy,
    failures: list[FailureType],
    hardware: HardwareClass,
    required: list[HardwareClass],
    config: dict[str, Any],
) -> None:
    """Escalation comes within a bound set by the ladders alone, not the attempt cap:
    each failure type takes each step once, and the reductions run out."""
    halvings = math.ceil(math.log2(max(config.get("batch_size", 1), 1))) + 1
    bound = len(FailureType) * NON_REDUCING + halvings + len(PRECISION_DOWN)
    assert bound < policy.max_attempts
    history: list[PastRecovery] = []
    for attempt in range(1, bound + 2):
        failure_type = failures[attempt % len(failures)]
        decision = decide(
            policy,
            task_id="t",
            attempt_number=attempt,
            failure_type=failure_type,
            hardware_class=hardware,
            history=history,
            config=config,
            required_hardware=required,
        )
        if isinstance(decision, Escalate):
            return
        check_reductions(policy, config, decision)
        config = {**config, **decision.config_patch}
        hardware = decision.hardware_override[0] if decision.hardware_override else hardware
        history.append(PastRecovery(attempt, failure_type, decision.strategy))
    raise AssertionError(f"no escalation after {bound + 1} attempts")


def check_reductions(
    policy: RecoveryPolicy, config: dict[str, Any], decision: RecoveryDecision
) -> None:
    """Batch size only shrinks and never below the floor; precision only goes down."""
    if "batch_size" in decision.config_patch:
        reduced = decision.config_patch["batch_size"]
        assert policy.batch_size_floor <= reduced < config["batch_size"]
    if "precision" in decision.config_patch:
        old, new = config["precision"].lower(), decision.config_patch["precision"]
        assert PRECISION_RANK[new] < PRECISION_RANK[old]
    assert 0.0 <= decision.delay_s <= policy.max_delay_s


history_entries = st.builds(
    PastRecovery,
    attempt=st.integers(1, 10),
    failure_type=st.sampled_from(FailureType),
    strategy=st.sampled_from(Strategy),
)


@given(
    policy=policies,
    attempt=st.integers(1, 120),
    failure_type=st.sampled_from(FailureType),
    hardware=st.sampled_from(HardwareClass),
    history=st.lists(history_entries, max_size=8),
    config=configs,
)
def test_same_inputs_same_decision(
    policy: RecoveryPolicy,
    attempt: int,
    failure_type: FailureType,
    hardware: HardwareClass,
    history: list[PastRecovery],
    config: dict[str, Any],
) -> None:
    arguments: dict[str, Any] = dict(
        task_id="task-1",
        attempt_number=attempt,
        failure_type=failure_type,
        hardware_class=hardware,
        history=history,
        config=config,
    )
    first = decide(policy, **arguments)
    assert first == decide(policy, **arguments)
    if attempt >= policy.max_attempts:
        assert isinstance(first, Escalate)
    if isinstance(first, RecoveryDecision):
        check_reductions(policy, config, first)
