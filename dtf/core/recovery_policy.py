"""The recovery policy: the strategies, the modes, the ladders per hardware
class and per failure type, the attempt and backoff limits, and reading all
of it from a config mapping (``dtf coordinator --recovery-config``).

``dtf.core.recovery`` decides with it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, TypeVar

import msgspec
from msgspec import Meta, Struct

from dtf.core.failures import FailureType, invalid_config
from dtf.core.model import HardwareClass
from dtf.errors import InvalidRequest


class Strategy(enum.StrEnum):
    IMMEDIATE_RETRY = "immediate_retry"
    DELAYED_RETRY = "delayed_retry"
    DIFFERENT_WORKER = "different_worker"
    SWITCH_HARDWARE_CLASS = "switch_hardware_class"
    REDUCE_PRECISION = "reduce_precision"
    REDUCE_BATCH_SIZE = "reduce_batch_size"
    FALLBACK_CPU = "fallback_cpu"
    RESTART_BROWSER = "restart_browser"
    ESCALATE = "escalate"


class RecoveryMode(enum.StrEnum):
    PROGRESSIVE = "progressive"
    AGGRESSIVE = "aggressive"
    MINIMAL = "minimal"


S = Strategy
_GPU = (
    S.DELAYED_RETRY,
    S.DIFFERENT_WORKER,
    S.REDUCE_PRECISION,
    S.REDUCE_BATCH_SIZE,
    S.FALLBACK_CPU,
)
_BROWSER_FAILURE = (S.RESTART_BROWSER, S.DIFFERENT_WORKER, S.FALLBACK_CPU)

DEFAULT_HARDWARE_LADDERS: dict[HardwareClass, tuple[Strategy, ...]] = {
    HardwareClass.CPU: (S.DELAYED_RETRY, S.DIFFERENT_WORKER, S.REDUCE_BATCH_SIZE),
    HardwareClass.CUDA: _GPU,
    HardwareClass.ROCM: _GPU,
    HardwareClass.MPS: _GPU,
    HardwareClass.TPU: (S.DELAYED_RETRY, S.DIFFERENT_WORKER, S.REDUCE_BATCH_SIZE, S.FALLBACK_CPU),
    HardwareClass.NPU: (S.DELAYED_RETRY, S.DIFFERENT_WORKER, S.REDUCE_PRECISION, S.FALLBACK_CPU),
    HardwareClass.WEBGPU: (
        S.RESTART_BROWSER,
        S.DELAYED_RETRY,
        S.DIFFERENT_WORKER,
        S.REDUCE_PRECISION,
        S.FALLBACK_CPU,
    ),
    HardwareClass.WEBNN: (S.RESTART_BROWSER, S.DELAYED_RETRY, S.DIFFERENT_WORKER, S.FALLBACK_CPU),
}
DEFAULT_FAILURE_LADDERS: dict[FailureType, tuple[Strategy, ...]] = {
    FailureType.RESOURCE_EXHAUSTION: (
        S.REDUCE_BATCH_SIZE,
        S.REDUCE_PRECISION,
        S.DIFFERENT_WORKER,
        S.FALLBACK_CPU,
    ),
    FailureType.CUDA_ERROR: (S.DIFFERENT_WORKER, S.DELAYED_RETRY, S.FALLBACK_CPU),
    FailureType.BROWSER_CRASH: _BROWSER_FAILURE,
    FailureType.WEBGPU_CONTEXT_LOST: _BROWSER_FAILURE,
}
GPU_ALIAS = "gpu"
GPU_CLASSES = (HardwareClass.CUDA, HardwareClass.ROCM, HardwareClass.MPS)

Ladder = tuple[Strategy, ...]
_E = TypeVar("_E", bound=enum.StrEnum)
NonNegativeFloat = Annotated[float, Meta(ge=0)]


class RecoveryPolicy(Struct, frozen=True, forbid_unknown_fields=True):
    """Defaults are the seeds': 3 retries (4 attempts), 2 s base delay doubling
    to at most 60 s with ±20 % jitter, their ladders; batch size floor 1."""

    mode: RecoveryMode = RecoveryMode.PROGRESSIVE
    hardware_ladders: dict[HardwareClass, Ladder] = msgspec.field(
        default_factory=lambda: dict(DEFAULT_HARDWARE_LADDERS)
    )
    failure_ladders: dict[FailureType, Ladder] = msgspec.field(
        default_factory=lambda: dict(DEFAULT_FAILURE_LADDERS)
    )
    max_attempts: Annotated[int, Meta(ge=1, le=100)] = 4
    batch_size_floor: Annotated[int, Meta(ge=1)] = 1
    base_delay_s: NonNegativeFloat = 2.0
    backoff_factor: Annotated[float, Meta(ge=1.0, le=10.0)] = 2.0
    max_delay_s: NonNegativeFloat = 60.0
    jitter: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.2

    def __post_init__(self) -> None:
        if not isinstance(self.mode, RecoveryMode):
            raise TypeError(f"mode must be a RecoveryMode, got {self.mode!r}")


class _PolicyConfig(RecoveryPolicy, frozen=True, forbid_unknown_fields=True):
    """The config file's shape: a ladder given here replaces the default of
    its key only, and ``gpu`` stands for cuda, rocm and mps."""

    hardware_ladders: dict[str, Any] = {}  # type: ignore[assignment]
    failure_ladders: dict[str, Any] = {}  # type: ignore[assignment]


def policy_from_config(data: Mapping[str, Any]) -> RecoveryPolicy:
    """A policy from a YAML-shaped mapping; errors raise ``InvalidRequest``
    naming the field, e.g. ``$.hardware_ladders.gpu[2]``."""
    try:
        raw = msgspec.convert(data, _PolicyConfig)
    except msgspec.ValidationError as exc:
        raise invalid_config(exc, "recovery config") from None
    fields = {name: getattr(raw, name) for name in RecoveryPolicy.__struct_fields__}
    fields["hardware_ladders"] = {**DEFAULT_HARDWARE_LADDERS, **_hardware_ladders(raw)}
    fields["failure_ladders"] = {**DEFAULT_FAILURE_LADDERS, **_failure_ladders(raw)}
    return RecoveryPolicy(**fields)


def _hardware_ladders(raw: _PolicyConfig) -> dict[HardwareClass, Ladder]:
    ladders: dict[HardwareClass, Ladder] = {}
    for key, value in raw.hardware_ladders.items():
        where = f"$.hardware_ladders.{key}"
        ladder = _ladder(value, where)
        if key == GPU_ALIAS:
            ladders.update(dict.fromkeys(GPU_CLASSES, ladder))
        else:
            ladders[_key(HardwareClass, key, where, extra=[GPU_ALIAS])] = ladder
    return ladders


def _failure_ladders(raw: _PolicyConfig) -> dict[FailureType, Ladder]:
    return {
        _key(FailureType, key, f"$.failure_ladders.{key}"): _ladder(
            value, f"$.failure_ladders.{key}"
        )
        for key, value in raw.failure_ladders.items()
    }


def _ladder(value: Any, where: str) -> Ladder:
    try:
        return msgspec.convert(value, Ladder)
    except msgspec.ValidationError as exc:
        raise invalid_config(exc, "recovery config", path=where) from None


def _key(kind: type[_E], key: str, where: str, extra: Sequence[str] = ()) -> _E:
    try:
        return kind(key)
    except ValueError:
        known = ", ".join([*extra, *kind])
        raise InvalidRequest(
            f"recovery config: {key!r} is not a {kind.__name__}; use one of {known}", field=where
        ) from None
