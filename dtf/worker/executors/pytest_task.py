"""``test`` tasks: one pytest run, one ``TestCaseResult`` per test.

Failing tests do not fail the task: pytest's exit code 1 means the run
completed and ``test_cases`` say which tests failed. Exit codes 2-4 mean
pytest itself could not do its job (interrupted, internal error, usage
error), an executor error. Exit code 5, no tests collected, is reported as
``exit_nonzero`` so a wrong path or ``-k`` filter is not mistaken for success.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path

import msgspec

from dtf.core.model import FailureKind, Outcome, TestCaseResult, TestConfig
from dtf.worker.executors.attempt import Attempt
from dtf.worker.executors.outcomes import (
    join_errors,
    last_line,
    process_outcome,
    read_result_file,
)
from dtf.worker.executors.process import ProcessResult
from dtf.worker.pytest_reporter import REPORT_ENV

logger = logging.getLogger(__name__)

PYTEST_ERRORS = {
    2: "pytest was interrupted",
    3: "pytest hit an internal error",
    4: "pytest usage error",
}
NO_TESTS_COLLECTED = 5


async def run_tests(attempt: Attempt, config: TestConfig) -> Outcome:
    source_dir = attempt.path("source")
    test_path, cwd = config.path, config.cwd
    if config.source is not None:
        test_path = str(_write_source(source_dir, config.path, config.source))
        cwd = cwd or str(source_dir)
    report = attempt.path("pytest.jsonl")
    argv = [
        sys.executable,
        "-m",
        "pytest",
        test_path,
        *config.args,
        "-p",
        "dtf.worker.pytest_reporter",
    ]
    env = attempt.env(config.env, **{REPORT_ENV: str(report)})
    try:
        result = await attempt.run(argv, env=env, cwd=cwd)
    finally:
        if config.source is not None:
            shutil.rmtree(source_dir, ignore_errors=True)
    metrics, note = read_result_file(attempt.result_file)
    outcome = pytest_outcome(result, attempt.timeout_s)
    return msgspec.structs.replace(
        outcome,
        metrics=metrics,
        test_cases=read_report(report),
        error=join_errors(outcome.error, note),
    )


def pytest_outcome(result: ProcessResult, timeout_s: float) -> Outcome:
    outcome = process_outcome(result, timeout_s)
    if outcome.failure is not FailureKind.EXIT_NONZERO:
        return outcome
    if result.exit_code == 1:
        return msgspec.structs.replace(outcome, failure=None, error=None)
    if result.exit_code in PYTEST_ERRORS:
        detail = last_line(result.stderr_tail) or last_line(result.stdout_tail)
        error = (
            f"{PYTEST_ERRORS[result.exit_code]}: {detail}"
            if detail
            else PYTEST_ERRORS[result.exit_code]
        )
        return msgspec.structs.replace(outcome, failure=FailureKind.EXECUTOR_ERROR, error=error)
    if result.exit_code == NO_TESTS_COLLECTED:
        return msgspec.structs.replace(outcome, error="no tests were collected")
    return outcome


def read_report(path: Path) -> list[TestCaseResult]:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    path.unlink(missing_ok=True)
    cases = []
    for line in lines:
        try:
            cases.append(msgspec.json.decode(line, type=TestCaseResult))
        except msgspec.DecodeError as exc:
            logger.warning("skipping unreadable pytest report line %r: %s", line[:200], exc)
    return cases


def _write_source(directory: Path, path: str, source: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / Path(path).name
    target.write_text(source, encoding="utf-8")
    return target
