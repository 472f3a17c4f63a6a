"""Classify a failed attempt into the seeds' failure taxonomy, keeping the evidence.

How this works: the worker's report becomes ``FailureEvidence``. Rules are
data (``ClassificationRule``), tried in order; the first rule whose every
given condition holds names the ``FailureType``. Within one condition the
listed values are any-of; conditions left empty are not checked. The
classification quotes what matched (a stderr line, "signal 9", "exit code
137"), so ``dtf task show`` can say why a failure was read as it was.

User rules from config go before ``DEFAULT_RULES``. Text patterns are
regular expressions searched case-insensitively in the error and then in
each line of the stderr tail.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Sequence
from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct

from dtf.core.model import FailureKind, HardwareClass, Outcome
from dtf.errors import InvalidRequest


class FailureType(enum.StrEnum):
    HARDWARE_ERROR = "hardware_error"
    SOFTWARE_ERROR = "software_error"
    RESOURCE_EXHAUSTION = "resource_exhaustion"
    CUDA_ERROR = "cuda_error"
    TIMEOUT = "timeout"
    COMMUNICATION_ERROR = "communication_error"
    BROWSER_CRASH = "browser_crash"
    WEBGPU_CONTEXT_LOST = "webgpu_context_lost"
    WORKER_CRASH = "worker_crash"
    """The worker itself crashed or disconnected, taking the attempt with it."""
    UNKNOWN = "unknown"

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    FailureType.HARDWARE_ERROR: "hardware error",
    FailureType.SOFTWARE_ERROR: "software error",
    FailureType.RESOURCE_EXHAUSTION: "OOM",
    FailureType.CUDA_ERROR: "CUDA error",
    FailureType.TIMEOUT: "timeout",
    FailureType.COMMUNICATION_ERROR: "communication error",
    FailureType.BROWSER_CRASH: "browser crash",
    FailureType.WEBGPU_CONTEXT_LOST: "WebGPU context lost",
    FailureType.WORKER_CRASH: "worker crash",
    FailureType.UNKNOWN: "unknown failure",
}


class FailureEvidence(Struct, frozen=True, omit_defaults=True):
    """What the worker reported about a failed attempt."""

    failure_kind: FailureKind | None = None
    exit_code: int | None = None
    signal: int | None = None
    error: str = ""
    stderr_tail: str = ""
    task_type: str | None = None
    hardware_class: HardwareClass | None = None
    oom_killed: bool = False
    exception_type: str | None = None
    injected_fault: str | None = None

    @classmethod
    def from_outcome(
        cls,
        outcome: Outcome,
        *,
        task_type: str | None = None,
        hardware_class: HardwareClass | None = None,
        oom_killed: bool = False,
        exception_type: str | None = None,
    ) -> FailureEvidence:
        """Evidence from a worker's ``Outcome``; the exception type, when not
        given, is read from the last traceback line of the stderr tail."""
        return cls(
            failure_kind=outcome.failure,
            exit_code=outcome.exit_code,
            signal=outcome.signal,
            error=outcome.error or "",
            stderr_tail=outcome.stderr_tail,
            task_type=task_type,
            hardware_class=hardware_class,
            oom_killed=oom_killed,
            exception_type=exception_type or exception_type_in(outcome.stderr_tail),
            injected_fault=outcome.injected_fault,
        )


_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit))(?::|$)")


def exception_type_in(stderr_tail: str) -> str | None:
    """The exception named by the last ``SomeError: message`` line, if any."""
    for line in reversed(stderr_tail.splitlines()):
        match = _EXCEPTION_LINE.match(line.strip())
        if match:
            return match.group(1)
    return None


class ClassificationRule(Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One row of the classification table: a name, a verdict, and conditions."""

    name: Annotated[str, Meta(min_length=1)]
    failure_type: FailureType
    failure_kinds: list[FailureKind] = []
    exit_codes: list[int] = []
    signals: list[int] = []
    text: str | None = None
    exception_types: list[str] = []
    task_types: list[str] = []
    hardware_classes: list[HardwareClass] = []
    oom_killed: bool | None = None


class Classification(Struct, frozen=True):
    failure_type: FailureType
    rule_name: str
    evidence_text: list[str]


def _rule(name: str, failure_type: FailureType, **conditions: Any) -> ClassificationRule:
    return ClassificationRule(name=name, failure_type=failure_type, **conditions)


_K = FailureKind
_F = FailureType
_CRASH_OR_EXIT = [_K.CRASHED, _K.EXIT_NONZERO]
_BROWSERS = [HardwareClass.WEBGPU, HardwareClass.WEBNN]

