"""The task format users submit and the capabilities workers advertise.

These are the wire and journal types: msgspec structs that reject unknown
fields and wrong types with a message naming the field (``at `$.priority```).
They carry no behaviour beyond validation; the state machine owns the records
built from them (see ``records.py``).
"""

from __future__ import annotations

import enum
from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct

TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
TaskId = Annotated[str, Meta(pattern=TASK_ID_PATTERN, description="Task id chosen by the client")]
NonNegativeFloat = Annotated[float, Meta(ge=0)]
PositiveFloat = Annotated[float, Meta(gt=0)]
LabelMap = dict[
    Annotated[str, Meta(min_length=1, max_length=128)], Annotated[str, Meta(max_length=256)]
]


class HardwareClass(enum.StrEnum):
    CPU = "cpu"
    CUDA = "cuda"
    ROCM = "rocm"
    MPS = "mps"
    TPU = "tpu"
    NPU = "npu"
    WEBGPU = "webgpu"
    WEBNN = "webnn"


class TaskType(enum.StrEnum):
    COMMAND = "command"
    TEST = "test"
    BENCHMARK = "benchmark"


class BrowserRequirement(Struct, forbid_unknown_fields=True, frozen=True):
    """A browser by name with an optional major-version range (inclusive)."""

    name: Annotated[str, Meta(min_length=1)]
    min_version: Annotated[int, Meta(ge=0)] | None = None
    max_version: Annotated[int, Meta(ge=0)] | None = None


class RequirementSet(Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True):
    """One set of constraints; a worker must satisfy all of them.

    ``hardware`` is any-of: a worker with any listed class qualifies.
    Numeric fields are minimums or maximums; ``labels`` must match exactly.
    """

    hardware: list[HardwareClass] = []
    min_memory_gb: NonNegativeFloat | None = None
    max_memory_gb: NonNegativeFloat | None = None
    min_cpu_count: Annotated[int, Meta(ge=1)] | None = None
    min_cuda_compute: NonNegativeFloat | None = None
    max_cuda_compute: NonNegativeFloat | None = None
    min_gpu_memory_gb: NonNegativeFloat | None = None
    gpu_model: str | None = None
    browser: BrowserRequirement | None = None
    labels: LabelMap = {}
    worker_ids: list[str] = []


# A Requirements' own fields follow those it inherits, so its first values are its primary set.
_REQUIREMENT_SET_FIELDS = len(RequirementSet.__struct_fields__)


class Requirements(RequirementSet, frozen=True, omit_defaults=True):
    """The primary requirement set plus ordered fallbacks.

    A task waits ``fallback_after_seconds`` for a worker matching the current
    set, then moves on to the next fallback.
    """

    fallbacks: list[RequirementSet] = []
    fallback_after_seconds: PositiveFloat = 60.0

    def stage(self, index: int) -> RequirementSet:
        if index == 0:
            return RequirementSet(*msgspec.structs.astuple(self)[:_REQUIREMENT_SET_FIELDS])
        return self.fallbacks[index - 1]

    @property
    def stage_count(self) -> int:
        return 1 + len(self.fallbacks)


class RetryPolicy(Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True):
    max_retries: Annotated[int, Meta(ge=0, le=100)] = 3
    retry_delay_seconds: NonNegativeFloat = 1.0
    backoff_factor: Annotated[float, Meta(ge=1.0, le=10.0)] = 2.0
    max_delay_seconds: NonNegativeFloat = 300.0
    jitter: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.1
    retry_on_nonzero_exit: bool = False


class CommandConfig(Struct, forbid_unknown_fields=True, frozen=True):
    """``command`` is run by ``/bin/sh -c`` when a string, exec'd directly when a list."""

    command: str | Annotated[list[str], Meta(min_length=1)]
    cwd: str | None = None
    env: dict[str, str] = {}


class TestConfig(Struct, forbid_unknown_fields=True, frozen=True):
    """A pytest file: by path on the worker, or shipped inline as ``source``."""

    __test__ = False

    path: Annotated[str, Meta(min_length=1)]
    args: list[str] = []
    source: str | None = None
    cwd: str | None = None
    env: dict[str, str] = {}


