"""Turn how a task process ended into an ``Outcome``.

Order matters: a process we stopped (timeout, cancellation) is classified by
why we stopped it, whatever its exit status says; then death by signal; then
the exit code. The kernel OOM killer leaves no trace a process can read
reliably, so OOM is a heuristic on what the task itself printed.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from dtf.core.model import FailureKind, Outcome
from dtf.worker.executors.process import ProcessResult, StopReason

MEMORY_MARKERS = ("MemoryError", "Cannot allocate memory", "std::bad_alloc", "Out of memory")
SHELL_KILLED_EXIT = 128 + signal.SIGKILL


def process_outcome(result: ProcessResult, timeout_s: float) -> Outcome:
    failure, error = classify(result, timeout_s)
    return Outcome(
        failure=failure,
        error=error,
        exit_code=result.exit_code,
        signal=result.signal,
        duration_s=result.duration_s,
        stdout_tail=result.stdout_tail,
        stderr_tail=result.stderr_tail,
    )


def classify(result: ProcessResult, timeout_s: float) -> tuple[FailureKind | None, str | None]:
    if result.spawn_error is not None:
        return FailureKind.EXECUTOR_ERROR, result.spawn_error
    if result.stopped is StopReason.TIMEOUT:
        return FailureKind.TIMEOUT, f"did not finish within its timeout of {timeout_s:g}s; killed"
    if result.stopped is StopReason.CANCELLED:
        return FailureKind.EXECUTOR_ERROR, "cancelled before it finished; killed"
    if result.signal is not None:
        name = signal_name(result.signal)
        if result.signal == signal.SIGKILL and is_out_of_memory(result.stderr_tail, killed=True):
            return FailureKind.OOM, f"killed by {name}, most likely by the kernel OOM killer"
        return FailureKind.CRASHED, f"killed by signal {name}"
    if result.exit_code:
        killed = result.exit_code == SHELL_KILLED_EXIT
        if is_out_of_memory(result.stderr_tail, killed=killed):
            return FailureKind.OOM, f"ran out of memory (exit code {result.exit_code})"
        return FailureKind.EXIT_NONZERO, f"exited with code {result.exit_code}"
    return None, None


def is_out_of_memory(stderr_tail: str, *, killed: bool) -> bool:
    """MemoryError and friends in the output; ``Killed`` (as a shell prints
    for a SIGKILLed child) only counts when the process did die of SIGKILL."""
    if any(marker in stderr_tail for marker in MEMORY_MARKERS):
        return True
    return killed and "Killed" in stderr_tail


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def read_result_file(path: Path) -> tuple[dict[str, Any], str | None]:
    """Metrics a task wrote to DTF_RESULT_FILE, and a note when they are unusable.
    A missing file means no metrics; the file is removed after reading."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return {}, None
    path.unlink(missing_ok=True)
    try:
        metrics = json.loads(text)
    except ValueError as exc:
        return {}, f"DTF_RESULT_FILE is not valid JSON ({exc}); metrics ignored"
    if not isinstance(metrics, dict):
        kind = type(metrics).__name__
        return {}, f"DTF_RESULT_FILE holds a JSON {kind}, not an object; metrics ignored"
    return metrics, None


def join_errors(*errors: str | None) -> str | None:
    present = [error for error in errors if error]
    return "; ".join(present) if present else None