DEFAULT_RULES: tuple[ClassificationRule, ...] = (
    _rule(
        "cuda-out-of-memory",
        _F.RESOURCE_EXHAUSTION,
        text=r"CUDA out of memory|CUDA_ERROR_OUT_OF_MEMORY|cudaErrorMemoryAllocation"
        r"|torch\.cuda\.OutOfMemoryError|HIP out of memory",
    ),
    _rule("oom-killed", _F.RESOURCE_EXHAUSTION, oom_killed=True),
    _rule(
        "out-of-memory-text",
        _F.RESOURCE_EXHAUSTION,
        text=r"\bMemoryError\b|out of memory|Cannot allocate memory|std::bad_alloc",
    ),
    _rule(
        "memory-error-exception",
        _F.RESOURCE_EXHAUSTION,
        exception_types=["MemoryError", "OutOfMemoryError"],
    ),
    _rule("reported-oom", _F.RESOURCE_EXHAUSTION, failure_kinds=[_K.OOM]),
    _rule("sigkill", _F.RESOURCE_EXHAUSTION, failure_kinds=_CRASH_OR_EXIT, signals=[9]),
    _rule("exit-137", _F.RESOURCE_EXHAUSTION, failure_kinds=_CRASH_OR_EXIT, exit_codes=[137]),
    _rule(
        "webgpu-context-lost",
        _F.WEBGPU_CONTEXT_LOST,
        text=r"WebGPU context lost|GPUDevice (was )?lost|GPUDeviceLostInfo|device (was )?lost"
        r"|CONTEXT_LOST_WEBGL|webglcontextlost",
    ),
    _rule(
        "browser-crash",
        _F.BROWSER_CRASH,
        text=r"browser (has )?crash|browser (has )?disconnected|page crash|tab crash"
        r"|Target (page, context or browser|closed)|chrome not reachable|Aw, Snap"
        r"|session deleted because of page crash|browser has been closed",
    ),
    _rule(
        "browser-process-crash",
        _F.BROWSER_CRASH,
        failure_kinds=[_K.CRASHED],
        hardware_classes=_BROWSERS,
    ),
    _rule(
        "cuda-error",
        _F.CUDA_ERROR,
        text=r"CUDA error|CUDA failure|cudaError\w+|CUDA_ERROR_\w+|device-side assert"
        r"|CUBLAS_STATUS_\w+|CUDNN_STATUS_\w+|illegal memory access|NCCL error",
    ),
    _rule(
        "hardware-fault",
        _F.HARDWARE_ERROR,
        text=r"GPU has fallen off the bus|\bXid\b|uncorrectable ECC|ECC error|NVRM:"
        r"|TPU (is )?unresponsive|hardware error|Machine check",
    ),
    _rule("timeout", _F.TIMEOUT, failure_kinds=[_K.TIMEOUT]),
    _rule("worker-lost", _F.WORKER_CRASH, failure_kinds=[_K.WORKER_LOST]),
    _rule("coordinator-lost", _F.COMMUNICATION_ERROR, failure_kinds=[_K.COORDINATOR_LOST]),
    _rule(
        "connection-exception",
        _F.COMMUNICATION_ERROR,
        exception_types=[
            "ConnectionError",
            "ConnectionRefusedError",
            "ConnectionResetError",
            "ConnectionAbortedError",
            "BrokenPipeError",
            "TimeoutError",
            "ConnectError",
            "ConnectTimeout",
            "ReadTimeout",
            "RemoteDisconnected",
        ],
    ),
    _rule(
        "connection-text",
        _F.COMMUNICATION_ERROR,
        text=r"Connection (refused|reset|aborted|timed out)|ECONNREFUSED|ECONNRESET|ETIMEDOUT"
        r"|Broken pipe|Network is unreachable|No route to host|Name or service not known"
        r"|Temporary failure in name resolution|Remote end closed connection",
    ),
    _rule("executor-error", _F.SOFTWARE_ERROR, failure_kinds=[_K.EXECUTOR_ERROR]),
    _rule("traceback", _F.SOFTWARE_ERROR, text=r"Traceback \(most recent call last\)"),
    _rule("crash-signal", _F.SOFTWARE_ERROR, failure_kinds=[_K.CRASHED]),
    _rule("nonzero-exit", _F.SOFTWARE_ERROR, failure_kinds=[_K.EXIT_NONZERO]),
)


NO_RULE = "no-rule-matched"
_MAX_QUOTE = 200


def classify(
    evidence: FailureEvidence, rules: Sequence[ClassificationRule] = DEFAULT_RULES
) -> Classification:
    """The first rule that matches names the failure type; none matching is ``unknown``.
    A fault dtf injected on purpose says so first in the evidence."""
    injected = [f"injected fault {evidence.injected_fault}"] if evidence.injected_fault else []
    for rule in rules:
        quotes = match_rule(rule, evidence)
        if quotes is not None:
            return Classification(rule.failure_type, rule.name, injected + quotes)
    return Classification(FailureType.UNKNOWN, NO_RULE, injected + list(_facts(evidence)))


