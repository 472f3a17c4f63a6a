"""Failure classification: the default table, evidence quotes, user rules from config."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dtf.core.failures import (
    DEFAULT_RULES,
    NO_RULE,
    ClassificationRule,
    FailureEvidence,
    FailureType,
    classify,
    exception_type_in,
    rules_from_config,
)
from dtf.core.model import FailureKind, HardwareClass, Outcome
from dtf.errors import InvalidRequest

K = FailureKind
F = FailureType
E = FailureEvidence
TRACEBACK = 'Traceback (most recent call last):\n  File "bench.py", line 3, in run\n'

CLASSIFICATIONS = [
    # torch's CUDA OOM is resource exhaustion, not a CUDA error
    (
        E(K.EXIT_NONZERO, 1, stderr_tail=TRACEBACK + "torch.cuda.OutOfMemoryError: CUDA out of memory."),
        F.RESOURCE_EXHAUSTION,
        "cuda-out-of-memory",
    ),
    # the worker saw the kernel OOM killer
    (E(K.CRASHED, signal=9, oom_killed=True), F.RESOURCE_EXHAUSTION, "oom-killed"),
    # the worker already reported OOM, with no memory message to quote
    (E(K.OOM, exit_code=1), F.RESOURCE_EXHAUSTION, "reported-oom"),
    # a Python MemoryError raised by the task
    (E(K.EXIT_NONZERO, 1, exception_type="MemoryError"), F.RESOURCE_EXHAUSTION, "memory-error-exception"),
    # a dotted exception name matches the short name in the rule
    (
        E(K.EXIT_NONZERO, 1, exception_type="torch.OutOfMemoryError"),
        F.RESOURCE_EXHAUSTION,
        "memory-error-exception",
    ),
    # an allocator failure in C++ output
    (E(K.CRASHED, signal=6, stderr_tail="terminate: std::bad_alloc"), F.RESOURCE_EXHAUSTION, "out-of-memory-text"),
    # SIGKILL we did not send: most likely the OOM killer
    (E(K.CRASHED, signal=9), F.RESOURCE_EXHAUSTION, "sigkill"),
    # a shell reports its SIGKILLed child as exit 137
    (E(K.EXIT_NONZERO, 137), F.RESOURCE_EXHAUSTION, "exit-137"),
    # WebGPU device loss reported by a browser task
    (E(K.EXIT_NONZERO, 1, error="GPUDevice lost: reason destroyed"), F.WEBGPU_CONTEXT_LOST, "webgpu-context-lost"),
    # the seeds' phrase
    (E(K.EXIT_NONZERO, 1, stderr_tail="WebGPU context lost"), F.WEBGPU_CONTEXT_LOST, "webgpu-context-lost"),
    # Playwright's message when the browser dies under a test
    (
        E(K.EXIT_NONZERO, 1, stderr_tail="Error: Target page, context or browser has been closed"),
        F.BROWSER_CRASH,
        "browser-crash",
    ),
    # Selenium's page crash
    (
        E(K.EXIT_NONZERO, 1, error="session deleted because of page crash"),
        F.BROWSER_CRASH,
        "browser-crash",
    ),
    # a process crash with no text on a browser worker is the browser's
    (E(K.CRASHED, signal=11, hardware_class=HardwareClass.WEBGPU), F.BROWSER_CRASH, "browser-process-crash"),
    # the same crash on a CPU worker is a software crash
    (E(K.CRASHED, signal=11, hardware_class=HardwareClass.CPU), F.SOFTWARE_ERROR, "crash-signal"),
    # the generic CUDA error text
    (
        E(K.EXIT_NONZERO, 1, stderr_tail="RuntimeError: CUDA error: an illegal memory access was encountered"),
        F.CUDA_ERROR,
        "cuda-error",
    ),
    # a CUDA runtime error code
    (E(K.EXIT_NONZERO, 1, error="cudaErrorIllegalAddress"), F.CUDA_ERROR, "cuda-error"),
    # a failed device-side assertion
    (E(K.CRASHED, signal=6, stderr_tail="device-side assert triggered"), F.CUDA_ERROR, "cuda-error"),
    # an NVIDIA Xid in the output means the card itself
    (E(K.EXIT_NONZERO, 1, stderr_tail="NVRM: Xid (PCI:0000:3b:00): 79, GPU has fallen off the bus"), F.HARDWARE_ERROR, "hardware-fault"),
    # the worker killed the task at its timeout
    (E(K.TIMEOUT, signal=9, error="did not finish within its timeout"), F.TIMEOUT, "timeout"),
    # the worker vanished
    (E(K.WORKER_LOST, error="no heartbeat for 30s"), F.WORKER_CRASH, "worker-lost"),
    # a refused connection raised as a Python exception
    (E(K.EXIT_NONZERO, 1, exception_type="ConnectionRefusedError"), F.COMMUNICATION_ERROR, "connection-exception"),
    # a connection reset in a tool's output
    (E(K.EXIT_NONZERO, 2, stderr_tail="curl: (56) Connection reset by peer"), F.COMMUNICATION_ERROR, "connection-text"),
    # a connect timeout is communication, not the task's timeout
    (E(K.EXIT_NONZERO, 1, exception_type="httpx.ConnectTimeout"), F.COMMUNICATION_ERROR, "connection-exception"),
    # the executor could not run the task on this worker
    (E(K.EXECUTOR_ERROR, error="cannot import bench"), F.SOFTWARE_ERROR, "executor-error"),
    # an ordinary Python traceback
    (E(K.EXIT_NONZERO, 1, stderr_tail=TRACEBACK + "KeyError: 'x'", exception_type="KeyError"), F.SOFTWARE_ERROR, "traceback"),
    # a plain non-zero exit
    (E(K.EXIT_NONZERO, 3), F.SOFTWARE_ERROR, "nonzero-exit"),
    # nothing to go on
    (E(), F.UNKNOWN, NO_RULE),
]  # fmt: skip


@pytest.mark.parametrize(("evidence", "failure_type", "rule_name"), CLASSIFICATIONS)
def test_default_rules(
    evidence: FailureEvidence, failure_type: FailureType, rule_name: str
) -> None:
    classification = classify(evidence)
    assert (classification.failure_type, classification.rule_name) == (failure_type, rule_name)


EVIDENCE_QUOTES = [
    # the matching stderr line is quoted, not the whole tail
    (
        E(
            K.EXIT_NONZERO,
            1,
            stderr_tail=TRACEBACK + "RuntimeError: CUDA error: misaligned address",
        ),
        ["stderr: RuntimeError: CUDA error: misaligned address"],
    ),
    # the task's own output is quoted before the worker's summary, its last match first
    (
        E(K.EXIT_NONZERO, 1, error="CUDA error: x", stderr_tail="CUDA error: y\nCUDA error: z"),
        ["stderr: CUDA error: z"],
    ),
    # each condition of a rule is quoted
    (E(K.CRASHED, signal=9), ["failure kind crashed", "signal 9"]),
    # the exit code
    (E(K.EXIT_NONZERO, 137), ["failure kind exit_nonzero", "exit code 137"]),
    # the OOM killer flag
    (E(K.CRASHED, signal=9, oom_killed=True), ["oom_killed=True"]),
    # the exception type
    (E(K.EXIT_NONZERO, 1, exception_type="MemoryError"), ["exception MemoryError"]),
    # no rule matched: the known facts are kept
    (E(exit_code=5, error="odd"), ["exit code 5", "error: odd"]),
    # a very long line is shortened
    (
        E(K.EXIT_NONZERO, 1, error="CUDA error " + "x" * 500),
        ["error: CUDA error " + "x" * 186 + "..."],
    ),
]


@pytest.mark.parametrize(("evidence", "quotes"), EVIDENCE_QUOTES)
def test_evidence_quotes_what_matched(evidence: FailureEvidence, quotes: list[str]) -> None:
    assert classify(evidence).evidence_text == quotes


RULE_CONDITIONS = [
    # every given condition must hold: kind and signal
    (ClassificationRule(name="r", failure_type=F.TIMEOUT, failure_kinds=[K.CRASHED], signals=[15]), E(K.CRASHED, signal=15), True),
    # ... so one failing condition fails the rule
    (ClassificationRule(name="r", failure_type=F.TIMEOUT, failure_kinds=[K.CRASHED], signals=[15]), E(K.CRASHED, signal=9), False),
    # listed values are any-of
    (ClassificationRule(name="r", failure_type=F.TIMEOUT, exit_codes=[2, 3]), E(exit_code=3), True),
    # task type condition
    (ClassificationRule(name="r", failure_type=F.TIMEOUT, task_types=["benchmark"]), E(task_type="test"), False),
    # hardware condition
    (ClassificationRule(name="r", failure_type=F.TIMEOUT, hardware_classes=[HardwareClass.TPU]), E(hardware_class=HardwareClass.TPU), True),
    # text is case-insensitive
    (ClassificationRule(name="r", failure_type=F.TIMEOUT, text="deadline exceeded"), E(error="DEADLINE EXCEEDED on tpu"), True),
    # a dotted exception name in a rule must match in full
    (ClassificationRule(name="r", failure_type=F.TIMEOUT, exception_types=["a.Boom"]), E(exception_type="b.Boom"), False),
    # oom_killed=False is a condition too
    (ClassificationRule(name="r", failure_type=F.TIMEOUT, oom_killed=False), E(oom_killed=True), False),
    # a rule without conditions matches anything
    (ClassificationRule(name="r", failure_type=F.TIMEOUT), E(), True),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "evidence", "matches"), RULE_CONDITIONS)
def test_rule_conditions(
    rule: ClassificationRule, evidence: FailureEvidence, matches: bool
) -> None:
    assert (classify(evidence, (rule,)).failure_type is F.TIMEOUT) is matches


EXCEPTION_LINES = [
    # the last exception line of a traceback
    (TRACEBACK + "ValueError: bad", "ValueError"),
    # a dotted exception with no message
    ("torch.cuda.OutOfMemoryError", "torch.cuda.OutOfMemoryError"),
    # a chained traceback: the last one wins
    ("KeyError: 'a'\n\nDuring handling...\n" + TRACEBACK + "RuntimeError: b", "RuntimeError"),
    # prose that merely mentions an error is not an exception line
    ("the CUDA error: went away", None),
    # nothing at all
    ("", None),
]


@pytest.mark.parametrize(("stderr", "expected"), EXCEPTION_LINES)
def test_exception_type_from_stderr(stderr: str, expected: str | None) -> None:
    assert exception_type_in(stderr) == expected


def test_evidence_from_outcome_reads_the_exception_type() -> None:
    outcome = Outcome(
        failure=K.EXIT_NONZERO, exit_code=1, error="exited", stderr_tail=TRACEBACK + "MemoryError"
    )
    evidence = FailureEvidence.from_outcome(outcome, task_type="benchmark")
    assert evidence == E(
        K.EXIT_NONZERO,
        1,
        error="exited",
        stderr_tail=outcome.stderr_tail,
        task_type="benchmark",
        exception_type="MemoryError",
    )
    assert classify(evidence).failure_type is F.RESOURCE_EXHAUSTION


def test_user_rules_come_before_the_defaults() -> None:
    rules = rules_from_config(
        [{"name": "flaky-nfs", "failure_type": "communication_error", "text": "Stale file handle"}]
    )
    assert rules[1:] == DEFAULT_RULES
    evidence = E(K.EXIT_NONZERO, 1, stderr_tail="OSError: Stale file handle")
    assert classify(evidence, rules).rule_name == "flaky-nfs"
    assert classify(evidence).rule_name == "nonzero-exit"


BAD_CONFIGS: list[tuple[Any, str]] = [
    # an unknown failure type
    ([{"name": "x", "failure_type": "gremlins"}], "$[0].failure_type"),
    # a wrong type inside a list
    ([{"name": "x", "failure_type": "timeout", "signals": ["nine"]}], "$[0].signals[0]"),
    # an unknown key (a typo) is refused, not ignored
    ([{"name": "x", "failure_type": "timeout", "txt": "a"}], "$[0].txt"),
    # the name is required
    ([{"name": "ok", "failure_type": "timeout"}, {"failure_type": "timeout"}], "$[1].name"),
    # a regular expression that does not compile
    ([{"name": "x", "failure_type": "timeout", "text": "CUDA (error"}], "$[0].text"),
    # not a list at all
    ({"name": "x"}, "$"),
]


@pytest.mark.parametrize(("entries", "field"), BAD_CONFIGS)
def test_bad_rules_name_the_field(entries: Any, field: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        rules_from_config(entries)
    assert raised.value.field == field


evidence_strategy = st.builds(
    FailureEvidence,
    failure_kind=st.none() | st.sampled_from(FailureKind),
    exit_code=st.none() | st.integers(-20, 300),
    signal=st.none() | st.integers(1, 31),
    error=st.text(max_size=60),
    stderr_tail=st.text(max_size=200),
    task_type=st.none() | st.sampled_from(["command", "test", "benchmark"]),
    hardware_class=st.none() | st.sampled_from(HardwareClass),
    oom_killed=st.booleans(),
    exception_type=st.none() | st.sampled_from(["MemoryError", "KeyError", "x.ConnectError"]),
)


@given(evidence_strategy)
def test_classification_is_deterministic_and_explained(evidence: FailureEvidence) -> None:
    first = classify(evidence)
    assert first == classify(evidence)
    if first.rule_name != NO_RULE:
        assert first.evidence_text, "a matched rule always quotes what matched"


@given(evidence_strategy)
def test_the_named_rule_is_the_first_that_matches(evidence: FailureEvidence) -> None:
    classification = classify(evidence)
    names = [rule.name for rule in DEFAULT_RULES]
    if classification.rule_name == NO_RULE:
        return
    position = names.index(classification.rule_name)
    for earlier in DEFAULT_RULES[:position]:
        assert classify(evidence, (earlier,)).rule_name == NO_RULE


@given(evidence_strategy)
def test_classification_encodes(evidence: FailureEvidence) -> None:
    classification = classify(evidence)
    encoded = msgspec.json.encode(classification)
    assert msgspec.json.decode(encoded, type=type(classification)) == classification


def test_an_injected_fault_says_so_first_in_the_evidence() -> None:
    outcome = Outcome(
        failure=FailureKind.CRASHED,
        signal=15,
        stderr_tail="RuntimeError: CUDA error: an illegal memory access was encountered",
        injected_fault="cuda_error",
    )
    found = classify(FailureEvidence.from_outcome(outcome))
    assert found.failure_type is FailureType.CUDA_ERROR
    assert found.evidence_text[0] == "injected fault cuda_error"
