"""Run one assigned attempt and report its ``Outcome``.

``execute`` validates the task's config, picks the executor for its type and
never raises for anything the task does: a task that cannot even start is an
``executor_error`` outcome. Every executor runs its process through
``process.run_process`` (own process group, bounded output, timeout and
cancellation kill the whole group).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec

from dtf.core.model import (
    BenchmarkConfig,
    CommandConfig,
    FailureKind,
    Outcome,
    TestConfig,
    validate_config,
)
from dtf.protocol import Assign
from dtf.worker.executors.attempt import Attempt
from dtf.worker.executors.benchmark import run_benchmark
from dtf.worker.executors.command import run_command
from dtf.worker.executors.process import ProcessObserver
from dtf.worker.executors.pytest_task import run_tests

__all__ = ["ProcessObserver", "execute"]


async def execute(
    assign: Assign,
    *,
    workdir: Path,
    cancelled: asyncio.Event | None = None,
    observer: ProcessObserver | None = None,
) -> Outcome:
    """Run ``assign`` to its end. Setting ``cancelled`` kills the attempt's
    process group and returns an ``executor_error`` outcome; cancelling the
    calling task kills it too and raises ``CancelledError``."""
    try:
        config = validate_config(assign.spec.type, assign.spec.config)
    except msgspec.ValidationError as exc:
        error = f"invalid {assign.spec.type.value} task config: {exc}"
        return Outcome(failure=FailureKind.EXECUTOR_ERROR, error=error)
    attempt = Attempt(assign, workdir, cancelled, observer)
    match config:
        case CommandConfig():
            return await run_command(attempt, config)
        case TestConfig():
            return await run_tests(attempt, config)
        case BenchmarkConfig():
            return await run_benchmark(attempt, config)
    raise AssertionError(f"no executor for task type {assign.spec.type.value!r}")