def match_rule(rule: ClassificationRule, evidence: FailureEvidence) -> list[str] | None:
    """What matched, one quote per condition, or None when a condition fails."""
    quotes: list[str] = []
    for quote in _condition_quotes(rule, evidence):
        if quote is None:
            return None
        quotes.append(quote)
    return quotes


def _condition_quotes(rule: ClassificationRule, ev: FailureEvidence) -> Iterator[str | None]:
    if rule.failure_kinds:
        yield _quote_if(ev.failure_kind in rule.failure_kinds, f"failure kind {ev.failure_kind}")
    if rule.exit_codes:
        yield _quote_if(ev.exit_code in rule.exit_codes, f"exit code {ev.exit_code}")
    if rule.signals:
        yield _quote_if(ev.signal in rule.signals, f"signal {ev.signal}")
    if rule.oom_killed is not None:
        yield _quote_if(ev.oom_killed == rule.oom_killed, f"oom_killed={ev.oom_killed}")
    if rule.exception_types:
        named = _exception_matches(rule.exception_types, ev.exception_type)
        yield _quote_if(named, f"exception {ev.exception_type}")
    if rule.task_types:
        yield _quote_if(ev.task_type in rule.task_types, f"task type {ev.task_type}")
    if rule.hardware_classes:
        yield _quote_if(ev.hardware_class in rule.hardware_classes, f"hardware {ev.hardware_class}")
    if rule.text is not None:
        yield matching_line(rule.text, ev)


def _quote_if(condition: bool, quote: str) -> str | None:
    return quote if condition else None


def _exception_matches(names: list[str], exception_type: str | None) -> bool:
    """``OutOfMemoryError`` matches ``torch.cuda.OutOfMemoryError``; a dotted
    name in a rule must match in full."""
    if exception_type is None:
        return False
    short = exception_type.rsplit(".", 1)[-1]
    return any(name in (exception_type, short) for name in names)


def matching_line(pattern: str, evidence: FailureEvidence) -> str | None:
    """The line the pattern finds: the task's own output first (the last
    matching stderr line, where a traceback names its exception), then the
    worker's summary in ``error``."""
    sources = (
        ("stderr", evidence.stderr_tail.splitlines()[::-1]),
        ("error", evidence.error.splitlines()),
    )
    for source, lines in sources:
        for line in lines:
            if re.search(pattern, line, re.IGNORECASE):
                return f"{source}: {_shorten(line.strip())}"
    return None


def _shorten(line: str) -> str:
    return line if len(line) <= _MAX_QUOTE else line[: _MAX_QUOTE - 3] + "..."


def _facts(evidence: FailureEvidence) -> Iterator[str]:
    if evidence.failure_kind is not None:
        yield f"failure kind {evidence.failure_kind}"
    if evidence.exit_code is not None:
        yield f"exit code {evidence.exit_code}"
    if evidence.signal is not None:
        yield f"signal {evidence.signal}"
    if evidence.error:
        yield f"error: {_shorten(evidence.error.strip())}"


def rules_from_config(entries: list[dict[str, Any]]) -> tuple[ClassificationRule, ...]:
    """User rules, validated, followed by ``DEFAULT_RULES``. A bad entry raises
    ``InvalidRequest`` naming the field, e.g. ``$[2].failure_type``."""
    try:
        user_rules = msgspec.convert(entries, list[ClassificationRule])
    except msgspec.ValidationError as exc:
        raise invalid_config(exc, "classification rules") from None
    for index, rule in enumerate(user_rules):
        _check_pattern(rule, index)
    return (*user_rules, *DEFAULT_RULES)


def invalid_config(exc: msgspec.ValidationError, what: str, path: str = "$") -> InvalidRequest:
    """``InvalidRequest`` for config that failed validation, naming the field:
    msgspec's path (under ``path``), plus the key it says is unknown or missing."""
    message = str(exc).replace("`$", f"`{path}", 1)
    where = message.rsplit(" - at `", 1)[-1].rstrip("`") if " - at `" in message else path
    field = where
    named = _NAMED_FIELD.search(message)
    if named:
        field = f"{field}.{named.group(1)}"
    return InvalidRequest(f"{what}: {message}; correct it in the config file", field=field)


_NAMED_FIELD = re.compile(r"(?:unknown|missing required) field `([^`]+)`")


def _check_pattern(rule: ClassificationRule, index: int) -> None:
    if rule.text is None:
        return
    try:
        re.compile(rule.text)
    except re.error as exc:
        raise InvalidRequest(
            f"classification rule {rule.name!r}: text {rule.text!r} is not a valid "
            f"regular expression ({exc}); escape special characters such as ( [ . with \\",
            field=f"$[{index}].text",
        ) from None