class BenchmarkConfig(Struct, forbid_unknown_fields=True, frozen=True):
    """A Python entry point ``module:function`` called with ``params``; returns metrics."""

    entry_point: Annotated[str, Meta(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")]
    params: dict[str, Any] = {}
    python_path: list[str] = []
    cwd: str | None = None
    env: dict[str, str] = {}


CONFIG_TYPES: dict[TaskType, type[Struct]] = {
    TaskType.COMMAND: CommandConfig,
    TaskType.TEST: TestConfig,
    TaskType.BENCHMARK: BenchmarkConfig,
}


class TaskSpec(Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True):
    """What a client submits. Validated at the edge, journaled as is."""

    type: TaskType
    config: dict[str, Any]
    id: TaskId | None = None
    idempotency_key: Annotated[str, Meta(min_length=1, max_length=256)] | None = None
    name: Annotated[str, Meta(max_length=256)] | None = None
    priority: Annotated[int, Meta(ge=-1000, le=1000)] = 5
    requirements: Requirements = Requirements()
    timeout_seconds: PositiveFloat = 3600.0
    retry_policy: RetryPolicy = RetryPolicy()
    dependencies: list[TaskId] = []
    labels: LabelMap = {}


class GpuInfo(Struct, frozen=True, omit_defaults=True):
    vendor: str
    model: str
    memory_gb: float = 0.0
    compute_capability: float | None = None
    index: int = 0
    declared: bool = False


class BrowserInfo(Struct, frozen=True, omit_defaults=True):
    name: str
    version: str = ""
    major: int | None = None
    path: str | None = None
    declared: bool = False


class Capabilities(Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True):
    """What a worker offers. ``declared_hardware`` names classes given on the
    command line rather than detected; they match like detected ones but are
    always shown as declared."""

    hardware: list[HardwareClass] = msgspec.field(default_factory=lambda: [HardwareClass.CPU])
    declared_hardware: list[HardwareClass] = []
    cpu_count: int = 1
    cpu_model: str = ""
    memory_gb: float = 0.0
    gpus: list[GpuInfo] = []
    browsers: list[BrowserInfo] = []
    labels: dict[str, str] = {}
    hostname: str = ""
    platform: str = ""
    python_version: str = ""


class TestOutcome(enum.StrEnum):
    __test__ = False

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    ERROR = "error"
    XFAILED = "xfailed"
    XPASSED = "xpassed"


class TestCaseResult(Struct, frozen=True, omit_defaults=True):
    __test__ = False

    node_id: str
    outcome: TestOutcome
    duration_s: float = 0.0
    message: str | None = None


class FailureKind(enum.StrEnum):
    """Why an attempt did not produce a result."""

    EXIT_NONZERO = "exit_nonzero"
    TIMEOUT = "timeout"
    CRASHED = "crashed"
    OOM = "oom"
    EXECUTOR_ERROR = "executor_error"
    WORKER_LOST = "worker_lost"
    COORDINATOR_LOST = "coordinator_lost"
    """The cluster node the worker was connected through was lost, or the connection an
    assignment went out on ended before the worker got it (never reported by workers)."""


INFRASTRUCTURE_FAILURES = frozenset(
    {
        FailureKind.TIMEOUT,
        FailureKind.CRASHED,
        FailureKind.OOM,
        FailureKind.EXECUTOR_ERROR,
        FailureKind.WORKER_LOST,
        FailureKind.COORDINATOR_LOST,
    }
)


class Outcome(Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True):
    """What a worker reports when an attempt ends.

    ``failure`` is None when the task ran to completion; a ``test`` task whose
    tests fail has still completed, its failing cases are in ``test_cases``.
    ``injected_fault`` names the fault dtf's fault injection put into this
    attempt (``dtf worker --fault-injection``), so it is never taken for a
    real one.
    """

    failure: FailureKind | None = None
    error: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    duration_s: NonNegativeFloat = 0.0
    stdout_tail: str = ""
    stderr_tail: str = ""
    metrics: dict[str, Any] = {}
    test_cases: list[TestCaseResult] = []
    injected_fault: str | None = None


class LeaseRef(Struct, frozen=True, array_like=True):
    """A worker's claim on one attempt: (task id, attempt number, fencing token)."""

    task_id: str
    attempt: int
    fence: int


def validate_config(task_type: TaskType, config: dict[str, Any], *, path: str = "config") -> Struct:
    """Check ``config`` against its task type; the error names the field under ``path``."""
    try:
        return msgspec.convert(config, CONFIG_TYPES[task_type])
    except msgspec.ValidationError as exc:
        message = str(exc)
        if " - at `$" in message:
            message = message.replace("`$", f"`$.{path}", 1)
        else:
            message = f"{message} - at `$.{path}`"
        raise msgspec.ValidationError(message) from None
