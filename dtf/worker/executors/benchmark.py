"""``benchmark`` tasks: call ``module:function(**params)`` in a child Python.

The child is ``dtf.worker.benchmark_runner``; the metrics dict it writes to
DTF_RESULT_FILE becomes ``outcome.metrics``. An entry point that cannot be
loaded is an executor error (this worker lacks the code, another may have
it); a bad return value or an exception inside the function is the
benchmark's own failure.
"""

from __future__ import annotations

import sys

import msgspec

from dtf.core.model import BenchmarkConfig, FailureKind, Outcome
from dtf.worker.benchmark_runner import ENTRY_POINT_ERROR, RESULT_ERROR
from dtf.worker.executors.attempt import Attempt
from dtf.worker.executors.outcomes import (
    join_errors,
    last_line,
    process_outcome,
    read_result_file,
)
from dtf.worker.executors.process import ProcessResult

RUNNER_FAILURES = {
    ENTRY_POINT_ERROR: FailureKind.EXECUTOR_ERROR,
    RESULT_ERROR: FailureKind.EXIT_NONZERO,
}


async def run_benchmark(attempt: Attempt, config: BenchmarkConfig) -> Outcome:
    spec_file = attempt.path("benchmark.json")
    spec_file.write_bytes(
        msgspec.json.encode(
            {
                "entry_point": config.entry_point,
                "params": config.params,
                "python_path": config.python_path,
            }
        )
    )
    argv = [sys.executable, "-m", "dtf.worker.benchmark_runner", str(spec_file)]
    try:
        result = await attempt.run(argv, env=attempt.env(config.env), cwd=config.cwd)
    finally:
        spec_file.unlink(missing_ok=True)
    outcome = benchmark_outcome(result, attempt.timeout_s)
    metrics, note = read_result_file(attempt.result_file)
    return msgspec.structs.replace(outcome, metrics=metrics, error=join_errors(outcome.error, note))


def benchmark_outcome(result: ProcessResult, timeout_s: float) -> Outcome:
    outcome = process_outcome(result, timeout_s)
    if outcome.failure is FailureKind.EXIT_NONZERO and result.exit_code in RUNNER_FAILURES:
        failure = RUNNER_FAILURES[result.exit_code]
        return msgspec.structs.replace(
            outcome, failure=failure, error=last_line(result.stderr_tail) or outcome.error
        )
    return outcome
